"""Feature cache (one forward pass, memmapped on disk) and per-class feature importance.

Unreadable images (see :class:`auditor.data.SkippedImage`) keep their row in the cache
with label -1, prediction -1 and zero activations/logits; every consumer ignores rows
with label < 0 (:attr:`FeatureCache.valid`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from auditor.config import FeatureConfig
from auditor.data import ImageSource, SkippedImage
from auditor.errors import InvalidInputError, NumericalError
from auditor.model import ModelAdapter

logger = logging.getLogger(__name__)

_ARRAYS = {"activations": np.float32, "logits": np.float32, "labels": np.int64, "predictions": np.int64}
PROGRESS_EVERY = 2000
"""extract_features logs a progress line (INFO) every this many images."""


@dataclass(frozen=True)
class FeatureCache:
    """Cached outputs of one pass over a split.

    Attributes:
        activations: float32 ``(N, D)``, the head's input per image (zeros for skipped images).
        logits: float32 ``(N, K)`` (zeros for skipped images).
        labels: int64 ``(N,)``; -1 for images that could not be read.
        predictions: int64 ``(N,)``, argmax of the logits; -1 for skipped images.
        directory: where the memmaps live, or None for in-memory arrays.
        skipped: the unreadable images, by index.
    """

    activations: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    directory: Path | None = None
    skipped: tuple[SkippedImage, ...] = ()

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def valid(self) -> np.ndarray:
        """bool ``(N,)``: the row holds a readable image (label >= 0)."""
        return np.asarray(self.labels) >= 0

    @property
    def correct(self) -> np.ndarray:
        """bool ``(N,)``: prediction equals label (False for skipped rows)."""
        return (self.predictions == self.labels) & self.valid

    @classmethod
    def from_arrays(cls, activations: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> "FeatureCache":
        """An in-memory cache built from arrays (predictions are the logits' argmax; -1 where label < 0)."""
        logits = np.asarray(logits, np.float32)
        labels = np.asarray(labels, np.int64)
        predictions = np.where(labels >= 0, logits.argmax(1), -1).astype(np.int64)
        return cls(np.asarray(activations, np.float32), logits, labels, predictions)


def _open(directory: Path, n: int, d: int, k: int, mode: str) -> dict[str, np.memmap]:
    shapes = {"activations": (n, d), "logits": (n, k), "labels": (n,), "predictions": (n,)}
    return {name: np.lib.format.open_memmap(directory / f"{name}.npy", mode=mode, dtype=_ARRAYS[name], shape=shapes[name] if mode == "w+" else None) for name in _ARRAYS}


def _check_skipped(source: ImageSource, skipped: tuple[SkippedImage, ...], seen: int, max_fraction: float) -> None:
    n = len(source)
    if len(skipped) <= max_fraction * n:
        return
    first = "; ".join(s.describe() for s in skipped[:5])
    so_far = f" in the first {seen}" if seen < n else ""
    raise InvalidInputError(
        f"{len(skipped)} of {n} {source.name} images could not be read{so_far} ({len(skipped) / n:.1%} of the split, more than "
        f"`data.max_skipped_fraction` = {max_fraction:g}); first: {first}. Fix or remove these files, or raise "
        "`data.max_skipped_fraction` to audit without them"
    )


def extract_features(
    adapter: ModelAdapter,
    source: ImageSource,
    directory: str | Path,
    progress: bool = True,
    max_skipped_fraction: float = 0.01,
) -> FeatureCache:
    """One forward pass over ``source``, writing activations, logits, labels, predictions to memmaps.

    A finished cache in ``directory`` whose fingerprint (dataset size, shapes, model head)
    matches is reused instead of recomputed, so an interrupted audit resumes cheaply; its
    completion file records the skipped images, so a reused cache reports them too.

    Unreadable images are skipped (label and prediction -1, zero activations and logits);
    when more than ``max_skipped_fraction`` of the split is unreadable the pass stops as
    soon as that is certain. A progress line is logged every ``PROGRESS_EVERY`` images
    (at INFO, so runs without a terminal still show progress).

    Args:
        adapter: the model adapter.
        source: the images.
        directory: folder for the ``.npy`` memmaps (created if needed).
        progress: show a progress bar.
        max_skipped_fraction: largest share of unreadable images tolerated (0 = none).

    Returns:
        A :class:`FeatureCache` backed by read-only memmaps, with ``skipped`` filled in.

    Raises:
        InvalidInputError: a label outside the head's range ``[0, K)``; too many unreadable
            images (names the first few); images of different sizes in a batch.
        NumericalError: NaN or inf activations or logits (names the images).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    n, d, k = len(source), adapter.n_features, adapter.n_classes
    fingerprint = {"n": n, "d": d, "k": k, "head": adapter.head_name, "image_shape": list(source.image_shape)}
    done = directory / "complete.json"
    if done.exists():
        try:
            record = json.loads(done.read_text())
        except ValueError:
            record = {}
        if isinstance(record, dict) and record.get("fingerprint") == fingerprint:
            skipped = tuple(SkippedImage.from_dict(s) for s in record.get("skipped", []))
            logger.info("reusing cached features in %s (%d skipped images)", directory, len(skipped))
            source.record_skipped(skipped)
            _check_skipped(source, skipped, n, max_skipped_fraction)
            return FeatureCache(**_open(directory, n, d, k, "r"), directory=directory, skipped=skipped)
    done.unlink(missing_ok=True)
    arrays = _open(directory, n, d, k, "w+")
    arrays["labels"][:] = -1  # rows of skipped images keep -1 and zero activations
    arrays["predictions"][:] = -1
    started, seen, next_log = time.perf_counter(), 0, PROGRESS_EVERY
    with tqdm(total=n, desc=f"features ({source.name})", disable=not progress) as bar:
        for indices, images, labels, _ in source.batches():
            bad = (labels < 0) | (labels >= k)
            if bad.any():
                i = int(np.flatnonzero(bad.numpy())[0])
                raise InvalidInputError(
                    f"{source.name} image {indices[i]} has label {int(labels[i])}, outside the head's range 0..{k - 1} "
                    f"(head {adapter.head_name!r} has {k} outputs); labels must be class indices of the model's output: "
                    "check the dataset's label mapping, or `model.head` if that layer is not the classifier"
                )
            out = adapter.forward(images, check_finite=False)
            features, logits = out.features.float().cpu().numpy(), out.logits.float().cpu().numpy()
            broken = ~(np.isfinite(features).all(1) & np.isfinite(logits).all(1))
            if broken.any():
                rows = [int(indices[i]) for i in np.flatnonzero(broken)[:5]]
                raise NumericalError(
                    f"the model produced NaN or inf activations/logits for {int(broken.sum())} {source.name} images "
                    f"(first: {rows}); check the input normalisation (`data.mean`/`data.std`) and the model's weights"
                )
            arrays["activations"][indices] = features
            arrays["logits"][indices] = logits
            arrays["labels"][indices] = labels.numpy()
            arrays["predictions"][indices] = logits.argmax(1)
            position = int(indices[-1]) + 1
            _check_skipped(source, source.skipped, position, max_skipped_fraction)  # stop as soon as it is certain
            bar.update(position - seen)
            seen = position
            if seen >= next_log:
                _log_progress(source.name, seen, n, len(source.skipped), started)
                next_log = (seen // PROGRESS_EVERY + 1) * PROGRESS_EVERY
        bar.update(n - seen)
    skipped = source.skipped
    _check_skipped(source, skipped, n, max_skipped_fraction)
    _log_progress(source.name, n, n, len(skipped), started)
    for array in arrays.values():
        array.flush()
    done.write_text(json.dumps({"fingerprint": fingerprint, "skipped": [s.to_dict() for s in skipped]}))
    return FeatureCache(**_open(directory, n, d, k, "r"), directory=directory, skipped=skipped)


def _log_progress(name: str, done: int, total: int, n_skipped: int, started: float) -> None:
    seconds = max(time.perf_counter() - started, 1e-9)
    logger.info("features (%s): %d/%d images, %.1f images/s, %d skipped", name, done, total, done / seconds, n_skipped)


def class_feature_importance(activations: np.ndarray, labels: np.ndarray, head_weight: np.ndarray) -> np.ndarray:
    """Contribution of each feature to each class's logit: mean activation over the class x head weight.

    Rows with label < 0 (unreadable images) are ignored.

    Args:
        activations: float ``(N, D)``.
        labels: int ``(N,)`` in ``[0, K)``, or -1 for rows to ignore.
        head_weight: float ``(K, D)``.

    Returns:
        float32 ``(K, D)``; rows of classes with no image are zero.

    Raises:
        InvalidInputError: ``activations`` and ``head_weight`` disagree on D.

    Example:
        >>> class_feature_importance(np.array([[1., 0.], [0., 2.]]), np.array([0, 1]), np.eye(2)).tolist()
        [[1.0, 0.0], [0.0, 2.0]]
    """
    head_weight = np.asarray(head_weight, np.float32)
    labels = np.asarray(labels)
    k, d = head_weight.shape
    if activations.shape[1] != d:
        raise InvalidInputError(
            f"activations have {activations.shape[1]} features but the head expects {d}; the activations must be the "
            "input of the same head (`model.head`)"
        )
    importance = np.zeros((k, d), np.float32)
    for c in range(k):
        members = labels == c  # label -1 (skipped) matches no class
        if members.any():
            importance[c] = np.asarray(activations[members], np.float64).mean(0) * head_weight[c]
    return importance


def top_features(importance: np.ndarray, top_k: int) -> dict[int, list[int]]:
    """Per class, the ``top_k`` features with the largest positive contribution (fewer if fewer are positive).

    Args:
        importance: float ``(K, D)`` from :func:`class_feature_importance`.
        top_k: how many features per class at most.

    Returns:
        ``{class: [feature, ...]}``, largest contribution first.
    """
    result = {}
    for c, row in enumerate(importance):
        order = np.argsort(-row, kind="stable")[:top_k]
        result[c] = [int(i) for i in order if row[i] > 0]
    return result


@dataclass(frozen=True)
class FeatureResult:
    """Output of :func:`run_features`.

    Attributes:
        caches: split -> :class:`FeatureCache` ("train", and "val" when given).
        importance: float32 ``(K, D)`` mean activation x head weight on the training split.
        important_features: class -> important features, most important first (usable classes only).
        skipped_classes: class name -> why it was skipped (too few readable training images).
    """

    caches: dict[str, FeatureCache]
    importance: np.ndarray
    important_features: dict[int, list[int]]
    skipped_classes: dict[str, str]


def run_features(
    adapter: ModelAdapter,
    sources: dict[str, ImageSource],
    class_names: list[str],
    config: FeatureConfig,
    work_dir: str | Path,
    *,
    min_images: int,
    max_skipped_fraction: float = 0.01,
    progress: bool = True,
) -> FeatureResult:
    """The feature stage: one cached pass over every split, then each class's important features.

    Args:
        adapter: the audited model's adapter.
        sources: split -> ImageSource.
        class_names: one per head output (for the skipped-class record).
        config: ``top_k`` features per class.
        work_dir: the caches go to ``work_dir/"features"/<split>`` (reused when complete and matching).
        min_images: classes with fewer readable training images are skipped (logged and recorded).
        max_skipped_fraction: share of unreadable images tolerated per split.
        progress: show progress bars.

    Returns:
        A :class:`FeatureResult`.

    Raises:
        InvalidInputError, NumericalError: see :func:`extract_features`.
    """
    caches = {
        split: extract_features(adapter, source, Path(work_dir) / "features" / split, progress=progress,
                                max_skipped_fraction=max_skipped_fraction)
        for split, source in sources.items()
    }
    train = caches["train"]
    importance = class_feature_importance(train.activations, train.labels, adapter.head_weight().numpy())
    labels = np.asarray(train.labels)
    counts = np.bincount(labels[labels >= 0], minlength=adapter.n_classes)
    skipped: dict[str, str] = {}
    for c in np.flatnonzero(counts < min_images):
        skipped[class_names[c]] = (f"{counts[c]} training images; at least {min_images} are needed (2 x gaps.min_k); "
                                   "add images to the class or lower `gaps.min_k`")
        logger.warning("skipping class %r: %s", class_names[c], skipped[class_names[c]])
    ranked = top_features(importance, config.top_k)
    important = {c: ranked[c] for c in range(adapter.n_classes) if class_names[c] not in skipped}
    return FeatureResult(caches=caches, importance=importance, important_features=important, skipped_classes=skipped)
