"""Spuriosity rankings: per class, how strongly each image shows the class's spurious cues."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from auditor.config import RankingConfig
from auditor.errors import ConfigError

logger = logging.getLogger(__name__)


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


def pooled_covariance(activations: np.ndarray, labels: np.ndarray, max_rows: int = 100_000,
                      chunk_size: int = 8192) -> np.ndarray:
    """The classes' pooled within-class covariance of the features (each class centred on its own mean).

    Accumulated ``chunk_size`` rows at a time, so a memory-mapped feature cache is never loaded whole; above
    ``max_rows`` labelled rows an evenly spaced subset of that many is used.

    Args:
        activations: float ``(N, D)`` (a memory map is fine).
        labels: int ``(N,)``; rows with a negative label are left out.
        max_rows: most rows used.
        chunk_size: rows per step.

    Returns:
        float64 ``(D, D)``.

    Raises:
        ValueError: no more labelled rows than classes.
    """
    labels = np.asarray(labels)
    rows = np.flatnonzero(labels >= 0)
    if len(rows) > max_rows:
        rows = rows[np.linspace(0, len(rows) - 1, max_rows).round().astype(int)]
    classes, inverse = np.unique(labels[rows], return_inverse=True)
    if len(rows) <= len(classes):
        raise ValueError(f"a pooled covariance needs more labelled rows ({len(rows)}) than classes ({len(classes)})")
    dims = activations.shape[1]
    gram, sums = np.zeros((dims, dims)), np.zeros((len(classes), dims))
    counts = np.bincount(inverse, minlength=len(classes)).astype(np.float64)
    for start in range(0, len(rows), chunk_size):
        block = np.asarray(activations[rows[start:start + chunk_size]], np.float64)
        gram += block.T @ block
        np.add.at(sums, inverse[start:start + chunk_size], block)
    scatter = gram - (sums.T / counts) @ sums
    return scatter / (len(rows) - len(classes))


def whitened_directions(directions: dict[int, np.ndarray], covariance: np.ndarray,
                        shrinkage: float) -> dict[int, np.ndarray]:
    """Linear discriminant weights of each cue direction: ``(covariance + ridge * I)^-1 direction``.

    ``ridge`` is ``shrinkage`` times the covariance's mean variance, so features that vary a lot within classes count
    less. The covariance is decomposed once for every class.

    Args:
        directions: class -> float ``(D,)`` cue direction (``labeling.ranking_directions``).
        covariance: float ``(D, D)`` (:func:`pooled_covariance`).
        shrinkage: at least 0.

    Returns:
        class -> float64 ``(D,)`` weights.

    Raises:
        ValueError: negative ``shrinkage`` or shapes that do not match.
    """
    if shrinkage < 0:
        raise ValueError(f"shrinkage must be at least 0; got {shrinkage}")
    covariance = np.asarray(covariance, np.float64)
    dims = covariance.shape[0]
    if covariance.shape != (dims, dims):
        raise ValueError(f"covariance of shape {covariance.shape} is not square")
    mean_variance = float(np.trace(covariance)) / dims
    ridge = shrinkage * (mean_variance if mean_variance > 0 else 1.0)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    inverse_spectrum = 1.0 / np.maximum(eigenvalues + ridge, 1e-12)
    weights = {}
    for c, direction in directions.items():
        direction = np.asarray(direction, np.float64)
        if direction.shape != (dims,):
            raise ValueError(f"class {c}: direction of shape {direction.shape} does not match {dims} features")
        weights[c] = eigenvectors @ (inverse_spectrum * (eigenvectors.T @ direction))
    return weights


def projection_scores(activations: np.ndarray, labels: np.ndarray, weights: dict[int, np.ndarray]) -> np.ndarray:
    """Each image's projection on its class's weights (:func:`whitened_directions`), z-scored within the class.

    Args:
        activations: float ``(N, D)`` (a memory map is fine: only each class's rows are read).
        labels: int ``(N,)``.
        weights: class -> float ``(D,)``.

    Returns:
        float64 ``(N,)``; NaN for images of classes without weights.

    Raises:
        ValueError: weights whose length is not the number of features.
    """
    labels = np.asarray(labels)
    dims = activations.shape[1]
    scores = np.full(len(labels), np.nan)
    for c, weight in weights.items():
        if weight.shape != (dims,):
            raise ValueError(f"class {c}: weights of shape {weight.shape} do not match {dims} features")
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            continue
        projection = np.asarray(activations[members], np.float64) @ weight
        spread = projection.std()
        scores[members] = (projection - projection.mean()) / (spread if spread > 0 else 1.0)
    return scores


def direction_scores(activations: np.ndarray, labels: np.ndarray, directions: dict[int, np.ndarray],
                     covariance: np.ndarray, shrinkage: float) -> np.ndarray:
    """Each image's projection on its class's whitened cue direction, z-scored within the class
    (:func:`whitened_directions`, then :func:`projection_scores`).

    Args:
        activations: float ``(N, D)`` (a memory map is fine: only each class's rows are read).
        labels: int ``(N,)``.
        directions: class -> float ``(D,)`` cue direction (``labeling.ranking_directions``).
        covariance: float ``(D, D)`` (:func:`pooled_covariance`).
        shrinkage: at least 0.

    Returns:
        float64 ``(N,)``; NaN for images of classes without a direction.

    Raises:
        ValueError: negative ``shrinkage`` or shapes that do not match.

    Example:
        >>> acts = np.array([[0., 1.], [0., 3.], [5., 0.]])
        >>> direction_scores(acts, np.array([0, 0, 1]), {0: np.array([0., 1.])}, np.eye(2), 1.0).round(2).tolist()
        [-1.0, 1.0, nan]
    """
    dims = activations.shape[1]
    if np.shape(covariance) != (dims, dims):
        raise ValueError(f"covariance of shape {np.shape(covariance)} does not match {dims} features")
    return projection_scores(activations, labels, whitened_directions(directions, covariance, shrinkage))


def combine_scores(*scores: np.ndarray) -> np.ndarray:
    """Mean of several per-image score arrays, ignoring NaN entries (NaN where all are NaN)."""
    stacked = np.vstack([np.asarray(s, np.float64) for s in scores])
    valid = np.isfinite(stacked)
    total = np.where(valid, stacked, 0.0).sum(0)
    count = valid.sum(0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@dataclass(frozen=True)
class RankingResult:
    """Output of :func:`run_ranking`.

    Attributes:
        scores: split -> float64 ``(N,)`` spuriosity.
        section: the report's "ranking" section, plain JSON: ``source``, ``feature_score``, ``direction_shrinkage``,
            ``direction_reference``, ``by_direction`` and ``by_mean`` (the classes each score
            ranked), ``cue_directions`` (class with spurious features -> its cue direction, a list of D floats, whichever
            score ranked it) and ``direction_errors`` (each component's standard error over the donor backgrounds
            drawn, where known).
    """

    scores: dict[str, np.ndarray]
    section: dict = field(default_factory=dict)


def run_ranking(
    activations: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    spurious: dict[int, list[int]],
    concept_scores: dict[str, np.ndarray] | None,
    config: RankingConfig,
    cue_directions: dict[int, np.ndarray] | None = None,
    covariance_split: str = "train",
    direction_errors: dict[int, np.ndarray] | None = None,
) -> RankingResult:
    """The ranking stage: each image's spuriosity, from neural features, concepts or both.

    Args:
        activations: split -> float ``(N, D)`` cached features.
        labels: split -> int ``(N,)`` (negative rows get NaN).
        spurious: class -> features judged spurious; only these classes are ranked.
        concept_scores: split -> float ``(N,)`` concept spuriosity from the concept stage, or None.
        config: ``source`` is "features", "concepts" or "both"; ``feature_score`` "mean" or "cue_direction".
        cue_directions: class -> float ``(D,)`` from the verdict stage; with ``feature_score: cue_direction`` they
            rank their classes (the others keep the mean score).
        covariance_split: the split whose pooled within-class covariance whitens the directions; where it has no
            more labelled rows than classes, every class is ranked by the mean, with a warning.
        direction_errors: class -> float ``(D,)`` standard errors of the directions, kept in the report's section.

    Returns:
        A :class:`RankingResult`.

    Raises:
        ConfigError: "concepts"/"both" without concept scores.
    """
    if config.source != "features" and concept_scores is None:
        raise ConfigError(f"`ranking.source` is {config.source!r}, which needs the concept stage; set `concepts.enabled: true`")
    directions = {c: d for c, d in (cue_directions or {}).items() if spurious.get(c)}
    weights: dict[int, np.ndarray] = {}
    if config.feature_score == "cue_direction" and directions and config.source != "concepts":
        if covariance_split not in activations:
            raise ConfigError(f"the cue directions are whitened on the {covariance_split!r} split, which is missing")
        try:
            covariance = pooled_covariance(activations[covariance_split], labels[covariance_split])
        except ValueError as error:
            logger.warning("ranking every class by the mean of its spurious features: %s", error)
        else:
            weights = whitened_directions(directions, covariance, config.direction_shrinkage)
    scores = {}
    for split, acts in activations.items():
        split_labels = np.asarray(labels[split])
        feature_scores = spuriosity_scores(acts, split_labels, spurious)
        if weights:
            projected = projection_scores(acts, split_labels, weights)
            feature_scores = np.where(np.isfinite(projected), projected, feature_scores)
        if config.source == "features":
            scores[split] = feature_scores
        elif config.source == "concepts":
            scores[split] = np.asarray(concept_scores[split], np.float64)
        else:
            scores[split] = combine_scores(feature_scores, concept_scores[split])
        scores[split][split_labels < 0] = np.nan
    by_direction = sorted(int(c) for c in weights)
    section = {
        "source": config.source,
        "feature_score": config.feature_score,
        "direction_shrinkage": config.direction_shrinkage,
        "direction_reference": config.direction_reference,
        "by_direction": by_direction,
        "by_mean": sorted(int(c) for c, features in spurious.items() if features and int(c) not in by_direction),
        "cue_directions": {str(c): [float(x) for x in directions[c]] for c in sorted(directions)},
        "direction_errors": {str(c): [float(x) for x in direction_errors[c]] for c in sorted(directions)
                             if c in (direction_errors or {})},
    }
    return RankingResult(scores=scores, section=section)
