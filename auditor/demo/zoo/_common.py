"""Helpers shared by the zoo's trainers: cache folders, seeding, thread limits."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import torch

from auditor.demo.world.generator import SHAPES, ClassSpec, WorldSpec
from auditor.demo.world.train import cache_root


def zoo_dir() -> Path:
    """Folder of the cached tiny models: ``cache_root()/"zoo"``."""
    return cache_root() / "zoo"


def spec_key(spec) -> str:
    """A short stable hash of a dataclass spec (cache folder names); fields left at None are omitted,
    so adding an optional field keeps existing caches valid."""
    text = json.dumps({k: v for k, v in dataclasses.asdict(spec).items() if v is not None}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def pretraining_world(image_size: int, n_images: int, seed: int) -> WorldSpec:
    """A world for pre-training the tiny models: every shape, every cue independent (rate 0.5).

    Its seed differs from the audited world's, so the tiny models never see the audited images.

    Args:
        image_size: side of the images.
        n_images: total images (spread evenly over the shapes).
        seed: world seed.

    Returns:
        A :class:`WorldSpec` whose "train" split is the pre-training set.
    """
    classes = tuple(ClassSpec(shape) for shape in SHAPES)
    per_class = max(1, n_images // len(classes))
    return WorldSpec(
        classes=classes,
        image_size=image_size,
        n_train=per_class,
        n_val=max(1, per_class // 8),
        n_test=max(1, per_class // 8),
        cue_rate_other_train=0.5,
        cue_rate_eval=0.5,
        seed=seed,
    )


@contextlib.contextmanager
def training_session(seed: int, num_threads: int | None) -> Iterator[None]:
    """Seed torch's RNG and limit threads inside the block; restore both afterwards."""
    previous = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if num_threads:
            torch.set_num_threads(num_threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)
