"""Feature cache (one forward pass, memmapped on disk) and per-class feature importance."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from auditor.data import ImageSource
from auditor.errors import InvalidInputError
from auditor.model import ModelAdapter

logger = logging.getLogger(__name__)

_ARRAYS = {"activations": np.float32, "logits": np.float32, "labels": np.int64, "predictions": np.int64}


@dataclass(frozen=True)
class FeatureCache:
    """Cached outputs of one pass over a split.

    Attributes:
        activations: float32 ``(N, D)``, the head's input per image.
        logits: float32 ``(N, K)``.
        labels: int64 ``(N,)``.
        predictions: int64 ``(N,)``, argmax of the logits.
        directory: where the memmaps live, or None for in-memory arrays.
    """

    activations: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    directory: Path | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def correct(self) -> np.ndarray:
        """bool ``(N,)``: prediction equals label."""
        return self.predictions == self.labels

    @classmethod
    def from_arrays(cls, activations: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> "FeatureCache":
        """An in-memory cache built from arrays (predictions are the logits' argmax)."""
        logits = np.asarray(logits, np.float32)
        return cls(np.asarray(activations, np.float32), logits, np.asarray(labels, np.int64), logits.argmax(1))


def _open(directory: Path, n: int, d: int, k: int, mode: str) -> dict[str, np.memmap]:
    shapes = {"activations": (n, d), "logits": (n, k), "labels": (n,), "predictions": (n,)}
    return {name: np.lib.format.open_memmap(directory / f"{name}.npy", mode=mode, dtype=_ARRAYS[name], shape=shapes[name] if mode == "w+" else None) for name in _ARRAYS}


def extract_features(
    adapter: ModelAdapter,
    source: ImageSource,
    directory: str | Path,
    progress: bool = True,
) -> FeatureCache:
    """One forward pass over ``source``, writing activations, logits, labels, predictions to memmaps.

    A finished cache in ``directory`` whose fingerprint (dataset size, shapes, model head)
    matches is reused instead of recomputed, so an interrupted audit resumes cheaply.

    Args:
        adapter: the model adapter.
        source: the images.
        directory: folder for the ``.npy`` memmaps (created if needed).
        progress: show a progress bar.

    Returns:
        A :class:`FeatureCache` backed by read-only memmaps.

    Raises:
        InvalidInputError: a label outside the head's range ``[0, K)``.
        NumericalError: NaN or inf activations.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    n, d, k = len(source), adapter.n_features, adapter.n_classes
    fingerprint = {"n": n, "d": d, "k": k, "head": adapter.head_name, "image_shape": list(source.image_shape)}
    done = directory / "complete.json"
    if done.exists() and json.loads(done.read_text()) == fingerprint:
        logger.info("reusing cached features in %s", directory)
        arrays = _open(directory, n, d, k, "r")
        return FeatureCache(**arrays, directory=directory)
    done.unlink(missing_ok=True)
    arrays = _open(directory, n, d, k, "w+")
    with tqdm(total=n, desc=f"features ({source.name})", disable=not progress) as bar:
        for indices, images, labels, _ in source.batches():
            bad = (labels < 0) | (labels >= k)
            if bad.any():
                i = int(np.flatnonzero(bad.numpy())[0])
                raise InvalidInputError(
                    f"{source.name} image {indices[i]} has label {int(labels[i])}, outside the head's range 0..{k - 1}; "
                    "labels must be class indices of the model's output"
                )
            out = adapter.forward(images)
            arrays["activations"][indices] = out.features.float().cpu().numpy()
            arrays["logits"][indices] = out.logits.float().cpu().numpy()
            arrays["labels"][indices] = labels.numpy()
            arrays["predictions"][indices] = out.logits.argmax(1).cpu().numpy()
            bar.update(len(indices))
    for array in arrays.values():
        array.flush()
    done.write_text(json.dumps(fingerprint))
    return FeatureCache(**_open(directory, n, d, k, "r"), directory=directory)


def class_feature_importance(activations: np.ndarray, labels: np.ndarray, head_weight: np.ndarray) -> np.ndarray:
    """Contribution of each feature to each class's logit: mean activation over the class x head weight.

    Args:
        activations: float ``(N, D)``.
        labels: int ``(N,)`` in ``[0, K)``.
        head_weight: float ``(K, D)``.

    Returns:
        float32 ``(K, D)``; rows of classes with no image are zero.

    Example:
        >>> class_feature_importance(np.array([[1., 0.], [0., 2.]]), np.array([0, 1]), np.eye(2)).tolist()
        [[1.0, 0.0], [0.0, 2.0]]
    """
    head_weight = np.asarray(head_weight, np.float32)
    k, d = head_weight.shape
    if activations.shape[1] != d:
        raise InvalidInputError(f"activations have {activations.shape[1]} features but the head expects {d}")
    importance = np.zeros((k, d), np.float32)
    for c in range(k):
        members = labels == c
        if members.any():
            importance[c] = np.asarray(activations[members], np.float64).mean(0) * head_weight[c]
    return importance


def top_features(importance: np.ndarray, top_k: int) -> dict[int, list[int]]:
    """Per class, the ``top_k`` features with the largest positive contribution (fewer if fewer are positive)."""
    result = {}
    for c, row in enumerate(importance):
        order = np.argsort(-row, kind="stable")[:top_k]
        result[c] = [int(i) for i in order if row[i] > 0]
    return result
