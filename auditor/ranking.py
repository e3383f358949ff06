"""Spuriosity rankings: per class, how strongly each image shows the class's spurious cues."""

from __future__ import annotations

import numpy as np


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
