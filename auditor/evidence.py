"""The evidence stage: the images and plot data behind the HTML report, made during the audit.

``run_evidence`` writes PNG files under ``<out_dir>/artifacts/`` and returns a JSON-ready
dict of their paths *relative to out_dir* (plus the per-class decile accuracies the plots
are drawn from). The dict is stored as ``results["artifacts"]``, so the report is rendered
from results.json and these files alone, without the model, SAM or CLIP.

Per class: the top and bottom spuriosity image grids of the evaluation split (border
green = classified correctly, red = misclassified); per spurious feature: its heatmap
overlaid on the images its verdict examined next to the same images with their object mask;
accuracy by within-class spuriosity decile before and after head tuning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from auditor.evaluation import class_decile_accuracy

logger = logging.getLogger(__name__)

ARTIFACTS_VERSION = 1
THUMB = 96
CORRECT = (46, 160, 67)
WRONG = (218, 54, 51)


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] ``(H, W)`` to a blue-green-yellow-red palette: uint8 ``(H, W, 3)``."""
    v = np.clip(np.asarray(values, np.float64), 0, 1)
    rgb = np.stack([np.clip(1.5 - np.abs(4 * v - c), 0, 1) for c in (3, 2, 1)], axis=-1)
    return (rgb * 255).astype(np.uint8)


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """float ``(3, H, W)`` in [0, 1] -> uint8 ``(H, W, 3)``."""
    return (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def _thumb(array: np.ndarray, size: int = THUMB) -> Image.Image:
    image = Image.fromarray(array)
    scale = size / max(image.size)
    resample = Image.NEAREST if scale >= 2 else Image.BILINEAR
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)


def image_strip(tiles: Sequence[np.ndarray], borders: Sequence[tuple[int, int, int]] | None = None, size: int = THUMB, pad: int = 3) -> Image.Image:
    """Tiles ``(H, W, 3)`` uint8 side by side, each scaled to ``size`` px and framed in its border colour."""
    thumbs = [_thumb(t, size) for t in tiles]
    height = max(t.height for t in thumbs) + 2 * pad
    width = sum(t.width + 2 * pad for t in thumbs) + pad * (len(thumbs) - 1)
    canvas = Image.new("RGB", (max(width, 1), height), (255, 255, 255))
    x = 0
    for n, thumb in enumerate(thumbs):
        colour = borders[n] if borders is not None else (220, 220, 220)
        ImageDraw.Draw(canvas).rectangle([x, 0, x + thumb.width + 2 * pad - 1, height - 1], fill=colour)
        canvas.paste(thumb, (x + pad, pad))
        x += thumb.width + 3 * pad
    return canvas


def overlay_heatmap(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a heatmap (any resolution, values in [0, 1]) over an image ``(H, W, 3)`` uint8."""
    heat = torch.as_tensor(np.asarray(heat, np.float32))[None, None]
    heat = F.interpolate(heat, size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0].numpy()
    blended = (1 - alpha) * image.astype(np.float64) + alpha * heat_colours(heat).astype(np.float64)
    return blended.round().astype(np.uint8)


def overlay_mask(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (0, 200, 255), alpha: float = 0.45) -> np.ndarray:
    """Tint the object mask ``(H, W)`` bool on an image and darken the rest."""
    out = image.astype(np.float64) * 0.55
    mask = np.asarray(mask, bool)
    out[mask] = (1 - alpha) * image[mask] + alpha * np.array(colour, np.float64)
    return out.round().clip(0, 255).astype(np.uint8)


def _save(image: Image.Image, out_dir: Path, name: str) -> str:
    relative = Path("artifacts") / name
    image.save(out_dir / relative, optimize=True)
    return relative.as_posix()


def _grid(source: Any, indices: Sequence[int], correct: np.ndarray, out_dir: Path, name: str) -> str:
    images, _, _ = source.load(list(indices))
    tiles = [_to_uint8(img) for img in source.unit_images(images)]
    borders = [CORRECT if correct[i] else WRONG for i in indices]
    return _save(image_strip(tiles, borders), out_dir, name)


def _feature_images(adapter: Any, source: Any, mask_provider: Any, heatmap: str,
                    requests: list[tuple[int, int, list[int]]], out_dir: Path) -> dict[tuple[int, int], dict[str, Any]]:
    """Heatmap and mask strips for several (class, feature, image indices) requests, in one batched pass."""
    from auditor.heatmaps import compute_heatmaps

    flat = [(c, f, i) for c, f, indices in requests for i in indices]
    images, _, dataset_masks = source.load([i for _, _, i in flat])
    unit = source.unit_images(images)
    heat = np.concatenate([
        compute_heatmaps(adapter, images[s : s + source.batch_size], [f for _, f, _ in flat[s : s + source.batch_size]], heatmap)
        for s in range(0, len(flat), source.batch_size)
    ])
    masks = None
    if dataset_masks is not None:
        masks = dataset_masks.numpy().astype(bool)
    elif mask_provider is not None:
        masks = np.concatenate([
            np.asarray(mask_provider.masks(unit[n : n + 1], [c], [i]), bool) for n, (c, _, i) in enumerate(flat)
        ])
    tiles = [_to_uint8(img) for img in unit]
    result, start = {}, 0
    for c, f, indices in requests:
        rows = range(start, start + len(indices))
        stem = f"class{c}_feature{f}"
        entry: dict[str, Any] = {
            "image_indices": [int(i) for i in indices],
            "heatmap": _save(image_strip([overlay_heatmap(tiles[r], heat[r]) for r in rows]), out_dir, f"{stem}_heat.png"),
        }
        if masks is not None:
            entry["mask"] = _save(image_strip([overlay_mask(tiles[r], masks[r]) for r in rows]), out_dir, f"{stem}_mask.png")
        result[(c, f)] = entry
        start += len(indices)
    return result


@dataclass(frozen=True)
class EvidenceResult:
    """Output of :func:`run_evidence`.

    Attributes:
        artifacts: JSON-ready dict: ``{"version", "split", "classes": {"<c>": {"top_grid", "bottom_grid",
            "features": {"<f>": {"heatmap", "mask", "image_indices"}}, "decile_accuracy":
            {"before": [10], "after": [10] or None}}}, "errors": [...]}``; image paths relative to ``directory``.
        directory: the folder holding ``artifacts/``.
    """

    artifacts: dict[str, Any]
    directory: Path


def run_evidence(
    adapter: Any,
    train: Any,
    evaluation: Any,
    evaluation_split: str,
    evaluation_labels: np.ndarray,
    evaluation_correct: np.ndarray,
    evaluation_scores: np.ndarray | None,
    tuned_correct: np.ndarray | None,
    gaps: dict[int, Any],
    verdicts: Sequence[Any],
    mask_provider: Any,
    heatmap: str,
    n_grid_images: int,
    out_dir: str | Path,
    extra_pairs: set[tuple[int, int]] = frozenset(),
    n_feature_images: int = 4,
) -> EvidenceResult:
    """The evidence stage: write the report's images during the audit and return their paths and plot data.

    Per class: the top and bottom spuriosity image grids of the evaluation split (frame green =
    classified correctly, red = misclassified) and accuracy by within-class spuriosity decile
    before and after head tuning; per spurious feature (and per pair in ``extra_pairs``): its
    heatmap over the training images its verdict examined (``image_indices``) next to their object masks. A failure on
    one class or feature is logged and recorded under ``"errors"``; the rest is still written.

    Args:
        adapter: the audited model's :class:`~auditor.model.ModelAdapter` (heatmaps).
        train: ImageSource of the training split (the verdicts' images).
        evaluation: ImageSource of the evaluation split (the grids); evaluation_split its name.
        evaluation_labels: int ``(M,)``; evaluation_correct: bool ``(M,)`` of the audited model.
        evaluation_scores: float ``(M,)`` spuriosity, or None.
        tuned_correct: bool ``(M,)`` of the low-spuriosity-tuned head, or None.
        gaps: class -> GapEstimate (top/bottom indices).
        verdicts: the audit's verdicts.
        mask_provider: object-mask backend for images without dataset masks, or None.
        heatmap: heatmap method name.
        n_grid_images: images per grid.
        out_dir: folder receiving ``artifacts/``.
        extra_pairs: (class, feature) pairs shown besides the spurious ones (e.g. disagreements with humans).
        n_feature_images: examined images shown per feature (the first of ``image_indices``).

    Returns:
        An :class:`EvidenceResult`.
    """
    out_dir = Path(out_dir)
    (out_dir / "artifacts").mkdir(parents=True, exist_ok=True)
    correct = np.asarray(evaluation_correct)
    result: dict[str, Any] = {"version": ARTIFACTS_VERSION, "split": evaluation_split, "classes": {}, "errors": []}
    for c, gap in sorted(gaps.items()):
        entry: dict[str, Any] = {"features": {}}
        try:
            if gap.top_indices:
                entry["top_grid"] = _grid(evaluation, gap.top_indices[:n_grid_images], correct, out_dir, f"class{c}_top.png")
                entry["bottom_grid"] = _grid(evaluation, gap.bottom_indices[:n_grid_images], correct, out_dir, f"class{c}_bottom.png")
            if evaluation_scores is not None:
                entry["decile_accuracy"] = {
                    "before": class_decile_accuracy(evaluation_scores, evaluation_labels, correct, c),
                    "after": class_decile_accuracy(evaluation_scores, evaluation_labels, tuned_correct, c) if tuned_correct is not None else None,
                }
        except Exception as error:  # one bad class must not sink the report
            logger.warning("report images for class %d failed: %s", c, error)
            result["errors"].append(f"class {c}: {error}")
        result["classes"][str(c)] = entry
    requests = [
        (v.class_index, v.feature, list(v.image_indices)[:n_feature_images])
        for v in verdicts
        if (v.label == "spurious" or (v.class_index, v.feature) in extra_pairs) and v.image_indices
    ]
    if requests:
        try:
            for (c, f), entry in _feature_images(adapter, train, mask_provider, heatmap, requests, out_dir).items():
                result["classes"].setdefault(str(c), {"features": {}}).setdefault("features", {})[str(f)] = entry
        except Exception as error:  # the grids and plots above still make a useful report
            logger.warning("feature heatmap images failed: %s", error)
            result["errors"].append(f"feature heatmaps: {error}")
    return EvidenceResult(artifacts=result, directory=out_dir)
