"""The audited images as a FiftyOne dataset: one sample per image, with the audit's findings as fields.

Fields of each sample (``pip install "auditor[fiftyone]"``):

* ``filepath``: the image file (ImageFolder/CSV data), or a PNG written once to ``image_dir``
  for images that are not files (tensors, HF datasets);
* ``ground_truth`` / ``prediction``: ``fo.Classification`` with the class names (prediction of the
  audited model; absent for reports saved before predictions were stored);
* ``class_index``, ``index`` (position in the audited split), ``split``;
* ``spuriosity``: float (None where the class has no spurious feature);
* ``in_top_k`` / ``in_bottom_k``: the image is among its class's k most / least spurious (the
  images the class's gap compares);
* ``spurious_features``: its class's spurious feature indices;
* ``heatmap``: ``fo.Heatmap`` of its class's most spurious feature (the spurious feature with the
  largest importance) on the image, in [0, 1]; only when the model is available.

A saved view per class, ``"<class> by spuriosity"``, holds the class's images sorted by
spuriosity, most spurious first. ``dataset.info["auditor"]`` records the split and the
spurious features per class.

Example:
    >>> dataset = report.to_fiftyone("my-audit")                    # doctest: +SKIP
    >>> dataset.load_saved_view("bird by spuriosity").first().spuriosity   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from auditor.errors import InvalidInputError
from auditor.integrations import require

if TYPE_CHECKING:
    from auditor.report.audit_report import AuditReport

logger = logging.getLogger(__name__)

VIEW_SUFFIX = " by spuriosity"


class _TolerantMetadata:
    """Package metadata whose missing fields read as None (as the standard library's do)."""

    def __init__(self, message: Any):
        self._message = message

    def __getitem__(self, key: str) -> Any:
        try:
            return self._message[key]
        except KeyError:
            return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._message, name)


def _fiftyone():
    """Import fiftyone, also after a package (mlflow) has imported the ``importlib_metadata`` backport.

    Once imported, the backport serves every ``importlib.metadata`` lookup, and its metadata
    raises KeyError for a missing field, which breaks FiftyOne's ``eta`` dependency at import
    (``_META["author"]``). While fiftyone is first imported, missing fields read as None again.
    """
    import importlib.metadata as stdlib_metadata
    import sys

    original = stdlib_metadata.metadata
    patch = "fiftyone" not in sys.modules and "importlib_metadata" in sys.modules
    if patch:
        stdlib_metadata.metadata = lambda name: _TolerantMetadata(original(name))
    try:
        return require("fiftyone", "fiftyone", "exporting to FiftyOne (`report.to_fiftyone`, `auditor export fiftyone`)")
    finally:
        stdlib_metadata.metadata = original


def ends_of_classes(scores: np.ndarray, labels: np.ndarray, top_fraction: float, min_k: int) -> tuple[set[int], set[int]]:
    """Indices of every class's k most and k least spurious images (the gap's two ends).

    Uses the gap stage's k and order (:func:`auditor.gaps.gap_k`, stable sort), so on the
    evaluation split the ends equal ``report.gaps[c].top_indices`` / ``bottom_indices``.

    Returns:
        ``(top, bottom)`` sets of dataset indices.
    """
    from auditor.gaps import gap_k

    top: set[int] = set()
    bottom: set[int] = set()
    for c in np.unique(labels):
        if c < 0:
            continue
        members = np.flatnonzero(labels == c)
        if not np.isfinite(scores[members]).any():
            continue
        k = gap_k(len(members), top_fraction, min_k)
        if k == 0:
            continue
        order = np.argsort(-scores[members], kind="stable")
        top.update(int(i) for i in members[order[:k]])
        bottom.update(int(i) for i in members[order[::-1][:k]])
    return top, bottom


def _paths_of(dataset: Any, n: int) -> list[str] | None:
    """File paths of a dataset's items when it keeps its images as files (auditor's ImageFolder/CSV, torchvision's)."""
    if hasattr(dataset, "image_path"):
        return [str(Path(dataset.image_path(i)).resolve()) for i in range(n)]
    samples = getattr(dataset, "samples", None) or getattr(dataset, "imgs", None)
    if isinstance(samples, list) and len(samples) == n and all(isinstance(s, (tuple, list)) for s in samples[:1]):
        return [str(Path(s[0]).resolve()) for s in samples]
    return None


def _to_uint8(image: Any, mean: Sequence[float] | None, std: Sequence[float] | None) -> np.ndarray:
    """A dataset image (``(C, H, W)`` float tensor/array, or a PIL image) as uint8 ``(H, W, 3)``."""
    if hasattr(image, "convert"):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image, np.float32)
    if array.ndim == 2:
        array = array[None]
    if mean is not None and std is not None:
        array = array * np.asarray(std, np.float32)[:, None, None] + np.asarray(mean, np.float32)[:, None, None]
    if array.shape[0] == 1:
        array = np.repeat(array, 3, 0)
    return (np.clip(array[:3].transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)


def write_images(dataset: Any, indices: Sequence[int], folder: Path, split: str, mean=None, std=None) -> dict[int, str]:
    """Write the images of ``dataset`` at ``indices`` as PNG files once (existing files are kept).

    Returns:
        index -> absolute file path.
    """
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i in indices:
        path = (folder / f"{split}_{i:06d}.png").resolve()
        if not path.exists():
            item = dataset[i]
            image = item["image"] if isinstance(item, dict) else item[0]
            Image.fromarray(_to_uint8(image, mean, std)).save(path)
        paths[i] = str(path)
    return paths


def class_heatmaps(report: AuditReport, dataset: Any, indices: Sequence[int], features: dict[int, int],
                   labels: np.ndarray, batch_size: int = 32) -> dict[int, np.ndarray]:
    """Heatmap of the most spurious feature of each image's class (the audit's heatmap method).

    Args:
        report: the report (its ``model`` must be set).
        dataset: the audited split's dataset.
        indices: images to map.
        features: class -> its most spurious feature.
        labels: int ``(N,)`` labels of the split.
        batch_size: images per forward pass.

    Returns:
        index -> float32 ``(h, w)`` in [0, 1].
    """
    import torch

    from auditor.data import ImageSource
    from auditor.heatmaps import compute_heatmaps
    from auditor.model import ModelAdapter

    model = report.model
    flags = [(module, module.training) for module in model.modules()]
    adapter = ModelAdapter(model, head=report.meta.get("head") or report.config.model.head,
                           feature_layer=report.config.model.feature_layer, device="cpu")
    source = ImageSource(dataset, batch_size=batch_size, mean=report.config.data.mean, std=report.config.data.std, name="fiftyone")
    maps: dict[int, np.ndarray] = {}
    wanted = [i for i in indices if int(labels[i]) in features]
    try:
        for start in range(0, len(wanted), batch_size):
            chunk = wanted[start:start + batch_size]
            images, _, _ = source.load(chunk)
            with torch.enable_grad():
                result = compute_heatmaps(adapter, images, [features[int(labels[i])] for i in chunk], report.config.verdicts.heatmap)
            maps.update({i: np.asarray(m, np.float32) for i, m in zip(chunk, result)})
    finally:
        close = getattr(adapter, "close", None) or getattr(adapter, "remove_hooks", None)
        if callable(close):
            close()
        for module, training in flags:
            module.training = training
    return maps


def to_fiftyone(
    report: AuditReport,
    dataset_name: str,
    *,
    split: str | None = None,
    dataset: Any = None,
    image_paths: Sequence[str] | None = None,
    image_dir: str | Path | None = None,
    heatmaps: bool = True,
    overwrite: bool = True,
    persistent: bool = False,
):
    """Build a FiftyOne dataset of the audited images with the audit's findings.

    Args:
        report: the audit report.
        dataset_name: name of the FiftyOne dataset.
        split: "train" or "val" (default: the evaluation split).
        dataset: the audited split's dataset (same order); its file paths are used when it has them
            (auditor's ImageFolder/CSV datasets, torchvision's ImageFolder), else its images are
            written once to ``image_dir``. Needed for heatmaps. Default: read from the config's
            ``data.<split>`` (audits run by ``auditor audit``).
        image_paths: one file per image of the split, instead of ``dataset``'s.
        image_dir: folder for written images (default: ``<evidence_dir or cwd>/fiftyone_images``).
        heatmaps: add the ``heatmap`` field (needs ``report.model`` and ``dataset``).
        overwrite: replace an existing dataset of that name.
        persistent: keep the dataset in FiftyOne's database after the process ends.

    Returns:
        The ``fiftyone.core.dataset.Dataset``.

    Raises:
        MissingDependencyError: fiftyone is not installed.
        InvalidInputError: unknown split, no way to find the images, or a length mismatch.
    """
    fo = _fiftyone()
    from fiftyone import ViewField as F

    split = split or report.meta.get("evaluation_split") or ("val" if "val" in report.rankings else "train")
    if split not in report.rankings:
        raise InvalidInputError(f"the report has no {split!r} ranking; available: {sorted(report.rankings)}")
    scores = np.asarray(report.rankings[split], np.float64)
    labels = np.asarray(report.labels.get(split, np.full(len(scores), -1)), np.int64)
    predictions = report.predictions.get(split)
    n = len(scores)
    keep = [i for i in range(n) if labels[i] >= 0]

    if image_paths is None and dataset is None:
        dataset = dataset_from_config(report, split)
        if dataset is None:
            raise InvalidInputError(
                f"FiftyOne needs the images: pass `dataset=` (the audited {split} split, same order) or `image_paths=` "
                f"(one file per image); the config has no `data.{split}` to read them from (an audit run from Python)"
            )
    if image_paths is not None:
        paths = [str(Path(p).resolve()) for p in image_paths]
    else:
        if len(dataset) != n:
            raise InvalidInputError(f"the dataset has {len(dataset)} images but the {split!r} ranking has {n}; pass the audited split")
        paths = _paths_of(dataset, n)
        if paths is None:
            folder = Path(image_dir) if image_dir else Path(report.evidence_dir or ".") / "fiftyone_images"
            written = write_images(dataset, keep, folder, split, report.config.data.mean, report.config.data.std)
            paths = [written.get(i, "") for i in range(n)]
    if len(paths) != n:
        raise InvalidInputError(f"{len(paths)} image paths for {n} images of the {split!r} split")

    top, bottom = ends_of_classes(scores, labels, report.config.gaps.top_fraction, report.config.gaps.min_k)
    spurious = {c: report.spurious_features(c) for c in range(len(report.class_names))}
    importance = {(v.class_index, v.feature): v.importance for v in report.verdicts}
    most = {c: max(fs, key=lambda f: (_finite(importance.get((c, f))), -fs.index(f))) for c, fs in spurious.items() if fs}
    maps: dict[int, np.ndarray] = {}
    if heatmaps and most:
        if report.model is None or dataset is None:
            logger.warning("fiftyone: no heatmaps (they need the audited model and the dataset; a report loaded from disk "
                           "has no model: AuditReport.load(path, model))")
        else:
            maps = class_heatmaps(report, dataset, keep, most, labels)

    names = report.class_names
    samples = []
    for i in keep:
        c = int(labels[i])
        fields: dict[str, Any] = {
            "ground_truth": fo.Classification(label=names[c]),
            "class_index": c,
            "index": i,
            "split": split,
            "spuriosity": float(scores[i]) if math.isfinite(scores[i]) else None,
            "in_top_k": i in top,
            "in_bottom_k": i in bottom,
            "spurious_features": [int(f) for f in spurious.get(c, [])],
        }
        if predictions is not None and int(predictions[i]) >= 0:
            fields["prediction"] = fo.Classification(label=names[int(predictions[i])])
        if i in maps:
            fields["heatmap"] = fo.Heatmap(map=maps[i], range=[0.0, 1.0])
        samples.append(fo.Sample(filepath=paths[i], **fields))

    result = fo.Dataset(dataset_name, overwrite=overwrite, persistent=persistent)
    result.add_samples(samples, progress=False)
    for c, name in enumerate(names):
        view = result.match(F("class_index") == c).sort_by("spuriosity", reverse=True)
        result.save_view(f"{name}{VIEW_SUFFIX}", view, overwrite=True)
    result.info["auditor"] = {"split": split, "spurious_features": {names[c]: fs for c, fs in spurious.items()},
                              "heatmap_feature": {names[c]: f for c, f in most.items()}}
    result.save()
    logger.info("fiftyone: dataset %r with %d samples and %d saved views", dataset_name, len(samples), len(names))
    return result


def _finite(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else -math.inf


def dataset_from_config(report: AuditReport, split: str, spec: Any = None):
    """The audited split read from the config's ``data.<split>`` (or ``spec``), prepared as the CLI prepared it.

    When the report has a model, the images get the model's eval transform (as ``auditor audit``
    applied it), so that heatmaps can be computed; otherwise they are read as plain tensors.

    Returns:
        The dataset, or None when neither ``spec`` nor the config names the split's data.
    """
    spec = spec or getattr(report.config.data, split, None)
    if not spec:
        return None
    from auditor.adapters.data import load_dataset

    transform = None
    if report.model is not None:
        from auditor.cli import _transform

        transform, _ = _transform(report.model, report.config)
    dataset, _ = load_dataset(spec, transform=transform)
    return dataset


def export_results(
    results: str | Path,
    name: str,
    *,
    split: str | None = None,
    data: str | None = None,
    image_dir: str | Path | None = None,
    persistent: bool = True,
):
    """``auditor export fiftyone``: a FiftyOne dataset from a results.json written by ``auditor audit``.

    The images are read from the config's ``data.<split>`` (or ``data``); the model named by
    ``model.source`` / ``model.weights`` is loaded for the heatmaps when it can be (else the
    dataset has no heatmap field, with a warning).

    Args:
        results: results.json or its folder.
        name: dataset name.
        split: "train" or "val" (default: the evaluation split).
        data: the split's image folder (or saved HF dataset), when the config's path moved or
            the audit ran through the Python API.
        image_dir: where images that are not files are written (default: beside results.json).
        persistent: keep the dataset in FiftyOne's database.

    Returns:
        The FiftyOne dataset.

    Raises:
        InvalidInputError: no image source known for the split.
    """
    from auditor.report.audit_report import AuditReport

    report = AuditReport.load(results)
    folder = Path(results) if Path(results).is_dir() else Path(results).parent
    split = split or report.meta.get("evaluation_split") or ("val" if "val" in report.rankings else "train")
    if not (data or getattr(report.config.data, split, None)):
        raise InvalidInputError(
            f"results.json's config has no `data.{split}` (an audit run from Python); pass the audited images with --data FOLDER"
        )
    config = report.config
    if config.model.source:
        try:
            from auditor.adapters.models import load_model

            report.model = load_model(config.model.source, weights=config.model.weights, num_classes=config.model.num_classes,
                                      **config.model.kwargs)
        except Exception as error:  # heatmaps are optional: the export goes on without them
            logger.warning("fiftyone: could not load the model %r for heatmaps (%s); exporting without heatmaps",
                           config.model.source, error)
    dataset = dataset_from_config(report, split, data)
    return to_fiftyone(report, name, split=split, dataset=dataset, image_dir=image_dir or folder / "fiftyone_images",
                       heatmaps=report.model is not None, persistent=persistent)
