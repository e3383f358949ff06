"""Spuriosity rankings: per class, how strongly each image shows the class's spurious cues."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor.config import RankingConfig
from auditor.errors import ConfigError


@dataclass(frozen=True)
class SpuriosityRanking:
    """One split's spuriosity ranking, as measured by an audit.

    Attributes:
        split: "train" or "val".
        scores: float64 ``(N,)`` spuriosity per image in dataset order (NaN: class without spurious feature).
        labels: int64 ``(N,)`` the labels the ranking was computed with, or None when unknown.
    """

    split: str
    scores: np.ndarray
    labels: np.ndarray | None = None


def class_zscores(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Z-score each column within each class (class mean and std; std 0 -> 1).

    Args:
        values: float ``(N, F)``.
        labels: int ``(N,)``.

    Returns:
        float64 ``(N, F)``.
    """
    values = np.asarray(values, np.float64)
    out = np.empty_like(values)
    for c in np.unique(labels):
        members = labels == c
        block = values[members]
        std = block.std(0)
        out[members] = (block - block.mean(0)) / np.where(std > 0, std, 1.0)
    return out


def spuriosity_scores(activations: np.ndarray, labels: np.ndarray, spurious: dict[int, list[int]]) -> np.ndarray:
    """Mean class-z-scored activation of each image's class's spurious features.

    Args:
        activations: float ``(N, D)``.
        labels: int ``(N,)``.
        spurious: class -> spurious feature indices.

    Returns:
        float64 ``(N,)``; NaN for images whose class has no spurious feature.

    Example:
        >>> acts = np.array([[0., 1.], [0., 3.], [5., 0.]])
        >>> spuriosity_scores(acts, np.array([0, 0, 1]), {0: [1]}).round(2).tolist()
        [-1.0, 1.0, nan]
    """
    labels = np.asarray(labels)
    scores = np.full(len(labels), np.nan)
    for c, features in spurious.items():
        members = np.flatnonzero(labels == c)
        if not features or len(members) == 0:
            continue
        z = class_zscores(np.asarray(activations[members][:, features], np.float64), np.zeros(len(members), int))
        scores[members] = z.mean(1)
    return scores


def combine_scores(*scores: np.ndarray) -> np.ndarray:
    """Mean of several per-image score arrays, ignoring NaN entries (NaN where all are NaN)."""
    stacked = np.vstack([np.asarray(s, np.float64) for s in scores])
    valid = np.isfinite(stacked)
    total = np.where(valid, stacked, 0.0).sum(0)
    count = valid.sum(0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@dataclass(frozen=True)
class RankingResult:
    """Output of :func:`run_ranking`: split -> float64 ``(N,)`` spuriosity."""

    scores: dict[str, np.ndarray]


def run_ranking(
    activations: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    spurious: dict[int, list[int]],
    concept_scores: dict[str, np.ndarray] | None,
    config: RankingConfig,
) -> RankingResult:
    """The ranking stage: each image's spuriosity, from neural features, concepts or both.

    Args:
        activations: split -> float ``(N, D)`` cached features.
        labels: split -> int ``(N,)`` (negative rows get NaN).
        spurious: class -> features judged spurious.
        concept_scores: split -> float ``(N,)`` concept spuriosity from the concept stage, or None.
        config: ``source`` is "features", "concepts" or "both".

    Returns:
        A :class:`RankingResult`.

    Raises:
        ConfigError: "concepts"/"both" without concept scores.
    """
    if config.source != "features" and concept_scores is None:
        raise ConfigError(f"`ranking.source` is {config.source!r}, which needs the concept stage; set `concepts.enabled: true`")
    scores = {}
    for split, acts in activations.items():
        split_labels = np.asarray(labels[split])
        feature_scores = spuriosity_scores(acts, split_labels, spurious)
        if config.source == "features":
            scores[split] = feature_scores
        elif config.source == "concepts":
            scores[split] = np.asarray(concept_scores[split], np.float64)
        else:
            scores[split] = combine_scores(feature_scores, concept_scores[split])
        scores[split][split_labels < 0] = np.nan
    return RankingResult(scores=scores)
