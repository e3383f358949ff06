"""Spurious gaps: accuracy on the top-k minus the bottom-k spuriosity images of a class."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from auditor.config import GapConfig
from auditor.results import GapEstimate

logger = logging.getLogger(__name__)


def gap_k(n_images: int, top_fraction: float, min_k: int) -> int:
    """k for a class of ``n_images``: ``max(min_k, round(top_fraction * n))``, or 0 when 2k > n."""
    k = max(min_k, int(round(top_fraction * n_images)))
    return k if 2 * k <= n_images else 0


def spurious_gap(
    scores: np.ndarray,
    correct: np.ndarray,
    indices: np.ndarray,
    class_index: int,
    *,
    top_fraction: float = 0.1,
    min_k: int = 10,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    rng: np.random.Generator,
) -> GapEstimate:
    """Gap of one class, with a bootstrap confidence interval.

    The top-k and bottom-k images are those with the highest and lowest spuriosity;
    the interval resamples each end with replacement (percentile bootstrap).

    Args:
        scores: float ``(n,)`` spuriosity of the class's images.
        correct: bool ``(n,)`` whether the model classified each image correctly.
        indices: int ``(n,)`` dataset indices of the images.
        class_index: the class.
        top_fraction: k as a fraction of n.
        min_k: smallest k.
        n_bootstrap: resamples.
        confidence: level of the interval.
        rng: random generator.

    Returns:
        A :class:`GapEstimate`; gap NaN with a note when the class is too small.

    Example:
        >>> est = spurious_gap(np.arange(40.), np.arange(40) >= 20, np.arange(40), 0, min_k=10,
        ...                    rng=np.random.default_rng(0))
        >>> est.gap, est.significant
        (1.0, True)
    """
    scores = np.asarray(scores, np.float64)
    correct = np.asarray(correct, bool)
    n = len(scores)
    k = gap_k(n, top_fraction, min_k)
    if k == 0:
        note = f"skipped: {n} images; k={max(min_k, int(round(top_fraction * n)))} needs at least {2 * max(min_k, 1)}"
        return GapEstimate(class_index, math.nan, math.nan, math.nan, False, 0, math.nan, math.nan, n, note=note)
    order = np.argsort(-scores, kind="stable")
    top, bottom = order[:k], order[::-1][:k]
    top_correct, bottom_correct = correct[top].astype(float), correct[bottom].astype(float)
    gap = top_correct.mean() - bottom_correct.mean()
    resampled = rng.integers(0, k, size=(n_bootstrap, 2, k))
    boot = top_correct[resampled[:, 0]].mean(1) - bottom_correct[resampled[:, 1]].mean(1)
    alpha = 1 - confidence
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    significant = bool(low > 0 or high < 0)
    note = ""
    if significant and gap < 0:
        note = "negative gap: the most spurious images are misclassified more often (possible label noise or feature collision)"
    return GapEstimate(
        class_index=class_index,
        gap=float(gap),
        ci_low=float(low),
        ci_high=float(high),
        significant=significant,
        k=k,
        top_accuracy=float(top_correct.mean()),
        bottom_accuracy=float(bottom_correct.mean()),
        n_images=n,
        top_indices=[int(i) for i in np.asarray(indices)[top]],
        bottom_indices=[int(i) for i in np.asarray(indices)[bottom]],
        note=note,
    )


def class_gaps(
    scores: np.ndarray,
    labels: np.ndarray,
    correct: np.ndarray,
    config: GapConfig,
    rng: np.random.Generator,
) -> dict[int, GapEstimate]:
    """Gaps of every class that has finite spuriosity scores.

    Args:
        scores: float ``(N,)`` spuriosity (NaN for classes without spurious features).
        labels: int ``(N,)``.
        correct: bool ``(N,)``.
        config: k and bootstrap settings.
        rng: random generator.

    Returns:
        class index -> :class:`GapEstimate`; classes with only NaN scores are absent;
        classes too small get a NaN gap with a note (and a logged warning).
    """
    result = {}
    for c in np.unique(labels):
        if c < 0:  # unreadable images
            continue
        members = np.flatnonzero(labels == c)
        if not np.isfinite(scores[members]).any():
            continue
        estimate = spurious_gap(
            scores[members], correct[members], members, int(c),
            top_fraction=config.top_fraction, min_k=config.min_k,
            n_bootstrap=config.n_bootstrap, confidence=config.confidence, rng=rng,
        )
        if estimate.note.startswith("skipped"):
            logger.warning("class %d gap %s; lower `gaps.min_k` or add images", c, estimate.note)
        result[int(c)] = estimate
    return result


@dataclass(frozen=True)
class GapResult:
    """Output of :func:`run_gaps`: class index -> :class:`GapEstimate` on the evaluation split."""

    gaps: dict[int, GapEstimate]


def run_gaps(scores: np.ndarray, labels: np.ndarray, correct: np.ndarray, config: GapConfig, rng: np.random.Generator) -> GapResult:
    """The gap stage on the evaluation split: :func:`class_gaps` under the stage naming.

    Args:
        scores: float ``(N,)`` spuriosity of the evaluation split.
        labels: int ``(N,)``.
        correct: bool ``(N,)`` the audited model's correctness.
        config: k and bootstrap settings.
        rng: random generator of the bootstrap.

    Returns:
        A :class:`GapResult`.
    """
    return GapResult(gaps=class_gaps(scores, labels, correct, config, rng))
