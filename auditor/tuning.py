"""Head tuning on cached features: ours (low spuriosity) and baselines (random, error).

Only the head is tuned, on the cached activations, starting from the model's own
head. Every few epochs the validation spurious gap is measured; tuning stops once
every class's gap is below ``target_gap``, and the kept head is the checkpoint with
the smallest worst gap among those whose validation accuracy stayed within
``max_accuracy_drop`` of the original (the original head when none did).
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from auditor.config import TuningConfig
from auditor.errors import ConfigError
from auditor.features import FeatureCache
from auditor.results import TuningResult

logger = logging.getLogger(__name__)

SELECTIONS = ("low_spuriosity", "random", "error")


def fit_head(
    activations: np.ndarray,
    labels: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    feature_mask: np.ndarray | None = None,
    balanced: bool = False,
    should_stop: Callable[[int, np.ndarray, np.ndarray], bool] | None = None,
    check_every: int = 10,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Fit a linear head by full-batch Adam on cross-entropy, starting from ``(weight, bias)``.

    Args:
        activations: float ``(n, D)`` training features.
        labels: int ``(n,)``.
        weight: float ``(K, D)`` initial weight; bias: float ``(K,)`` initial bias.
        epochs: maximum epochs.
        lr: Adam learning rate.
        weight_decay: L2 penalty.
        feature_mask: bool ``(D,)``; features set to zero in front of the head when False.
        balanced: weight the loss so every class counts equally.
        should_stop: called every ``check_every`` epochs with (epoch, weight, bias); True stops.
        check_every: epochs between ``should_stop`` calls.

    Returns:
        ``(weight (K, D), bias (K,), epochs_run)`` as float32 numpy arrays.
    """
    x = torch.from_numpy(np.array(activations, dtype=np.float32))  # a copy: cached memmaps are read-only
    y = torch.from_numpy(np.array(labels, dtype=np.int64))
    if feature_mask is not None:
        x = x * torch.as_tensor(np.asarray(feature_mask, np.float32))
    w = torch.tensor(np.asarray(weight, np.float32), requires_grad=True)
    b = torch.tensor(np.asarray(bias, np.float32), requires_grad=True)
    class_weight = None
    if balanced:
        counts = torch.bincount(y, minlength=w.shape[0]).float()
        class_weight = torch.where(counts > 0, counts.sum() / (counts.clamp(min=1) * (counts > 0).sum()), torch.zeros_like(counts))
    optimizer = torch.optim.Adam([w, b], lr=lr)
    epoch = 0
    for epoch in range(1, epochs + 1):
        loss = F.cross_entropy(x @ w.T + b, y, weight=class_weight) + weight_decay * (w**2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if feature_mask is not None:
            with torch.no_grad():
                w[:, ~torch.as_tensor(np.asarray(feature_mask, bool))] = 0
        if should_stop is not None and epoch % check_every == 0:
            if should_stop(epoch, w.detach().numpy().copy(), b.detach().numpy().copy()):
                break
    return w.detach().numpy(), b.detach().numpy(), epoch


def select_tuning_images(
    method: str,
    labels: np.ndarray,
    scores: np.ndarray,
    correct: np.ndarray,
    n_per_class: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Indices of the training images a tuning method uses.

    Args:
        method: "low_spuriosity" (lowest spuriosity per class; random for classes
            without a spurious feature), "random", or "error" (misclassified images of the
            class first, filled up with random ones).
        labels: int ``(N,)``.
        scores: float ``(N,)`` spuriosity (NaN for classes without spurious features).
        correct: bool ``(N,)``.
        n_per_class: images per class.
        rng: random generator.

    Returns:
        Sorted int64 indices.

    Raises:
        ConfigError: unknown method.
    """
    if method not in SELECTIONS:
        raise ConfigError(f"unknown tuning method {method!r}; choose one of {list(SELECTIONS)}")
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        shuffled = rng.permutation(members)
        if method == "low_spuriosity" and np.isfinite(scores[members]).all():
            picked = members[np.argsort(scores[members], kind="stable")[:n_per_class]]
        elif method == "error":
            errors = shuffled[~correct[shuffled]]
            rest = shuffled[correct[shuffled]]
            picked = np.concatenate([errors, rest])[:n_per_class]
        else:
            picked = shuffled[:n_per_class]
        chosen.append(picked)
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def decile_accuracy(scores: np.ndarray, labels: np.ndarray, correct: np.ndarray) -> list[float | None]:
    """Accuracy per spuriosity decile (deciles taken within each class, then pooled; 0 = least spurious)."""
    deciles = np.full(len(scores), -1)
    for c in np.unique(labels):
        members = np.flatnonzero((labels == c) & np.isfinite(scores))
        if len(members) < 10:
            continue
        ranks = np.argsort(np.argsort(scores[members], kind="stable"), kind="stable")
        deciles[members] = ranks * 10 // len(members)
    return [float(correct[deciles == d].mean()) if (deciles == d).any() else None for d in range(10)]


def head_metrics(
    weight: np.ndarray,
    bias: np.ndarray,
    cache: FeatureCache,
    scores: np.ndarray,
    gap_fn: Callable[[np.ndarray], dict[int, float]],
) -> dict:
    """Accuracy, per-class and worst-class accuracy, gaps and decile accuracy of a head on a cache."""
    predictions = (np.asarray(cache.activations) @ weight.T + bias).argmax(1)
    correct = predictions == cache.labels
    per_class = {int(c): float(correct[cache.labels == c].mean()) for c in np.unique(cache.labels)}
    gaps = gap_fn(correct)
    finite = [g for g in gaps.values() if np.isfinite(g)]
    return {
        "accuracy": float(correct.mean()),
        "worst_class_accuracy": min(per_class.values()),
        "class_accuracy": per_class,
        "mean_gap": float(np.mean(finite)) if finite else None,
        "max_gap": float(np.max(finite)) if finite else None,
        "gaps": gaps,
        "decile_accuracy": decile_accuracy(scores, cache.labels, correct),
    }


def tune_head(
    method: str,
    weight: np.ndarray,
    bias: np.ndarray,
    train: FeatureCache,
    train_scores: np.ndarray,
    val: FeatureCache,
    val_scores: np.ndarray,
    gap_fn: Callable[[np.ndarray], dict[int, float]],
    config: TuningConfig,
    rng: np.random.Generator,
) -> tuple[TuningResult, np.ndarray, np.ndarray]:
    """Tune a copy of the head with one selection method; early-stopped on the validation gap.

    Args:
        method: "low_spuriosity", "random" or "error".
        weight, bias: the model's head ``(K, D)``, ``(K,)``.
        train: training FeatureCache; train_scores its spuriosity ``(N,)``.
        val: validation FeatureCache; val_scores its spuriosity ``(M,)``.
        gap_fn: bool correct ``(M,)`` -> class -> gap on the validation split.
        config: tuning settings.
        rng: random generator.

    Returns:
        ``(TuningResult, tuned weight, tuned bias)``.
    """
    start = time.perf_counter()
    selected = select_tuning_images(method, train.labels, train_scores, train.correct, config.n_per_class, rng)
    before = head_metrics(weight, bias, val, val_scores, gap_fn)
    floor = before["accuracy"] - config.max_accuracy_drop
    best = {"weight": weight, "bias": bias, "max_gap": before["max_gap"] if before["max_gap"] is not None else np.inf, "epoch": 0}
    reached = {"value": False}

    def should_stop(epoch: int, w: np.ndarray, b: np.ndarray) -> bool:
        metrics = head_metrics(w, b, val, val_scores, gap_fn)
        worst = metrics["max_gap"] if metrics["max_gap"] is not None else -np.inf
        if metrics["accuracy"] >= floor and worst < best["max_gap"]:
            best.update(weight=w, bias=b, max_gap=worst, epoch=epoch)
        if metrics["accuracy"] >= floor and worst < config.target_gap:
            reached["value"] = True
            return True
        return False

    _, _, epochs_run = fit_head(
        train.activations[selected], train.labels[selected], weight, bias,
        epochs=config.epochs, lr=config.lr, weight_decay=config.weight_decay, should_stop=should_stop,
    )
    after = head_metrics(best["weight"], best["bias"], val, val_scores, gap_fn)
    result = TuningResult(
        method=method,
        n_train_images=int(len(selected)),
        epochs=int(best["epoch"]),
        stopped_early=reached["value"],
        seconds=time.perf_counter() - start,
        before=before,
        after=after,
        gaps_after=after["gaps"],
    )
    logger.info("tuning %s: accuracy %.3f -> %.3f, max gap %s -> %s (epoch %d of %d)", method,
                before["accuracy"], after["accuracy"], before["max_gap"], after["max_gap"], best["epoch"], epochs_run)
    return result, best["weight"], best["bias"]
