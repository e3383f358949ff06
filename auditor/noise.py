"""Label-noise flags and core cropping for classes with significantly negative gaps.

A significantly negative gap means the class's most spurious-looking images are the ones
the model gets wrong: often they are mislabelled, or show a second object of another
class. For such classes the highest-spuriosity images are flagged, each is cropped to
the class object (from its object mask; without one, from the mean activation map of
the class's core features: threshold high, expand the box, make it square), and the
model is run on the crop. A crop whose prediction returns to the label points to a
multi-object image; one that still disagrees points to a wrong label.
"""

from __future__ import annotations

import base64
import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from auditor.config import GapConfig, NoiseConfig
from auditor.errors import InvalidInputError
from auditor.gaps import class_gaps

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]
"""``(top, left, bottom, right)`` in pixels, bottom/right exclusive."""


def negative_gap_classes(gaps: dict) -> list[int]:
    """Classes whose gap is negative with a confidence interval excluding zero.

    Args:
        gaps: class -> :class:`~auditor.results.GapEstimate`.

    Returns:
        Sorted class indices.
    """
    return sorted(int(c) for c, g in gaps.items() if g.significant and np.isfinite(g.gap) and g.gap < 0)


def flag_images(scores: np.ndarray, labels: np.ndarray, class_index: int, n_flagged: int) -> np.ndarray:
    """The ``n_flagged`` highest-spuriosity images of a class, most spurious first.

    Args:
        scores: float ``(N,)`` spuriosity (NaN entries are never flagged).
        labels: int ``(N,)``.
        class_index: the class.
        n_flagged: how many.

    Returns:
        int64 dataset indices.

    Example:
        >>> flag_images(np.array([0.1, 0.9, 0.5, 2.0]), np.array([0, 0, 0, 1]), 0, 2).tolist()
        [1, 2]
    """
    scores = np.asarray(scores, np.float64)
    members = np.flatnonzero((np.asarray(labels) == class_index) & np.isfinite(scores))
    order = np.argsort(-scores[members], kind="stable")
    return members[order[:n_flagged]].astype(np.int64)


def square_box(top: float, left: float, bottom: float, right: float, height: int, width: int, expand: float = 0.2) -> Box:
    """Expand a box by ``expand`` of its size, make it square, and keep it inside the image.

    The side is ``(1 + expand) * max(box height, box width)`` (at most the image's smaller
    side); the square is centred on the box and shifted, not shrunk, at the borders.

    Returns:
        ``(top, left, bottom, right)`` integers, bottom/right exclusive.

    Example:
        >>> square_box(10, 10, 20, 30, 64, 64, expand=0.2)
        (3, 8, 27, 32)
    """
    side = (1 + expand) * max(bottom - top, right - left)
    side = int(min(max(math.ceil(side), 1), height, width))
    cy, cx = (top + bottom) / 2, (left + right) / 2
    t = int(round(cy - side / 2))
    l_ = int(round(cx - side / 2))
    t = min(max(t, 0), height - side)
    l_ = min(max(l_, 0), width - side)
    return t, l_, t + side, l_ + side


def mask_box(mask: np.ndarray, expand: float = 0.2) -> Box | None:
    """Square crop box around a bool ``(H, W)`` object mask, or None when the mask is empty.

    Example:
        >>> m = np.zeros((64, 64), bool); m[10:20, 10:30] = True
        >>> mask_box(m)
        (3, 8, 27, 32)
    """
    mask = np.asarray(mask, bool)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows) == 0:
        return None
    return square_box(rows[0], cols[0], rows[-1] + 1, cols[-1] + 1, *mask.shape, expand=expand)


def heatmap_box(heatmap: np.ndarray, image_shape: tuple[int, int], threshold: float = 0.6, expand: float = 0.2) -> Box | None:
    """Square crop box around the high part of a heatmap, in image pixels.

    Args:
        heatmap: float ``(h, w)`` (any resolution; rescaled to ``image_shape``).
        image_shape: ``(H, W)`` of the image.
        threshold: pixels at or above ``threshold * max`` form the box.
        expand: box expansion (0.2 = 20%).

    Returns:
        The box, or None when the heatmap is all zero.
    """
    heat = torch.as_tensor(np.asarray(heatmap, np.float32))[None, None]
    heat = F.interpolate(heat, size=tuple(image_shape), mode="bilinear", align_corners=False)[0, 0].numpy()
    peak = heat.max()
    if not np.isfinite(peak) or peak <= 0:
        return None
    return mask_box(heat >= threshold * peak, expand)


CROP_MODES = ("resize", "in_place")


def crop_to_box(images: torch.Tensor, boxes: Sequence[Box], mode: str = "resize") -> torch.Tensor:
    """Crop each image to its box.

    Args:
        images: ``(N, C, H, W)`` as the model takes them.
        boxes: one box per image.
        mode: "resize" (the box is resized back to the full image, bilinear) or "in_place"
            (the box keeps its position and scale; everything outside it is filled with the
            image's mean colour outside the box). "in_place" suits models trained on
            objects of one scale, which misread an enlarged object.

    Returns:
        ``(N, C, H, W)``.

    Raises:
        InvalidInputError: unknown mode.
    """
    if mode not in CROP_MODES:
        raise InvalidInputError(f"crop mode must be one of {list(CROP_MODES)}; got {mode!r}")
    out = []
    for image, (t, l_, b, r) in zip(images, boxes):
        if mode == "resize":
            crop = image[:, t:b, l_:r][None].float()
            out.append(F.interpolate(crop, size=image.shape[-2:], mode="bilinear", align_corners=False)[0])
            continue
        inside = torch.zeros(image.shape[-2:], dtype=torch.bool)
        inside[t:b, l_:r] = True
        outside = image[:, ~inside]
        fill = outside.float().mean(1) if outside.numel() else image.float().mean((1, 2))
        out.append(torch.where(inside, image.float(), fill.view(-1, 1, 1)))
    return torch.stack(out).to(images.dtype)


def thumbnail_uri(image: torch.Tensor | np.ndarray, max_side: int = 96) -> str:
    """A small PNG data URI of an RGB image in [0, 1], ``(3, H, W)``, for the HTML report."""
    from PIL import Image

    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    array = np.clip(np.transpose(array, (1, 2, 0)) * 255, 0, 255).astype(np.uint8)
    picture = Image.fromarray(array)
    scale = max_side / max(picture.size)
    if scale < 1:
        picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))))
    elif scale > 1:
        picture = picture.resize((round(picture.width * scale), round(picture.height * scale)), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _core_heatmaps(adapter, images: torch.Tensor, core_features: Sequence[int], heatmap: str) -> np.ndarray | None:
    from auditor.heatmaps import compute_heatmaps

    if not core_features:
        return None
    maps = [compute_heatmaps(adapter, images, [f] * len(images), heatmap) for f in core_features]
    return np.mean(maps, axis=0)


def crop_and_predict(
    adapter,
    source,
    indices: np.ndarray,
    class_index: int,
    core_features: Sequence[int],
    mask_provider=None,
    *,
    expand: float = 0.2,
    thumbnails: bool = True,
    mode: str = "resize",
    heatmap: str = "cam",
) -> list[dict]:
    """Crop flagged images to the class object and record the model's prediction before and after.

    Args:
        adapter: the :class:`~auditor.model.ModelAdapter` of the audited model.
        source: the ImageSource of the flagged images' split.
        indices: dataset indices of the flagged images.
        class_index: their class.
        core_features: the class's core features (their heatmaps give the box when no mask does).
        mask_provider: object-mask backend, or None.
        expand: box expansion.
        thumbnails: embed PNG thumbnails of the image and the crop.
        mode: "resize" or "in_place" (see :func:`crop_to_box`).
        heatmap: heatmap method for the core-feature boxes.

    Returns:
        One dict per image: index, box (or None), box_source ("mask", "heatmap", "none"),
        prediction before/after, fixed (was wrong, crop right), diagnosis, and thumbnails.
    """
    images, labels, dataset_masks = source.load(indices)
    masks = None
    if dataset_masks is not None:
        masks = dataset_masks.numpy().astype(bool)
    elif mask_provider is not None:
        try:
            masks = np.asarray(mask_provider.masks(source.unit_images(images), labels.tolist(), list(map(int, indices))), bool)
        except Exception as error:  # a failing provider downgrades to heatmap boxes, never aborts the audit
            logger.warning("noise: object masks unavailable for %s images (%s); using core-feature heatmaps", source.name, error)
    boxes: list[Box | None] = []
    box_sources: list[str] = []
    heat = None
    for n in range(len(indices)):
        box = mask_box(masks[n], expand) if masks is not None else None
        if box is not None:
            boxes.append(box)
            box_sources.append("mask")
            continue
        if heat is None:
            heat = _core_heatmaps(adapter, images, core_features, heatmap)
        box = heatmap_box(heat[n], images.shape[-2:], expand=expand) if heat is not None else None
        boxes.append(box)
        box_sources.append("heatmap" if box is not None else "none")
    before = adapter.forward(images).logits.argmax(1).cpu().numpy()
    usable = [n for n, b in enumerate(boxes) if b is not None]
    after = np.full(len(indices), -1)
    crops = None
    if usable:
        crops = crop_to_box(images[usable], [boxes[n] for n in usable], mode)
        after[usable] = adapter.forward(crops).logits.argmax(1).cpu().numpy()
    records = []
    for n, index in enumerate(indices):
        label = int(labels[n])
        wrong = int(before[n]) != label
        cropped = boxes[n] is not None
        fixed = bool(wrong and cropped and int(after[n]) == label)
        if not wrong:
            diagnosis = "correct"
        elif fixed:
            diagnosis = "multi-object: the crop returns to the label"
        elif cropped:
            diagnosis = "possible label noise: the crop still disagrees"
        else:
            diagnosis = "no crop"
        record = {
            "index": int(index),
            "label": label,
            "prediction": int(before[n]),
            "crop_prediction": int(after[n]) if cropped else None,
            "box": list(boxes[n]) if cropped else None,
            "box_source": box_sources[n],
            "fixed": fixed,
            "diagnosis": diagnosis,
        }
        if thumbnails:
            unit = source.unit_images(images[n : n + 1])[0]
            record["image"] = thumbnail_uri(unit)
            if cropped:
                record["crop"] = thumbnail_uri(source.unit_images(crops[usable.index(n) : usable.index(n) + 1])[0])
        records.append(record)
    return records


@dataclass(frozen=True)
class NoiseResult:
    """Output of :func:`run_noise`: the JSON-ready ``noise`` section."""

    section: dict


def run_noise(
    adapter,
    sources: dict[str, Any],
    caches: dict[str, Any],
    scores: dict[str, np.ndarray],
    evaluation_split: str,
    evaluation_gaps: dict,
    verdicts: Sequence[Any],
    class_names: Sequence[str],
    mask_provider,
    config: NoiseConfig,
    gap_config: GapConfig,
    heatmap: str,
    rng: np.random.Generator,
) -> NoiseResult:
    """The noise stage: flag, crop and re-predict for every class with a significantly negative gap.

    Gaps are read from the evaluation split and also computed on the training split, where
    flipped labels live; a class is examined on each split where its gap is significantly negative.

    Args:
        adapter: the audited model's :class:`~auditor.model.ModelAdapter`.
        sources: split -> ImageSource.
        caches: split -> FeatureCache.
        scores: split -> float ``(N,)`` spuriosity.
        evaluation_split: "val" when given, else "train"; evaluation_gaps: its gaps.
        verdicts: the audit's verdicts (core features give crop boxes without masks).
        class_names: one per class.
        mask_provider: object-mask backend, or None.
        config: noise settings.
        gap_config: k and bootstrap of the training-split gaps.
        heatmap: heatmap method.
        rng: random generator of the training-split bootstrap.

    Returns:
        A :class:`NoiseResult`: per examined (class, split) the gap, the flagged images with
        crops, predictions and diagnoses, and counts (misclassified, fixed, fixed share).

    Raises:
        InvalidInputError: ``noise.n_flagged`` below 1.
    """
    cfg = config
    if cfg.n_flagged < 1:
        raise InvalidInputError(f"`noise.n_flagged` must be at least 1; got {cfg.n_flagged}")
    thumbnails = cfg.thumbnails
    crop_mode = cfg.crop_mode
    per_split = {evaluation_split: evaluation_gaps}
    if evaluation_split != "train" and "train" in scores:
        cache = caches["train"]
        per_split["train"] = class_gaps(scores["train"], np.asarray(cache.labels), np.asarray(cache.correct),
                                        gap_config, np.random.default_rng(int(rng.integers(2**31))))
    core: dict[int, list[int]] = {}
    for v in verdicts:
        if v.label == "core":
            core.setdefault(v.class_index, []).append(v.feature)
    examined = []
    for split, gaps in per_split.items():
        split_scores = scores.get(split)
        if split_scores is None:
            continue
        labels = np.asarray(caches[split].labels)
        for c in negative_gap_classes(gaps):
            flagged = flag_images(split_scores, labels, c, cfg.n_flagged)
            if len(flagged) == 0:
                continue
            records = crop_and_predict(adapter, sources[split], flagged, c, core.get(c, []), mask_provider,
                                       expand=cfg.box_expand, thumbnails=thumbnails, mode=crop_mode, heatmap=heatmap)
            wrong = sum(r["prediction"] != r["label"] for r in records)
            fixed = sum(r["fixed"] for r in records)
            g = gaps[c]
            examined.append({
                "class_index": int(c),
                "class_name": class_names[c],
                "split": split,
                "gap": g.gap,
                "ci_low": g.ci_low,
                "ci_high": g.ci_high,
                "n_flagged": len(records),
                "n_misclassified": int(wrong),
                "n_fixed_by_crop": int(fixed),
                "fixed_share": fixed / wrong if wrong else None,
                "n_possible_label_noise": sum(r["diagnosis"].startswith("possible label noise") for r in records),
                "images": records,
            })
            logger.info("noise: class %s (%s): %d flagged, %d misclassified, %d fixed by cropping",
                        class_names[c], split, len(records), wrong, fixed)
    return NoiseResult(section={
        "classes_examined": [(e["class_index"], e["split"]) for e in examined],
        "n_flagged": cfg.n_flagged,
        "box_expand": cfg.box_expand,
        "crop_mode": crop_mode,
        "results": examined,
    })
