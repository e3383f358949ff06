"""MaskProvider interface and registry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from auditor._registry import Registry


class MaskProvider(Protocol):
    """Gives the class object's mask for images.

    ``masks(images, labels, indices)`` takes float images ``(N, 3, H, W)`` in [0, 1],
    their labels ``(N,)`` and dataset indices ``(N,)``, and returns bool ``(N, H, W)``.
    """

    def masks(self, images: torch.Tensor, labels: Sequence[int], indices: Sequence[int]) -> np.ndarray: ...


MASK_PROVIDERS: Registry[MaskProvider] = Registry("mask provider")
