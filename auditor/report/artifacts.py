"""Images and plot data behind the HTML report, written next to results.json.

``write_artifacts`` writes PNG files under ``<out_dir>/artifacts/`` and returns a
JSON-ready dict of their paths *relative to out_dir* (plus the per-class decile
accuracies the plots are drawn from). The dict is stored as ``results["artifacts"]``,
so ``auditor report results.json`` can re-render the HTML without the model or data.

Per class: the top and bottom spuriosity image grids of the evaluation split (border
green = classified correctly, red = misclassified); per spurious feature: its heatmap
overlaid on the top-activating images next to the same images with their object mask;
accuracy by within-class spuriosity decile before and after head tuning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

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


def class_decile_accuracy(scores: np.ndarray, labels: np.ndarray, correct: np.ndarray, class_index: int) -> list[float | None]:
    """Accuracy per spuriosity decile of one class's images (0 = least spurious; None when a decile is empty)."""
    members = np.flatnonzero((np.asarray(labels) == class_index) & np.isfinite(scores))
    if len(members) == 0:
        return [None] * 10
    ranks = np.argsort(np.argsort(scores[members], kind="stable"), kind="stable")
    bins = ranks * 10 // len(members)
    return [float(correct[members][bins == d].mean()) if (bins == d).any() else None for d in range(10)]


def _tuned_correct(ctx: Any, report: Any, split: str) -> np.ndarray | None:
    model = getattr(report, "tuned_model", None)
    if model is None:
        return None
    head = dict(model.named_modules()).get(ctx.adapter.head_name)
    if head is None:
        return None
    cache = ctx.cache(split)
    weight = head.weight.detach().float().cpu().numpy()
    bias = head.bias.detach().float().cpu().numpy() if head.bias is not None else np.zeros(weight.shape[0], np.float32)
    predictions = (np.asarray(cache.activations) @ weight.T + bias).argmax(1)
    return predictions == cache.labels


def _save(image: Image.Image, out_dir: Path, name: str) -> str:
    relative = Path("artifacts") / name
    image.save(out_dir / relative, optimize=True)
    return relative.as_posix()


def _grid(ctx: Any, split: str, indices: Sequence[int], correct: np.ndarray, out_dir: Path, name: str) -> str:
    source = ctx.source(split)
    images, _, _ = source.load(list(indices))
    tiles = [_to_uint8(img) for img in source.unit_images(images)]
    borders = [CORRECT if correct[i] else WRONG for i in indices]
    return _save(image_strip(tiles, borders), out_dir, name)


def _feature_images(ctx: Any, requests: list[tuple[int, int, list[int]]], out_dir: Path) -> dict[tuple[int, int], dict[str, Any]]:
    """Heatmap and mask strips for several (class, feature, image indices) requests, in one batched pass."""
    from auditor.heatmaps import compute_heatmaps

    source = ctx.train
    flat = [(c, f, i) for c, f, indices in requests for i in indices]
    images, _, _ = source.load([i for _, _, i in flat])
    unit = source.unit_images(images)
    heat = np.concatenate([
        compute_heatmaps(ctx.adapter, images[s : s + source.batch_size], [f for _, f, _ in flat[s : s + source.batch_size]],
                         ctx.config.verdicts.heatmap)
        for s in range(0, len(flat), source.batch_size)
    ])
    masks = None
    if ctx.mask_provider is not None:
        masks = np.concatenate([
            np.asarray(ctx.mask_provider.masks(unit[n : n + 1], [c], [i]), bool) for n, (c, _, i) in enumerate(flat)
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


def write_artifacts(ctx: Any, report: Any, out_dir: str | Path, n_feature_images: int = 4) -> dict[str, Any]:
    """Write the report's images and return their relative paths and plot data.

    A failure on one class or feature is logged and recorded under ``"errors"``; the
    other artifacts are still written.

    Args:
        ctx: the audit's :class:`~auditor.context.AuditContext` (model, data, caches, masks).
        report: the :class:`~auditor.report.audit_report.AuditReport` (gaps, verdicts, tuned model).
        out_dir: the output folder (``artifacts/`` is created inside it).
        n_feature_images: top-activating images shown per spurious feature.

    Returns:
        JSON-ready dict: ``{"version", "split", "classes": {"<c>": {"top_grid", "bottom_grid",
        "features": {"<f>": {"heatmap", "mask", "image_indices"}}, "decile_accuracy":
        {"before": [10], "after": [10] or None}}}, "errors": [...]}``; paths relative to ``out_dir``.

    Example:
        >>> artifacts = write_artifacts(report._context, report, "audit-out")  # doctest: +SKIP
        >>> artifacts["classes"]["0"]["top_grid"]                              # doctest: +SKIP
        'artifacts/class0_top.png'
    """
    out_dir = Path(out_dir)
    (out_dir / "artifacts").mkdir(parents=True, exist_ok=True)
    if ctx is None:
        logger.warning("no audit context: the report has no images")
        return {"version": ARTIFACTS_VERSION, "split": None, "classes": {}, "errors": ["no audit context"]}
    split = ctx.eval_split
    cache = ctx.cache(split)
    correct = np.asarray(cache.correct)
    tuned_correct = _tuned_correct(ctx, report, split)
    scores = ctx.spuriosity.get(split)
    n_grid = ctx.config.report.n_grid_images
    extra_pairs = {
        (d["class_index"], d["feature"])
        for d in (ctx.sections.get("human_agreement") or {}).get("disagreements", [])
    }
    result: dict[str, Any] = {"version": ARTIFACTS_VERSION, "split": split, "classes": {}, "errors": []}
    for c, gap in sorted(report.gaps.items()):
        entry: dict[str, Any] = {"features": {}}
        try:
            if gap.top_indices:
                entry["top_grid"] = _grid(ctx, split, gap.top_indices[:n_grid], correct, out_dir, f"class{c}_top.png")
                entry["bottom_grid"] = _grid(ctx, split, gap.bottom_indices[:n_grid], correct, out_dir, f"class{c}_bottom.png")
            if scores is not None:
                entry["decile_accuracy"] = {
                    "before": class_decile_accuracy(scores, cache.labels, correct, c),
                    "after": class_decile_accuracy(scores, cache.labels, tuned_correct, c) if tuned_correct is not None else None,
                }
        except Exception as error:  # one bad class must not sink the report
            logger.warning("report images for class %d failed: %s", c, error)
            result["errors"].append(f"class {c}: {error}")
        result["classes"][str(c)] = entry
    requests = [
        (v.class_index, v.feature, list(v.image_indices)[:n_feature_images])
        for v in report.verdicts
        if (v.label == "spurious" or (v.class_index, v.feature) in extra_pairs) and v.image_indices
    ]
    if requests:
        try:
            for (c, f), entry in _feature_images(ctx, requests, out_dir).items():
                result["classes"].setdefault(str(c), {"features": {}}).setdefault("features", {})[str(f)] = entry
        except Exception as error:  # the grids and plots above still make a useful report
            logger.warning("feature heatmap images failed: %s", error)
            result["errors"].append(f"feature heatmaps: {error}")
    return result
