"""Small file helpers shared by the trainers and caches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename, so a crash never leaves half a checkpoint.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
    return path


def save_arrays_atomic(path: str | Path, arrays: dict[str, Any]) -> Path:
    """``np.savez_compressed`` to a temporary file beside ``path``, then rename (a crash never leaves half a file).

    Returns:
        The path written.
    """
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path
