"""Scaffolding that lives apart from the library: the generated worlds, the tiny CLIP/SAM
trainers and the ``auditor demo`` command.

No production module imports this package. The tiny models reach the library's registries
through the entry points declared in ``pyproject.toml`` (``auditor.sam_models`` and
``auditor.open_clip_models``), so ``masks.sam_model_type: tiny`` and
``concepts.model_name: tiny`` work without the library knowing about them.
"""

from __future__ import annotations

import importlib

_EXPORTS = {"run_demo": "run", "DemoResult": "run", "score_on_test": "run"}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605 - a list of the lazily imported names


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"auditor.demo.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'auditor.demo' has no attribute {name!r}")
