"""Tiny CLIP and SAM models trained on the generated world through the real libraries.

They stand in for real CLIP/SAM weights where none can be downloaded (tests, the
demo, benchmarks). Each model is trained once with a fixed step count and cached
under ``cache_root()/"zoo"``; ``python -m auditor.demo.zoo.tiny_clip`` and
``python -m auditor.demo.zoo.tiny_sam`` (re)train them.

Names are imported lazily, so ``python -m auditor.demo.zoo.<module>`` runs cleanly and importing
the package does not import open_clip or segment_anything.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "TinyClipSpec": "tiny_clip",
    "TEST_SPEC": "tiny_clip",
    "build_tiny_clip": "tiny_clip",
    "evaluate_tiny_clip": "tiny_clip",
    "load_or_train_tiny_clip": "tiny_clip",
    "register_tiny_clip_config": "tiny_clip",
    "tiny_clip_name": "tiny_clip",
    "train_tiny_clip": "tiny_clip",
    "TinySamSpec": "tiny_sam",
    "TEST_SAM_SPEC": "tiny_sam",
    "build_tiny_sam": "tiny_sam",
    "evaluate_tiny_sam": "tiny_sam",
    "load_or_train_tiny_sam": "tiny_sam",
    "load_tiny_sam": "tiny_sam",
    "train_tiny_sam": "tiny_sam",
    "save_tiny_hf_clip": "hf_clip",
    "clip_tokenizer_from_open_clip": "hf_clip",
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605 - a list of the lazily imported names


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"auditor.demo.zoo.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'auditor.demo.zoo' has no attribute {name!r}")
