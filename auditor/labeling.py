"""Core or spurious, automatically: heat inside the object mask, confirmed by ablation.

For each important (class, feature), the class's top-activating images get a heatmap
of that feature and the class object's mask. Two signals are measured:

* **heat density ratio**: the heatmap's mass per unit area inside the object divided
  by its mass per unit area outside. It is normalised for object area, so a core
  feature on a small object (whose low-resolution map spills over the edges) still
  scores above 1, while a background feature scores below 1.
* **ablation**: the relative drop of the feature's activation when the object is
  replaced by a neutral fill, versus when the background is. Evidence that lies
  outside the object makes the background ablation hurt more.

The ablation is causal, so it decides the verdict when it is conclusive (one of the
drops exceeds ``min_activation_drop``); the heatmap decides otherwise. ``confirmed``
records whether both signals agree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from auditor.config import VerdictConfig
from auditor.data import ImageSource
from auditor.errors import InvalidInputError
from auditor.features import FeatureCache
from auditor.heatmaps import compute_heatmaps, resize_masks
from auditor.model import ModelAdapter
from auditor.results import FeatureVerdict

logger = logging.getLogger(__name__)


def heat_inside_mask(heatmaps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image: fraction of heat inside the mask, mask area fraction, and inside/outside density ratio.

    Args:
        heatmaps: float ``(N, h, w)``, non-negative.
        masks: float ``(N, h, w)`` in [0, 1] (soft masks on the heatmap grid).

    Returns:
        ``(heat_inside (N,), area (N,), density_ratio (N,))``; the ratio is 1 for uniform heat.

    Example:
        >>> heat = np.array([[[1., 0.], [0., 0.]]]); mask = np.array([[[1., 0.], [0., 0.]]])
        >>> [float(a[0]) for a in heat_inside_mask(heat, mask)][:2]
        [1.0, 0.25]
    """
    eps = 1e-8
    total = heatmaps.sum((1, 2)) + eps
    inside = (heatmaps * masks).sum((1, 2)) / total
    area = masks.mean((1, 2))
    density_in = inside / np.maximum(area, eps)
    density_out = (1 - inside) / np.maximum(1 - area, eps)
    ratio = density_in / np.maximum(density_out, eps)
    return inside, area, ratio


@dataclass(frozen=True)
class NeutralFill:
    """A colourless fill with the images' own pixel noise, in the model's input space.

    Attributes:
        colour: ``(C, 1, 1)`` grey at the sample's mean brightness (model input space).
        noise_std: ``(C, 1, 1)`` per-pixel noise of the sample (model input space).
    """

    colour: torch.Tensor
    noise_std: torch.Tensor


def neutral_fill(source: ImageSource, rng: np.random.Generator, n_samples: int = 256) -> NeutralFill:
    """Estimate a neutral fill from a random sample of the source's images.

    The colour is grey (equal RGB) at the sample's mean brightness, so a fill never
    carries a colour cast of the data; the noise level is the median absolute
    difference of neighbouring pixels (robust to edges), so a filled region has the
    same texture statistics as a plain one.
    """
    indices = np.sort(rng.choice(len(source), size=min(n_samples, len(source)), replace=False))
    brightness, noise = [], []
    for _, images, _, _ in source.batches(indices):
        unit = source.unit_images(images)
        brightness.append(unit.mean((1, 2, 3)))
        diffs = (unit[..., 1:] - unit[..., :-1]).abs().flatten(2)
        noise.append(diffs.median(2).values.mean(1) / 0.6745 / np.sqrt(2))
    grey = float(torch.cat(brightness).mean())
    sigma = float(torch.cat(noise).mean())
    channels = source.image_shape[0]
    colour = torch.full((1, channels, 1, 1), grey)
    noise_std = torch.full((1, channels, 1, 1), sigma)
    if source.mean is not None:
        colour = (colour - source.mean[:, :channels]) / source.std[:, :channels]
        noise_std = noise_std / source.std[:, :channels]
    return NeutralFill(colour[0], noise_std[0])


def ablate(
    images: torch.Tensor, masks: torch.Tensor, fill: NeutralFill | str, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(object removed, background removed)`` copies of ``images``.

    Args:
        images: ``(N, C, H, W)``.
        masks: bool ``(N, H, W)`` object masks.
        fill: a :class:`NeutralFill`, or "blur" for a heavily blurred copy of each image.
        generator: random generator for the fill's noise.
    """
    m = masks[:, None].to(images.dtype)
    if isinstance(fill, str):
        k = max(3, (images.shape[-1] // 4) | 1)
        filler = F.avg_pool2d(images, k, stride=1, padding=k // 2, count_include_pad=False)
    else:
        noise = torch.randn(images.shape, generator=generator).to(images)
        filler = fill.colour.to(images) + noise * fill.noise_std.to(images)
    return images * (1 - m) + filler * m, images * m + filler * (1 - m)


def _relative_drop(before: torch.Tensor, after: torch.Tensor) -> float:
    scale = before.abs().mean().clamp(min=1e-8)
    return float((before.mean() - after.mean()) / scale)


def label_features(
    adapter: ModelAdapter,
    source: ImageSource,
    cache: FeatureCache,
    important: dict[int, list[int]],
    importance: np.ndarray,
    mask_provider,
    config: VerdictConfig,
    rng: np.random.Generator,
    progress: bool = True,
) -> list[FeatureVerdict]:
    """Judge every important (class, feature) core or spurious.

    Args:
        adapter: the model adapter.
        source: images of the split the cache was computed on (train).
        cache: its FeatureCache.
        important: class -> important features.
        importance: float ``(K, D)`` contributions.
        mask_provider: object with ``masks(unit_images, labels, indices) -> bool (N, H, W)``.
        config: verdict settings.
        rng: random generator (for the neutral fill sample).
        progress: show a progress bar.

    Returns:
        One :class:`FeatureVerdict` per (class, feature), in class then importance order.

    Raises:
        InvalidInputError: masks whose size differs from the images.
    """
    fill = "blur" if config.ablation_fill == "blur" else neutral_fill(source, rng)
    pairs = [(c, f) for c, features in important.items() for f in features]
    verdicts = []
    mask_memo: dict[int, np.ndarray] = {}
    for c, f in tqdm(pairs, desc="core/spurious verdicts", disable=not progress):
        members = np.flatnonzero(cache.labels == c)
        order = np.argsort(-np.asarray(cache.activations[members, f]), kind="stable")
        chosen = np.sort(members[order[: config.n_images]])
        images, labels, _ = source.load(chosen)
        missing = [int(i) for i in chosen if int(i) not in mask_memo]
        if missing:
            position = {int(i): n for n, i in enumerate(chosen)}
            subset = torch.stack([images[position[i]] for i in missing])
            new_masks = np.asarray(mask_provider.masks(source.unit_images(subset), [c] * len(missing), missing), bool)
            if new_masks.shape != (len(missing), *images.shape[-2:]):
                raise InvalidInputError(
                    f"the mask provider returned masks of shape {new_masks.shape[1:]} for images of shape "
                    f"{tuple(images.shape[-2:])}; masks must match the image size"
                )
            mask_memo.update(zip(missing, new_masks))
        masks = np.stack([mask_memo[int(i)] for i in chosen])
        heat = compute_heatmaps(adapter, images, [f] * len(chosen), config.heatmap)
        soft = resize_masks(masks, heat.shape[1:])
        inside, area, ratio = heat_inside_mask(heat, soft)
        usable = area > 0
        if not usable.any():
            logger.warning("class %d feature %d: every examined image has an empty object mask; verdict from ablation only", c, f)
            usable[:] = True

        mask_tensor = torch.from_numpy(masks)
        no_object, no_background = ablate(images, mask_tensor, fill, torch.Generator().manual_seed(int(rng.integers(2**31))))
        base = adapter.forward(images).features[:, f]
        object_drop = _relative_drop(base, adapter.forward(no_object).features[:, f])
        background_drop = _relative_drop(base, adapter.forward(no_background).features[:, f])

        density = float(np.exp(np.log(np.maximum(ratio[usable], 1e-6)).mean()))
        heat_spurious = density < config.density_threshold
        conclusive = max(object_drop, background_drop) >= config.min_activation_drop
        ablation_spurious = background_drop > object_drop
        spurious = ablation_spurious if conclusive else heat_spurious
        verdicts.append(
            FeatureVerdict(
                class_index=int(c),
                feature=int(f),
                label="spurious" if spurious else "core",
                importance=float(importance[c, f]),
                heat_inside=float(inside[usable].mean()),
                object_area=float(area[usable].mean()),
                density_ratio=density,
                object_drop=object_drop,
                background_drop=background_drop,
                heat_says_spurious=bool(heat_spurious),
                ablation_says_spurious=bool(ablation_spurious) if conclusive else bool(heat_spurious),
                confirmed=bool(heat_spurious == spurious and (conclusive and ablation_spurious == spurious)),
                image_indices=[int(i) for i in chosen],
            )
        )
    return verdicts


def spurious_by_class(verdicts: Sequence[FeatureVerdict]) -> dict[int, list[int]]:
    """class -> features labelled spurious (classes with none are absent)."""
    result: dict[int, list[int]] = {}
    for v in verdicts:
        if v.label == "spurious":
            result.setdefault(v.class_index, []).append(v.feature)
    return result
