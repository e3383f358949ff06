"""Named world presets: the default world plus variants with a class built for label noise or a collision.

* ``"default"``: circle/stripes, square/tree, triangle/warm, plus and ring (controls).
* ``"collision"``: the default classes plus ``diamond``, half of whose images (in every
  split) also show a smaller ``plus``: a second object of another class.
* ``"label_noise"``: the default classes plus ``diamond``, 15% of whose training labels
  are flipped in from images of other classes (the generator's uniform label noise) and
  30% of whose images show a colliding plus.
* ``"noisy_square"``: the default classes plus a clean ``diamond`` class; 20% of the
  diamond's training labels are *square* images relabelled ``diamond``, which carry the
  square's tree. The flip is applied by :func:`load_preset_split` (the generator flips
  uniformly from all classes), and the model by :func:`load_or_train_preset_model`.

These presets were built to give the diamond a significantly negative spurious gap, for the
label-noise stage (:mod:`auditor.noise`). Measured with ``benchmarks/bench_negative_gap.py``
(``benchmarks/RESULTS.md``), ERM instead learns the co-occurring plus or tree as evidence
*for* the diamond, so its gap is positive or it has no spurious feature at all; cropping
still returns some misclassified diamonds to their label.

Every preset returns a plain :class:`~auditor.demo.world.generator.WorldSpec`; presets with a
post-generation step (``noisy_square``) are read through :func:`load_preset_split` and
:func:`load_or_train_preset_model`, which also work for every other preset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from auditor._io import atomic_torch_save
from auditor.demo.world.generator import (
    DEFAULT_CLASSES,
    ClassSpec,
    WorldSpec,
    WorldSplit,
)
from auditor.demo.world.model import SmallCNN
from auditor.demo.world.train import (
    TrainSpec,
    cache_root,
    load_or_train_model,
    load_split,
    train_model,
)


def _default(**overrides: Any) -> WorldSpec:
    return WorldSpec(**overrides)


def _collision(**overrides: Any) -> WorldSpec:
    classes = DEFAULT_CLASSES + (ClassSpec("diamond", collision_rate=0.5, collision_shape="plus"),)
    return WorldSpec(**{"classes": classes, **overrides})


def _label_noise(**overrides: Any) -> WorldSpec:
    classes = DEFAULT_CLASSES + (ClassSpec("diamond", label_noise=0.15, collision_rate=0.3, collision_shape="plus"),)
    return WorldSpec(**{"classes": classes, **overrides})


def _noisy_square(**overrides: Any) -> WorldSpec:
    classes = DEFAULT_CLASSES + (ClassSpec("diamond"),)
    return WorldSpec(**{"classes": classes, **overrides})


PRESETS: dict[str, Callable[..., WorldSpec]] = {
    "default": _default,
    "collision": _collision,
    "label_noise": _label_noise,
    "noisy_square": _noisy_square,
}

FLIPS: dict[str, tuple[str, str, float]] = {"noisy_square": ("square", "diamond", 0.2)}
"""Preset -> (source class, target class, share of the target's training count relabelled)."""


def list_presets() -> list[str]:
    """Names accepted by :func:`world_preset`."""
    return sorted(PRESETS)


def world_preset(name: str, **overrides: Any) -> WorldSpec:
    """The :class:`WorldSpec` of a named preset.

    Args:
        name: one of :func:`list_presets`.
        **overrides: WorldSpec fields to change (``image_size``, ``n_train``, ``seed``, ...).

    Returns:
        The spec.

    Raises:
        ValueError: unknown preset (the valid names are listed) or unknown field.

    Example:
        >>> world_preset("collision", image_size=32).class_names[-1]
        'diamond'
    """
    if name not in PRESETS:
        raise ValueError(f"unknown world preset {name!r}; choose one of {list_presets()}")
    fields = {f.name for f in dataclasses.fields(WorldSpec)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown WorldSpec field(s) {unknown}; valid fields: {sorted(fields)}")
    return PRESETS[name](**overrides)


def colliding_class(spec: WorldSpec) -> int | None:
    """Index of the first class with label noise or a colliding object, or None."""
    for i, cls in enumerate(spec.classes):
        if cls.label_noise > 0 or (cls.collision_shape is not None and cls.collision_rate > 0):
            return i
    return None


def flip_labels(split: WorldSplit, source: int, target: int, n_flip: int, seed: int) -> WorldSplit:
    """Relabel ``n_flip`` images of class ``source`` (chosen with ``seed``) as ``target``; a new split.

    Example:
        >>> from auditor.demo.world.generator import generate_split
        >>> s = generate_split(WorldSpec(image_size=16, n_train=4, n_val=1, n_test=1), "train")
        >>> int((flip_labels(s, 1, 3, 2, 0).labels == 3).sum())
        6
    """
    labels = split.labels.copy()
    candidates = np.flatnonzero((split.true_labels == source) & (split.labels == source))
    chosen = np.random.default_rng([seed, 7]).choice(candidates, size=min(n_flip, len(candidates)), replace=False)
    labels[chosen] = target
    return dataclasses.replace(split, labels=labels)


def load_preset_split(name: str, split: str, **overrides: Any) -> WorldSplit:
    """One split of a preset world, with the preset's label flips applied to the training split.

    Args:
        name: one of :func:`list_presets`.
        split: "train", "val" or "test".
        **overrides: WorldSpec fields.

    Returns:
        The :class:`WorldSplit` (``labels`` flipped, ``true_labels`` as drawn).
    """
    spec = world_preset(name, **overrides)
    data = load_split(spec, split)
    if split == "train" and name in FLIPS:
        source, target, share = FLIPS[name]
        names = spec.class_names
        data = flip_labels(data, names.index(source), names.index(target), int(round(share * spec.n_train)), spec.seed)
    return data


def load_or_train_preset_model(name: str, train_spec: TrainSpec = TrainSpec(), progress: bool = False, **overrides: Any) -> SmallCNN:
    """The demo CNN trained (ERM) on a preset world's training split, cached under :func:`cache_root`.

    Args:
        name: one of :func:`list_presets`.
        train_spec: how to train.
        progress: show a progress bar while training.
        **overrides: WorldSpec fields.

    Returns:
        The trained model in eval mode.
    """
    spec = world_preset(name, **overrides)
    if name not in FLIPS:
        return load_or_train_model(spec, train_spec, progress=progress)
    flip = json.dumps(FLIPS[name])
    key = hashlib.sha256((spec.fingerprint() + flip + json.dumps(dataclasses.asdict(train_spec), sort_keys=True)).encode()).hexdigest()[:12]
    path = cache_root() / "models" / f"cnn-preset-{name}-{key}.pt"
    model = SmallCNN(len(spec.classes), width=train_spec.width)
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    model = train_model(load_preset_split(name, "train", **overrides), len(spec.classes), train_spec, progress=progress)
    atomic_torch_save(model.state_dict(), path)
    return model
