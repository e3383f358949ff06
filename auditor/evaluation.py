"""Evaluating a linear head on cached features: predictions, accuracy, per-class and decile
accuracy, spurious gaps.

One module serves every stage that scores a head without running the model: head tuning,
NeuronTune, the evidence images and the demo. Rows whose label is negative (images that
could not be read) are ignored everywhere.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from auditor.config import GapConfig
from auditor.gaps import class_gaps


def head_predictions(activations: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Predicted classes of a linear head.

    Args:
        activations: float ``(N, D)`` features in front of the head.
        weight: float ``(K, D)``.
        bias: float ``(K,)``.

    Returns:
        int64 ``(N,)``.

    Example:
        >>> head_predictions(np.array([[1., 0.], [0., 1.]]), np.eye(2), np.zeros(2)).tolist()
        [0, 1]
    """
    logits = np.asarray(activations, np.float32) @ np.asarray(weight, np.float32).T + np.asarray(bias, np.float32)
    return logits.argmax(1).astype(np.int64)


def class_accuracy(correct: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """Accuracy per class present in ``labels`` (negative labels ignored).

    Args:
        correct: bool ``(N,)``.
        labels: int ``(N,)``.

    Returns:
        class index -> accuracy.
    """
    labels = np.asarray(labels)
    return {int(c): float(np.asarray(correct)[labels == c].mean()) for c in np.unique(labels) if c >= 0}


def decile_accuracy(scores: np.ndarray, labels: np.ndarray, correct: np.ndarray) -> list[float | None]:
    """Accuracy per spuriosity decile (deciles within each class, then pooled; 0 = least spurious).

    Args:
        scores: float ``(N,)`` spuriosity (NaN rows are left out).
        labels: int ``(N,)``.
        correct: bool ``(N,)``.

    Returns:
        Ten accuracies, None for an empty decile.
    """
    deciles = np.full(len(scores), -1)
    for c in np.unique(labels):
        if c < 0:
            continue
        members = np.flatnonzero((labels == c) & np.isfinite(scores))
        if len(members) < 10:
            continue
        ranks = np.argsort(np.argsort(scores[members], kind="stable"), kind="stable")
        deciles[members] = ranks * 10 // len(members)
    return [float(correct[deciles == d].mean()) if (deciles == d).any() else None for d in range(10)]


def class_decile_accuracy(scores: np.ndarray, labels: np.ndarray, correct: np.ndarray, class_index: int) -> list[float | None]:
    """Accuracy per spuriosity decile of one class's images (0 = least spurious; None when a decile is empty).

    Example:
        >>> class_decile_accuracy(np.arange(20.), np.zeros(20, int), np.arange(20) >= 10, 0)[:6]
        [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    """
    members = np.flatnonzero((np.asarray(labels) == class_index) & np.isfinite(scores))
    if len(members) == 0:
        return [None] * 10
    ranks = np.argsort(np.argsort(scores[members], kind="stable"), kind="stable")
    bins = ranks * 10 // len(members)
    correct = np.asarray(correct)
    return [float(correct[members][bins == d].mean()) if (bins == d).any() else None for d in range(10)]


def gap_values(scores: np.ndarray, labels: np.ndarray, correct: np.ndarray, config: GapConfig) -> dict[int, float]:
    """Point estimates of every class's spurious gap (no bootstrap): class -> gap (NaN when too small)."""
    quick = dataclasses.replace(config, n_bootstrap=1)
    gaps = class_gaps(np.asarray(scores, np.float64), np.asarray(labels), np.asarray(correct, bool), quick, np.random.default_rng(0))
    return {c: g.gap for c, g in gaps.items()}


def head_metrics(
    weight: np.ndarray,
    bias: np.ndarray,
    activations: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray | None,
    gap_config: GapConfig,
) -> dict:
    """Every figure the report shows for one head on one split.

    Args:
        weight: float ``(K, D)``; bias: float ``(K,)``.
        activations: float ``(N, D)`` cached features of the split.
        labels: int ``(N,)`` (negative rows ignored).
        scores: float ``(N,)`` spuriosity of the split, or None (no gaps or deciles then).
        gap_config: k of the gaps.

    Returns:
        JSON-ready dict: ``accuracy``, ``worst_class_accuracy``, ``class_accuracy``, ``gaps``
        (class -> point gap), ``mean_gap`` / ``max_gap`` (None without a finite gap), and
        ``decile_accuracy`` (ten values).
    """
    labels = np.asarray(labels)
    return correctness_metrics(head_predictions(activations, weight, bias) == labels, labels, scores, gap_config)


def correctness_metrics(correct: np.ndarray, labels: np.ndarray, scores: np.ndarray | None, gap_config: GapConfig) -> dict:
    """:func:`head_metrics` from the predictions' correctness, whatever head (or heads) made them.

    Args:
        correct: bool ``(N,)`` whether each image was classified right.
        labels: int ``(N,)`` (negative rows ignored).
        scores: float ``(N,)`` spuriosity, or None (no gaps or deciles then).
        gap_config: k of the gaps.

    Returns:
        The dict of :func:`head_metrics`.
    """
    labels = np.asarray(labels)
    correct = np.asarray(correct, bool)
    usable = labels >= 0
    per_class = class_accuracy(correct, labels)
    metrics = {
        "accuracy": float(correct[usable].mean()) if usable.any() else float("nan"),
        "worst_class_accuracy": min(per_class.values()) if per_class else float("nan"),
        "class_accuracy": per_class,
        "gaps": {},
        "mean_gap": None,
        "max_gap": None,
        "decile_accuracy": [None] * 10,
    }
    if scores is not None and np.isfinite(scores).any():
        gaps = gap_values(scores, labels, correct, gap_config)
        finite = [g for g in gaps.values() if np.isfinite(g)]
        metrics.update(
            gaps=gaps,
            mean_gap=float(np.mean(finite)) if finite else None,
            max_gap=float(np.max(finite)) if finite else None,
            decile_accuracy=decile_accuracy(scores, labels, correct),
        )
    return metrics
