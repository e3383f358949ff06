"""Head tuning on cached features: ours (low spuriosity) and baselines (random, error).

The stage's entry is :func:`run_tuning`.

Only the head is tuned, on the cached activations, starting from the model's own
head. Every few epochs the validation spurious gap is measured; tuning stops once
every class's gap is below ``target_gap``, and the kept head is the checkpoint with
the smallest worst gap among those whose validation accuracy stayed within
``max_accuracy_drop`` of the original (the original head when none did).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from auditor.config import GapConfig, TuningConfig
from auditor.errors import ConfigError
from auditor.evaluation import head_metrics
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
        if c < 0:  # unreadable images
            continue
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


def tune_head(
    method: str,
    weight: np.ndarray,
    bias: np.ndarray,
    train: FeatureCache,
    train_scores: np.ndarray,
    val: FeatureCache,
    val_scores: np.ndarray,
    config: TuningConfig,
    gap_config: GapConfig,
    rng: np.random.Generator,
) -> tuple[TuningResult, np.ndarray, np.ndarray]:
    """Tune a copy of the head with one selection method; early-stopped on the validation gap.

    Args:
        method: "low_spuriosity", "random" or "error".
        weight, bias: the model's head ``(K, D)``, ``(K,)``.
        train: training FeatureCache; train_scores its spuriosity ``(N,)``.
        val: validation FeatureCache; val_scores its spuriosity ``(M,)``.
        config: tuning settings.
        gap_config: k of the gaps measured for early stopping.
        rng: random generator.

    Returns:
        ``(TuningResult, tuned weight (K, D), tuned bias (K,))``.
    """
    start = time.perf_counter()
    selected = select_tuning_images(method, train.labels, train_scores, train.correct, config.n_per_class, rng)
    val_activations = np.asarray(val.activations)

    def metrics_of(w: np.ndarray, b: np.ndarray) -> dict:
        return head_metrics(w, b, val_activations, val.labels, val_scores, gap_config)

    before = metrics_of(weight, bias)
    floor = before["accuracy"] - config.max_accuracy_drop
    best = {"weight": weight, "bias": bias, "max_gap": before["max_gap"] if before["max_gap"] is not None else np.inf, "epoch": 0}
    reached = {"value": False}

    def should_stop(epoch: int, w: np.ndarray, b: np.ndarray) -> bool:
        metrics = metrics_of(w, b)
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
    after = metrics_of(best["weight"], best["bias"])
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
    return result, np.asarray(best["weight"], np.float32), np.asarray(best["bias"], np.float32)


@dataclass(frozen=True)
class TuningStageResult:
    """Output of :func:`run_tuning`.

    Attributes:
        results: method -> before/after metrics ("low_spuriosity" first, then the baselines).
        heads: method -> ``(weight float32 (K, D), bias float32 (K,))`` of the kept head.
    """

    results: dict[str, TuningResult]
    heads: dict[str, tuple[np.ndarray, np.ndarray]]


def run_tuning(
    head: tuple[np.ndarray, np.ndarray],
    train: FeatureCache,
    train_scores: np.ndarray,
    evaluation: FeatureCache,
    evaluation_scores: np.ndarray,
    config: TuningConfig,
    gap_config: GapConfig,
    seed: int,
) -> TuningStageResult:
    """The head-tuning stage: low-spuriosity tuning and every configured baseline.

    Every method starts from a generator seeded with ``seed``, so adding a baseline never
    changes another method's result.

    Args:
        head: the model's head ``(weight (K, D), bias (K,))``.
        train: training FeatureCache; train_scores: its spuriosity ``(N,)``.
        evaluation: the cache early stopping and the reported metrics use (validation when
            given); evaluation_scores: its spuriosity ``(M,)``.
        config: tuning settings (``baselines`` lists the extra methods).
        gap_config: k of the gaps.
        seed: seed of every method's generator.

    Returns:
        A :class:`TuningStageResult`.
    """
    weight, bias = head
    results, heads = {}, {}
    for method in ["low_spuriosity", *config.baselines]:
        result, w, b = tune_head(method, weight, bias, train, train_scores, evaluation, evaluation_scores,
                                 config, gap_config, np.random.default_rng(seed))
        results[method], heads[method] = result, (w, b)
    return TuningStageResult(results=results, heads=heads)
