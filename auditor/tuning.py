"""Head tuning on cached features: ours (low spuriosity) and baselines (random, error).

The stage's entry is :func:`run_tuning`. Only the head is tuned, on the cached activations;
the user's model is never modified. Two designs (``tuning.mode``):

* **reweight** (default): DFR-style last-layer retraining (Kirichenko et al., 2023) without
  group labels. The validation images are split in two halves, seeded and stratified by class
  (``tuning.validation_fit_fraction`` of each class goes to the first). Each method defines
  label-free groups within every class (:func:`tuning_groups`): low-spuriosity tuning splits a
  class with spurious features at the Otsu cut of its spuriosity, so the rare low-spuriosity
  images weigh as much as the many high ones; "random" uses the class alone (plain
  class-balanced retraining, no spuriosity information); "error" splits by the model's own
  mistakes (JTT-style). A logistic regression on standardised features is fitted on the first
  half with group-balanced sample weights for each ``tuning.inverse_l2_grid`` value; each
  candidate and the original head are scored on the second half by the worst of the method's
  label-free groups (``tuning.selection``), and with ``tuning.refit_on_validation`` the winner's
  grouping and ``C`` are refitted on all validation images. With ``tuning.groups: auto`` (the
  default) low-spuriosity tuning also fits heads balancing the model's mistakes, when the audit
  found a spurious feature (:func:`label_free_groupings`); retrained heads are compared by their
  worst group over both groupings, and none is kept that loses to the original head on the
  spuriosity groups (:func:`reweight_head`). When validation holds about as few low-spuriosity
  images as training (:func:`low_spuriosity_share` below ``tuning.skewed_validation_share``),
  the least spurious training images of each class join the fitting half
  (``tuning.training_images: when_skewed``, :func:`training_rows`), and the heads fitted on the
  mistakes are preferred and compared by the mistakes, still under the floor on the spuriosity
  groups. With ``tuning.cross_fit`` (the default) every candidate is also fitted on the second
  half and scored on the first, so both halves judge it out of fold (with ``tuning.folds`` above 2, validation is
  dealt into that many class-stratified folds instead, each candidate judged on each fold by a head fitted on the
  others); the reported ``before`` /
  ``after`` figures are those out-of-fold predictions (on the held-out half only without it).
  Without validation data, the training split is halved instead (a warning says so: features of
  memorised images).
* **select**: the paper-literal rule of Moayeri et al.: fine-tune (Adam) on the ``n_per_class``
  least spurious training images per class, plus ``val_fit_per_class_fraction`` of each class
  of the first validation half picked by the same rule, from the model's head and from zero
  (``tuning.start_from``), with checkpoints scored on the held-out half.

In both, the kept head is the best candidate among those that stayed within
``max_accuracy_drop`` of the original head on the held-out half (reweight: mean label-free
group accuracy; select: accuracy), and the original head is the first candidate, so the kept
head never scores worse than it on the held-out criterion. Why reweighting does not floor plain
accuracy: on a validation split as skewed as training, plain accuracy rewards the cue, and that
floor blocked the debiasing heads (proving ground, skewed validation: error reweighting's mean
test worst group 0.246 with it, 0.286 with the mean-group floor). The floor's width (0.1) was chosen
leave-one-world-out at stop 28: the 0.02 used before blocked every retrained head of a weak model
whose heads refitted on half of validation lose a few points of mean group accuracy.

How the defaults were chosen: see ``benchmarks/RESULTS.md`` ("Proving ground", tuning design
chosen leave-one-world-out; every fold chose reweighting with refit and ``groups: auto``). On
the nine proving worlds x 3 seeds with balanced validation, the reweighting design reached the
oracle DFR's test worst-group accuracy on average, and the select design stayed 18 points below
it; the Otsu split needs no threshold. With validation as skewed as training, low-spuriosity
tuning stayed 4 points below the oracle on average; the error baseline reached it, at a cost of
6 points of worst group on the cue-free world. The skew check narrows that gap (0.251 -> 0.269
mean worst group, the oracle 0.289) without the cost: it prefers the mistakes only on a skewed
split, only after a spurious verdict, and only within the floor. On a skewed split the
training images' low-spuriosity tail joins the fitting half since stop 30 (17 proving worlds,
chosen in 14 of 17 leave-one-world-out folds: mean test worst group 0.432 -> 0.458 with skewed
validation, balanced validation untouched). The "select" defaults (100
training images per class, 40% of the fitting half, one size, both starts, worst-decile
selection) were chosen on the quick world and a planted feature set.

Known limit: spuriosity only ranks images of classes with a spurious verdict, so groups such
as "a control class's images that carry another class's cue" are invisible to the
label-free rules; the oracle DFR, which sees the true groups, is not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from auditor.config import GapConfig, TuningConfig
from auditor.errors import ConfigError
from auditor.evaluation import correctness_metrics, head_predictions
from auditor.features import FeatureCache
from auditor.results import TuningResult

logger = logging.getLogger(__name__)

SELECTIONS = ("low_spuriosity", "random", "error", "afr")
AFR_GAMMAS = (1.0, 2.0, 4.0, 8.0)
"""Temperatures of the AFR-style baseline's weights ``exp(-gamma * p)``, each tried with every ``inverse_l2_grid`` value."""


def stratified_folds(labels: np.ndarray, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Deal rows into ``n_folds`` folds, each class dealt round them from a random start.

    Args:
        labels: int ``(M,)`` class of each row.
        n_folds: number of folds (at least 2).
        rng: random generator (the folds are reproducible from it).

    Returns:
        int64 ``(M,)`` fold of each row, in ``[0, n_folds)``; fold sizes within a class differ by at most one.

    Example:
        >>> folds = stratified_folds(np.repeat([0, 1], 10), 5, np.random.default_rng(0))
        >>> np.bincount(folds).tolist()
        [4, 4, 4, 4, 4]
    """
    labels = np.asarray(labels)
    folds = np.zeros(len(labels), np.int64)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        folds[members] = (np.arange(len(members)) + rng.integers(n_folds)) % n_folds
    return folds


def split_validation(labels: np.ndarray, fit_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split readable validation rows in two, stratified by class.

    Args:
        labels: int ``(M,)`` validation labels (negative rows, unreadable images, are left out).
        fit_fraction: share of each class's rows in the first (fitting) half, in ``[0, 1)``.
        rng: random generator (the split is reproducible from it).

    Returns:
        ``(fit_rows, held_out_rows)``, sorted int64 indices; ``fit_rows`` is empty when
        ``fit_fraction`` is 0. Each class keeps at least one held-out row.

    Example:
        >>> fit, held = split_validation(np.repeat([0, 1], 10), 0.5, np.random.default_rng(0))
        >>> len(fit), len(held), len(set(fit) & set(held))
        (10, 10, 0)
    """
    labels = np.asarray(labels)
    fit, held = [], []
    for c in np.unique(labels[labels >= 0]):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_fit = min(int(round(fit_fraction * len(members))), len(members) - 1)
        fit.append(members[:n_fit])
        held.append(members[n_fit:])
    empty = np.zeros(0, np.int64)
    return (np.sort(np.concatenate(fit or [empty])).astype(np.int64),
            np.sort(np.concatenate(held or [empty])).astype(np.int64))


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
        if (should_stop is not None and epoch % check_every == 0
                and should_stop(epoch, w.detach().numpy().copy(), b.detach().numpy().copy())):
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
    if method == "afr":
        raise ConfigError("the `afr` baseline reweights every image and needs `tuning.mode: reweight`")
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
    *,
    val_fit_rows: np.ndarray | None = None,
    val_held_out_rows: np.ndarray | None = None,
    evaluated_on: str = "val",
) -> tuple[TuningResult, np.ndarray, np.ndarray]:
    """Tune a copy of the head with one selection method; early-stopped on the held-out gap.

    Args:
        method: "low_spuriosity", "random" or "error".
        weight, bias: the model's head ``(K, D)``, ``(K,)``.
        train: training FeatureCache; train_scores its spuriosity ``(N,)``.
        val: validation FeatureCache (the training cache when there is none); val_scores its
            spuriosity ``(M,)``.
        config: tuning settings.
        gap_config: k of the gaps measured for early stopping.
        rng: random generator.
        val_fit_rows: validation rows the head may also be fitted on (images picked among
            them by the same rule, ``config.val_fit_per_class_fraction`` of each class);
            None or empty: fit on training images only.
        val_held_out_rows: validation rows that score checkpoints and the reported metrics
            (default: every readable row not in ``val_fit_rows``).
        evaluated_on: name of the split the metrics are measured on, for the record.

    Returns:
        ``(TuningResult, tuned weight (K, D), tuned bias (K,))``. ``before`` / ``after``
        carry ``evaluated_on`` (split and rows, e.g. "val, held-out half") and
        ``n_evaluated``; ``after["fitted_on"]`` counts the fitted images by split.
    """
    start = time.perf_counter()
    val_labels = np.asarray(val.labels)
    val_fit_rows = np.zeros(0, np.int64) if val_fit_rows is None else np.asarray(val_fit_rows, np.int64)
    val_class_size = 0.0
    if len(val_fit_rows):
        per_class = np.bincount(val_labels[val_fit_rows], minlength=1)
        val_class_size = float(np.median(per_class[per_class > 0]))

    def pick(scale: float) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """Training (and validation-fit) images at ``scale`` times the configured numbers."""
        n_train = max(1, int(round(scale * config.n_per_class)))
        selected = select_tuning_images(method, train.labels, train_scores, train.correct, n_train, rng)
        xs, ys = [np.asarray(train.activations)[selected]], [np.asarray(train.labels)[selected]]
        counts = {"train": len(selected)}
        if len(val_fit_rows):
            n_pick = max(1, int(round(scale * config.val_fit_per_class_fraction * val_class_size)))
            picked = val_fit_rows[select_tuning_images(method, val_labels[val_fit_rows], np.asarray(val_scores)[val_fit_rows],
                                                       np.asarray(val.correct)[val_fit_rows], n_pick, rng)]
            xs.append(np.asarray(val.activations)[picked])
            ys.append(val_labels[picked])
            counts[evaluated_on] = len(picked)
        return np.concatenate(xs), np.concatenate(ys), counts

    if val_held_out_rows is None:
        held = np.setdiff1d(np.flatnonzero(val_labels >= 0), val_fit_rows)
    else:
        held = np.asarray(val_held_out_rows, np.int64)
    held_activations = np.asarray(val.activations)[held]
    held_labels, held_scores = val_labels[held], np.asarray(val_scores)[held]
    where = f"{evaluated_on}, held-out half" if len(val_fit_rows) else evaluated_on

    held_groups = tuning_groups(method, held_labels, held_scores, np.asarray(val.correct)[held])

    def metrics_of(w: np.ndarray, b: np.ndarray) -> dict:
        return held_out_metrics(w, b, held_activations, held_labels, held_scores, held_groups, gap_config)

    def criterion(metrics: dict) -> tuple[float, float]:
        return selection_score(config.selection, metrics)

    before = metrics_of(weight, bias)
    floor = before["accuracy"] - config.max_accuracy_drop
    best = {"weight": weight, "bias": bias, "score": criterion(before), "epoch": 0, "fitted_on": {}, "scale": None,
            "start": "model"}
    trial: dict = {}
    reached = {"value": False}

    def should_stop(epoch: int, w: np.ndarray, b: np.ndarray) -> bool:
        metrics = metrics_of(w, b)
        score = criterion(metrics)
        if metrics["accuracy"] >= floor and score < best["score"]:
            best.update(weight=w, bias=b, score=score, epoch=epoch, **trial)
        if config.selection == "gap" and metrics["accuracy"] >= floor and score[0] < config.target_gap:
            reached["value"] = True
            return True
        return False

    starts = {"model": (weight, bias), "scratch": (np.zeros_like(weight), np.zeros_like(bias))}
    names = ["model", "scratch"] if config.start_from == "best" else [config.start_from]
    epochs_run = 0
    for scale in config.size_scales:
        fit_x, fit_y, counts = pick(scale)
        for name in names:
            reached["value"] = False
            trial.update(fitted_on=counts, scale=scale, start=name)
            _, _, run = fit_head(
                fit_x, fit_y, *starts[name],
                epochs=config.epochs, lr=config.lr, weight_decay=config.weight_decay, should_stop=should_stop,
            )
            epochs_run += run
            if reached["value"]:
                break
        if reached["value"]:
            break
    after = metrics_of(best["weight"], best["bias"])
    for metrics in (before, after):
        metrics.update(evaluated_on=where, n_evaluated=len(held))
    after.update(fitted_on=best["fitted_on"], size_scale=best["scale"], start=best["start"] if best["scale"] is not None else None)
    result = TuningResult(
        method=method,
        n_train_images=int(sum(best["fitted_on"].values())),
        epochs=int(best["epoch"]),
        stopped_early=reached["value"],
        seconds=time.perf_counter() - start,
        before=before,
        after=after,
        gaps_after=after["gaps"],
    )
    logger.info("tuning %s: %s accuracy %.3f -> %.3f, max gap %s -> %s (epoch %d of %d; fitted on %s)", method, where,
                before["accuracy"], after["accuracy"], before["max_gap"], after["max_gap"], best["epoch"], epochs_run,
                after["fitted_on"])
    return result, np.asarray(best["weight"], np.float32), np.asarray(best["bias"], np.float32)


def otsu_threshold(values: np.ndarray) -> float:
    """The cut that best splits values into two modes (Otsu: maximal between-group variance).

    Args:
        values: float ``(n,)``; non-finite entries are ignored.

    Returns:
        The threshold; images strictly above it form the upper group. NaN with fewer than two
        distinct finite values.

    Example:
        >>> otsu_threshold(np.array([0.0, 0.1, 0.2, 5.0, 5.1]))
        0.2
    """
    v = np.sort(np.asarray(values, np.float64)[np.isfinite(values)])
    if len(v) < 2 or v[0] == v[-1]:
        return float("nan")
    n = len(v)
    below = np.arange(1, n)  # cut after position i - 1: v[:i] below, v[i:] above
    cumulative = np.cumsum(v)[:-1]
    mean_low = cumulative / below
    mean_high = (v.sum() - cumulative) / (n - below)
    between = below * (n - below) * (mean_high - mean_low) ** 2
    between[v[1:] == v[:-1]] = -1.0  # a cut must fall between distinct values
    return float(v[int(np.argmax(between))])


def tuning_groups(method: str, labels: np.ndarray, scores: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Label-free groups a reweighting method balances within each class (no cue or group labels).

    Args:
        method: "low_spuriosity": images above / at most the Otsu split of their class's
            spuriosity (classes without a spurious feature form one group); "random": the class
            alone (plain class-balanced retraining); "error" and "afr": misclassified / correctly classified.
        labels: int ``(N,)`` (negative rows get group -1).
        scores: float ``(N,)`` spuriosity (NaN for classes without spurious features).
        correct: bool ``(N,)`` the model's own predictions were right.

    Returns:
        int64 ``(N,)``: ``2 * class + flag``; -1 for negative labels.

    Raises:
        ConfigError: unknown method.
    """
    if method not in SELECTIONS:
        raise ConfigError(f"unknown tuning method {method!r}; choose one of {list(SELECTIONS)}")
    labels = np.asarray(labels)
    scores = np.asarray(scores, np.float64)
    flags = np.zeros(len(labels), np.int64)
    if method in ("error", "afr"):
        flags = (~np.asarray(correct, bool)).astype(np.int64)
    elif method == "low_spuriosity":
        for c in np.unique(labels[labels >= 0]):
            members = labels == c
            if np.isfinite(scores[members]).all():
                threshold = otsu_threshold(scores[members])
                if np.isfinite(threshold):
                    flags[members] = scores[members] > threshold
    groups = 2 * labels.astype(np.int64) + flags
    groups[labels < 0] = -1
    return groups


LOW_SPURIOSITY_GROUPS = ("auto", "spuriosity", "all")
TRAINING_TAIL = 0.1
"""The training quantile :func:`low_spuriosity_share` compares validation images against."""


def low_spuriosity_share(train_activations: np.ndarray, train_labels: np.ndarray, activations: np.ndarray,
                         labels: np.ndarray, spurious: dict[int, list[int]], tail: float = TRAINING_TAIL) -> float:
    """How much more low-spuriosity data a split holds than training: the evidence for ``tuning.skewed_validation_share``.

    For each class with spurious features, the share of its images in the split whose raw
    spuriosity (mean activation of the class's spurious features, not z-scored, so the two splits
    are comparable) falls below the ``tail`` quantile of the class's training images; the mean
    over classes. A split drawn like training gives about ``tail`` (more when the model's training
    features are memorised, which inflates them); one where the cue is often absent gives much
    more (on the proving ground 0.53-0.81 for validation at a 50% cue rate, 0.12-0.31 at the
    training rate of 95%).

    Args:
        train_activations: float ``(N, D)``; train_labels: int ``(N,)``.
        activations: float ``(M, D)`` of the split to judge (validation); labels: int ``(M,)``.
        spurious: class -> spurious feature indices.
        tail: the training quantile, in (0, 1).

    Returns:
        The mean share in [0, 1]; NaN when no class has spurious features and images in both splits.

    Example:
        >>> train = np.array([[1.0], [2.0], [3.0], [4.0]]); val = np.array([[0.0], [0.5], [3.0], [4.0]])
        >>> low_spuriosity_share(train, np.zeros(4, int), val, np.zeros(4, int), {0: [0]}, tail=0.25)
        0.5
    """
    train_labels, labels = np.asarray(train_labels), np.asarray(labels)
    shares = []
    for c, features in spurious.items():
        in_train, in_split = train_labels == c, labels == c
        if not features or not in_train.any() or not in_split.any():
            continue
        train_spuriosity = np.asarray(train_activations[in_train][:, features], np.float64).mean(1)
        split_spuriosity = np.asarray(activations[in_split][:, features], np.float64).mean(1)
        shares.append(float((split_spuriosity < np.quantile(train_spuriosity, tail)).mean()))
    return float(np.mean(shares)) if shares else float("nan")


def other_cue_scores(activations: np.ndarray, labels: np.ndarray, scores: np.ndarray,
                     spurious: dict[int, list[int]]) -> np.ndarray:
    """Spuriosity with the classes that have no spurious feature scored by the other classes' cues.

    The true groups of a class the audit found clean are "carries another class's cue or not"
    (its images behind a leaked cue are the ones a cue-driven head gets wrong), and the
    spuriosity of its own class cannot see them. Here each such image is scored by the strongest
    other class's spuriosity: for every class d with spurious features, the mean activation of
    d's spurious features, standardised by its mean and spread over d's own images; the maximum
    over d. Classes with spurious features keep ``scores``.

    Args:
        activations: float ``(N, D)``; labels: int ``(N,)``.
        scores: float ``(N,)`` spuriosity (NaN for classes without spurious features).
        spurious: class -> spurious feature indices.

    Returns:
        float64 ``(N,)``: ``scores`` with its NaN rows of labelled images filled where some class has
        spurious features (NaN stays where none has).

    Example:
        >>> acts = np.array([[1.0], [3.0], [0.0], [2.0]]); labels = np.array([0, 0, 1, 1])
        >>> other_cue_scores(acts, labels, np.array([1.0, 3.0, np.nan, np.nan]), {0: [0]}).tolist()
        [1.0, 3.0, -2.0, 0.0]
    """
    activations, labels = np.asarray(activations, np.float64), np.asarray(labels)
    out = np.asarray(scores, np.float64).copy()
    columns = []
    for d, features in spurious.items():
        own = labels == d
        if not features or own.sum() < 2:
            continue
        value = activations[:, features].mean(1)
        spread = value[own].std()
        columns.append((value - value[own].mean()) / (spread if spread > 0 else 1.0))
    if columns:
        fill = ~np.isfinite(out) & (labels >= 0)
        out[fill] = np.max(columns, axis=0)[fill]
    return out


def label_free_groupings(method: str, labels: np.ndarray, scores: np.ndarray, correct: np.ndarray,
                         low_spuriosity_groups: str = "auto") -> dict[str, np.ndarray]:
    """The label-free groupings a reweighting method may balance, by name (see :func:`tuning_groups`).

    "random", "error" and "afr" have one grouping each ("afr" is judged by the mistakes, like "error";
    its weights come from the model's confidence, see :func:`afr_weights`). Low-spuriosity tuning has the spuriosity
    grouping, and with ``low_spuriosity_groups="auto"`` also the model's mistakes ("error"), but
    only when the audit found a spurious feature in some class (a finite score): with no
    spuriosity evidence at all there is nothing to repair. The first grouping is the method's own:
    no kept head may lose to the original head on it. Why the mistakes never judge against the
    original head: it is wrong on every image of its own "mistakes" group, so judged by that
    group any change looks like progress; on a planted feature set with skewed validation that
    choice fell 18 points below ERM. With ``low_spuriosity_groups="all"`` the plain class-balanced
    heads ("random": each class one group, DFR without groups) are candidates too, judged like the rest.

    Args:
        method: "low_spuriosity", "random", "error" or "afr".
        labels: int ``(N,)``; scores: float ``(N,)`` spuriosity (NaN without spurious features);
        correct: bool ``(N,)`` the model was right.
        low_spuriosity_groups: "auto", "spuriosity" or "all" (``tuning.groups``).

    Returns:
        Ordered dict name -> int64 ``(N,)`` groups; names are "spuriosity", "random" or "error".

    Raises:
        ConfigError: unknown method or ``low_spuriosity_groups``.

    Example:
        >>> labels, correct = np.array([0, 0, 1, 1]), np.array([True, False, True, True])
        >>> list(label_free_groupings("low_spuriosity", labels, np.array([0., 1., 0., 1.]), correct))
        ['spuriosity', 'error']
        >>> list(label_free_groupings("low_spuriosity", labels, np.full(4, np.nan), correct))
        ['spuriosity']
        >>> list(label_free_groupings("low_spuriosity", labels, np.array([0., 1., 0., 1.]), correct, "all"))
        ['spuriosity', 'error', 'random']
    """
    if low_spuriosity_groups not in LOW_SPURIOSITY_GROUPS:
        raise ConfigError(f"`tuning.groups` must be one of {list(LOW_SPURIOSITY_GROUPS)}; got {low_spuriosity_groups!r}")
    if method != "low_spuriosity":
        return {method: tuning_groups(method, labels, scores, correct)}
    groupings = {"spuriosity": tuning_groups(method, labels, scores, correct)}
    if low_spuriosity_groups in ("auto", "all") and np.isfinite(np.asarray(scores, np.float64)).any():
        groupings["error"] = tuning_groups("error", labels, scores, correct)
        if low_spuriosity_groups == "all":
            groupings["random"] = tuning_groups("random", labels, scores, correct)
    return groupings


def afr_weights(true_class_probability: np.ndarray, labels: np.ndarray, gamma: float) -> np.ndarray:
    """AFR-style sample weights (Qiu et al., 2023): ``exp(-gamma * p)``, every class the same total.

    ``p`` is the model's own softmax probability of the true class, so the images the model finds
    hard (often those without their class's cue) weigh most; no group label is used.

    Args:
        true_class_probability: float ``(n,)`` in [0, 1]; labels: int ``(n,)``; gamma: >= 0.

    Returns:
        float64 ``(n,)`` with mean 1.

    Example:
        >>> afr_weights(np.array([1.0, 0.0, 0.5, 0.5]), np.array([0, 0, 1, 1]), 0.0).tolist()
        [1.0, 1.0, 1.0, 1.0]
    """
    labels = np.asarray(labels)
    weights = np.exp(-float(gamma) * np.asarray(true_class_probability, np.float64))
    classes = np.unique(labels)
    for c in classes:
        members = labels == c
        weights[members] *= (len(labels) / len(classes)) / weights[members].sum()
    return weights


def group_balanced_weights(labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Sample weights giving every class the same total, split equally among the class's groups.

    Args:
        labels: int ``(n,)``; groups: int ``(n,)`` group ids (each within one class).

    Returns:
        float64 ``(n,)`` with mean 1.
    """
    weights = np.zeros(len(labels))
    for c in np.unique(labels):
        in_class = np.unique(groups[labels == c])
        for g in in_class:
            members = groups == g
            weights[members] = 1.0 / (len(in_class) * members.sum())
    return weights / weights.mean()


def fit_weighted_logistic(
    activations: np.ndarray, labels: np.ndarray, weights: np.ndarray, n_classes: int, inverse_l2: float
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression on standardised features with sample weights, as a head on raw features.

    Args:
        activations: float ``(n, D)``; labels: int ``(n,)``; weights: float ``(n,)``.
        n_classes: K, the head's number of rows (classes absent from ``labels`` get a zero row
            and a very low bias, so they are never predicted).
        inverse_l2: ``C`` of scikit-learn's LogisticRegression.

    Returns:
        ``(weight (K, D), bias (K,))`` float64, acting on the unstandardised features.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(activations, np.float64)
    mean, std = x.mean(0), x.std(0)
    std = np.where(std > 0, std, 1.0)
    present = np.unique(labels)
    weight, bias = np.zeros((n_classes, x.shape[1])), np.full(n_classes, -1e4)
    if len(present) < 2:
        bias[present] = 0.0
        return weight, bias
    model = LogisticRegression(C=inverse_l2, max_iter=2000).fit((x - mean) / std, labels, sample_weight=weights)
    coef, intercept = model.coef_, model.intercept_
    if len(present) == 2:  # scikit-learn keeps one row for two classes
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    weight[model.classes_] = coef / std
    bias[model.classes_] = intercept - coef @ (mean / std)
    return weight, bias


def group_accuracies(weight: np.ndarray, bias: np.ndarray, activations: np.ndarray, labels: np.ndarray,
                     groups: np.ndarray) -> tuple[float, float]:
    """``(worst, mean)`` accuracy over the groups present (rows with a negative label ignored); NaN when none."""
    return correct_group_accuracies(head_predictions(activations, weight, bias) == labels, labels, groups)


def correct_group_accuracies(correct: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """:func:`group_accuracies` from bool ``(n,)`` correctness (e.g. out-of-fold predictions of several heads)."""
    usable = np.asarray(labels) >= 0
    correct = np.asarray(correct, bool)
    accuracies = [correct[usable & (groups == g)].mean() for g in np.unique(groups[usable])]
    return (float(min(accuracies)), float(np.mean(accuracies))) if accuracies else (float("nan"), float("nan"))


def held_out_metrics(weight: np.ndarray, bias: np.ndarray, activations: np.ndarray, labels: np.ndarray,
                     scores: np.ndarray, groups: np.ndarray, gap_config: GapConfig) -> dict:
    """:func:`~auditor.evaluation.head_metrics` plus the worst and mean accuracy over label-free ``groups``.

    Args:
        weight, bias: a head ``(K, D)``, ``(K,)``.
        activations: float ``(n, D)`` held-out features; labels: int ``(n,)``; scores: float ``(n,)``
            their spuriosity; groups: int ``(n,)`` their label-free groups (:func:`tuning_groups`).
        gap_config: k of the gaps.

    Returns:
        The head_metrics dict with ``worst_group_accuracy`` and ``mean_group_accuracy`` added.
    """
    return correct_metrics(head_predictions(activations, weight, bias) == labels, labels, scores, groups, gap_config)


def correct_metrics(correct: np.ndarray, labels: np.ndarray, scores: np.ndarray, groups: np.ndarray,
                    gap_config: GapConfig) -> dict:
    """:func:`held_out_metrics` from bool ``(n,)`` correctness instead of a head."""
    metrics = correctness_metrics(correct, labels, scores, gap_config)
    metrics["worst_group_accuracy"], metrics["mean_group_accuracy"] = correct_group_accuracies(correct, labels, groups)
    return metrics


def selection_score(selection: str, metrics: dict) -> tuple[float, float]:
    """How a candidate head ranks on held-out images under ``tuning.selection``; lower is better.

    "worst_group": minus the worst label-free group's accuracy, ties broken by minus the mean
    group accuracy (small groups tie often); "worst_decile": minus the worst spuriosity
    decile's accuracy; "gap": the largest |spurious gap|. Missing figures rank last.
    """
    if selection == "worst_group":
        worst, mean = metrics["worst_group_accuracy"], metrics["mean_group_accuracy"]
        return (-worst, -mean) if np.isfinite(worst) else (np.inf, np.inf)
    if selection == "worst_decile":
        deciles = [d for d in metrics["decile_accuracy"] if d is not None]
        return (-min(deciles), 0.0) if deciles else (np.inf, np.inf)
    finite = [abs(g) for g in metrics["gaps"].values() if np.isfinite(g)]
    return (max(finite), 0.0) if finite else (np.inf, np.inf)


def _choose_reweighted(candidates: list[dict], original_score: tuple[float, float], groupings: dict[str, np.ndarray],
                       held: np.ndarray, held_y: np.ndarray, selection: str,
                       prefer_mistakes: bool = False, skewed_judge: str = "mistakes") -> dict | None:
    """The reweighted candidate to keep, or None to keep the original head (see :func:`reweight_head`).

    With ``prefer_mistakes`` (validation as skewed as training, see :func:`low_spuriosity_share`)
    and a mistakes grouping, the candidates fitted on the mistakes come first: the best of them by
    its worst mistakes group on the held-out half is kept. Every candidate has already passed the
    floor on the method's own groups, which is what stops a head fitted on a handful of ambiguous
    mistakes from being kept (on a planted feature set with 10 mistakes in 600 images, such a
    head inverted the core feature and fell from 0.43 to 0.00 test worst group). Without such a
    candidate the rule below applies. ``skewed_judge`` (``tuning.skewed_judge``) says how the
    preferred candidates are judged: "mistakes" by their worst mistakes group alone; "both" by their
    worst group over the mistakes and the spuriosity groups; "guarded" by the mistakes, the winner
    kept only if its spuriosity score is at least the original head's (else the rule below).

    With one grouping: the best candidate by its selection score, if it beats the original head.
    With several (``tuning.groups: auto``) and worst-group selection, two stages. First, among the
    retrained candidates, the one whose worst group over *every* grouping is best (ties: the
    method's own score); between retrained heads the mistakes grouping is a fair judge. Second, it
    is kept only if it is at least as good as the original head by the method's own groups: the
    original head is wrong on every image of its own "mistakes" group, so that grouping cannot
    judge against it. Otherwise the best candidate by the method's own groups, if it beats the
    original head.
    """
    mistakes_fitted = [c for c in candidates if c["grouping"] == "error"]
    if prefer_mistakes and "error" in groupings and mistakes_fitted and selection == "worst_group":
        mistakes = groupings["error"][held]

        def on_mistakes(candidate: dict) -> tuple[float, float]:
            return correct_group_accuracies(candidate["correct"], held_y, mistakes)

        if skewed_judge == "both":
            def worst_over_both(candidate: dict) -> tuple[float, float]:
                worst, mean = on_mistakes(candidate)
                return (min(worst, candidate["metrics"]["worst_group_accuracy"]), mean)

            return max(mistakes_fitted, key=worst_over_both)
        preferred = max(mistakes_fitted, key=on_mistakes)
        if skewed_judge == "mistakes" or preferred["score"] <= original_score:
            return preferred
    best_own = min(candidates, key=lambda c: c["score"], default=None)
    if best_own is not None and not best_own["score"] < original_score:
        best_own = None
    if len(groupings) < 2 or selection != "worst_group" or not candidates:
        return best_own
    others = {name: groups[held] for name, groups in list(groupings.items())[1:]}

    def worst_over_groupings(candidate: dict) -> tuple[float, float]:
        worst = min([candidate["metrics"]["worst_group_accuracy"]]
                    + [correct_group_accuracies(candidate["correct"], held_y, g)[0] for g in others.values()])
        return (-worst, candidate["score"][1])

    first = min(candidates, key=worst_over_groupings)
    return first if first["score"] <= original_score else best_own


TRAINING_IMAGES = ("none", "when_skewed", "low_spuriosity", "all")


def training_rows(choice: str, labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Rows of the training cache that join the fitting half under ``tuning.training_images``.

    Args:
        choice: "none", "when_skewed" or "low_spuriosity" (the images at most their class's Otsu split of spuriosity,
            classes with spurious features only; whether "when_skewed" applies at all is :func:`run_tuning`'s skew
            check) or "all" (every labelled image).
        labels: int ``(N,)`` training labels; scores: float ``(N,)`` training spuriosity (NaN for
            classes without spurious features).

    Returns:
        int64 row indices, ascending.

    Raises:
        ConfigError: unknown choice.

    Example:
        >>> training_rows("low_spuriosity", np.array([0, 0, 0, 1]), np.array([0.0, 0.1, 5.0, np.nan])).tolist()
        [0, 1]
    """
    if choice not in TRAINING_IMAGES:
        raise ConfigError(f"`tuning.training_images` must be one of {list(TRAINING_IMAGES)}; got {choice!r}")
    labels = np.asarray(labels)
    if choice == "none":
        return np.zeros(0, np.int64)
    if choice == "all":
        return np.flatnonzero(labels >= 0).astype(np.int64)
    groups = tuning_groups("low_spuriosity", labels, scores, np.ones(len(labels), bool))
    finite = np.isfinite(np.asarray(scores, np.float64))
    return np.flatnonzero((labels >= 0) & finite & (groups % 2 == 0)).astype(np.int64)


def reweight_head(
    method: str,
    weight: np.ndarray,
    bias: np.ndarray,
    data: FeatureCache,
    scores: np.ndarray,
    config: TuningConfig,
    gap_config: GapConfig,
    fit_rows: np.ndarray,
    held_out_rows: np.ndarray,
    *,
    evaluated_on: str = "val",
    validation_skew: dict | None = None,
    group_scores: np.ndarray | None = None,
    training: tuple[FeatureCache, np.ndarray, np.ndarray] | None = None,
    fold_seed: int = 0,
) -> tuple[TuningResult, np.ndarray, np.ndarray]:
    """DFR-style last-layer retraining with label-free group weights (``tuning.mode: reweight``).

    The head is retrained from zero on ``fit_rows``, each class's groups weighted equally, once
    per grouping of :func:`label_free_groupings` and ``config.inverse_l2_grid`` value; each
    candidate and the original head are scored on ``held_out_rows`` by ``config.selection``
    (the default scores the worst of the method's own label-free groups there: for
    low-spuriosity tuning the spuriosity groups, whichever grouping a candidate was fitted on),
    among candidates whose held-out mean group accuracy stays within ``max_accuracy_drop`` of
    the original's. With several groupings, the retrained candidates are first compared by
    their worst group over every grouping (:func:`_choose_reweighted`). The kept head never
    scores worse than the original head on the method's own criterion.

    Args:
        method: "low_spuriosity", "random", "error" or "afr" (weights ``exp(-gamma * p)`` of the model's
            true-class probability, :func:`afr_weights`, with ``gamma`` from :data:`AFR_GAMMAS` chosen with ``C``).
        weight, bias: the model's head ``(K, D)``, ``(K,)``.
        data: the FeatureCache both row sets index (validation; training without validation data).
        scores: float ``(N,)`` spuriosity of ``data``.
        config: tuning settings; gap_config: k of the reported gaps.
        fit_rows, held_out_rows: disjoint int row indices of ``data``.
        evaluated_on: split name, for the record.
        validation_skew: for low-spuriosity tuning with ``groups: auto``, the record of
            :func:`run_tuning`'s skew check (``low_spuriosity_share``, ``threshold``, ``skewed``);
            with ``skewed`` true the heads fitted on the mistakes are preferred (:func:`_choose_reweighted`).
            It is copied into ``after["validation_skew"]``.
        group_scores: float ``(N,)`` scores the spuriosity grouping splits instead of ``scores`` (see
            :func:`other_cue_scores`); the gaps are still measured on ``scores``. None: ``scores``.
        training: ``(cache, spuriosity (M,), rows)``: training images that join ``fit_rows`` and the refit
            (``tuning.training_images``), grouped by their own split's spuriosity and mistakes
            (:func:`training_rows`). None: ``data`` alone.
        fold_seed: seed of the folds when ``config.folds`` is above 2 (:func:`stratified_folds`).

    Returns:
        ``(TuningResult, weight float32 (K, D), bias float32 (K,))``; ``after`` holds the
        held-out metrics of the chosen head, ``after["inverse_l2"]`` its ``C`` (None: the
        original head was kept), ``after["refit"]`` whether the kept head was refitted on every
        image, ``after["refit_on"]`` what it was finally fitted on, in words, and
        ``after["grouping"]`` which grouping it balanced (``groupings_tried``: all of them).
    """
    start = time.perf_counter()
    labels = np.asarray(data.labels)
    activations = np.asarray(data.activations, np.float64)
    groupings = label_free_groupings(method, labels, scores if group_scores is None else group_scores,
                                     np.asarray(data.correct), config.groups)
    fit_rows, held = np.asarray(fit_rows, np.int64), np.asarray(held_out_rows, np.int64)
    fit_rows, held = fit_rows[labels[fit_rows] >= 0], held[labels[held] >= 0]
    n_training = 0
    joined_rows = np.zeros(0, np.int64)
    if training is not None and len(training[2]):
        train_cache, train_scores, train_rows = training
        train_rows = np.asarray(train_rows, np.int64)
        train_labels = np.asarray(train_cache.labels)
        train_groupings = label_free_groupings(method, train_labels, train_scores, np.asarray(train_cache.correct), config.groups)
        class_only = tuning_groups("random", train_labels, train_scores, np.asarray(train_cache.correct))
        groupings = {name: np.concatenate([groups, train_groupings.get(name, class_only)[train_rows]])
                     for name, groups in groupings.items()}
        joined_rows = len(labels) + np.arange(len(train_rows))
        activations = np.vstack([activations, np.asarray(train_cache.activations, np.float64)[train_rows]])
        labels = np.concatenate([labels, train_labels[train_rows]])
        n_training = len(train_rows)
    # (rows a head is fitted on, rows it judges): the fitting half judged on the held-out half, and with
    # ``cross_fit`` also the reverse, so every validation image judges each candidate once, by a head not fitted on it
    folds = [(np.concatenate([fit_rows, joined_rows]), held)]
    if config.cross_fit and len(fit_rows) and config.folds > 2:
        validation_rows = np.concatenate([fit_rows, held])
        dealt = stratified_folds(labels[validation_rows], config.folds, np.random.default_rng([fold_seed, 2]))
        folds = [(np.concatenate([validation_rows[dealt != k], joined_rows]), validation_rows[dealt == k])
                 for k in range(config.folds) if (dealt == k).any()]
    elif config.cross_fit and len(fit_rows):
        folds.append((np.concatenate([held, joined_rows]), fit_rows))
    judged = np.concatenate([rows for _, rows in folds])
    held_x, held_y, held_scores = activations[judged], labels[judged], np.asarray(scores)[judged]
    judged_by = next(iter(groupings.values()))[judged]  # candidates from every grouping are judged by the method's own

    def metrics_of(correct: np.ndarray) -> dict:
        return correct_metrics(correct, held_y, held_scores, judged_by, gap_config)

    def criterion(metrics: dict) -> tuple[float, float]:
        return selection_score(config.selection, metrics)

    original_correct = head_predictions(held_x, weight, bias) == held_y
    before = metrics_of(original_correct)
    floor = before["mean_group_accuracy"] - config.max_accuracy_drop
    best = {"weight": np.asarray(weight, np.float64), "bias": np.asarray(bias, np.float64), "score": criterion(before),
            "inverse_l2": None, "metrics": before, "grouping": None, "correct": original_correct}
    true_probability = None
    if method == "afr":
        logits = activations @ np.asarray(weight, np.float64).T + np.asarray(bias, np.float64)
        probabilities = np.exp(logits - logits.max(1, keepdims=True))
        probabilities /= probabilities.sum(1, keepdims=True)
        true_probability = probabilities[np.arange(len(labels)), np.clip(labels, 0, None)]

    def weights_for(rows: np.ndarray, grouping: str, gamma: float | None) -> np.ndarray:
        if gamma is not None:
            return afr_weights(true_probability[rows], labels[rows], gamma)
        return group_balanced_weights(labels[rows], groupings[grouping][rows])

    candidates = []
    if all(len(np.unique(labels[fitted])) >= 2 for fitted, _ in folds):
        for grouping in groupings:
            for gamma in (AFR_GAMMAS if method == "afr" else (None,)):
                weights_by_fold = [weights_for(fitted, grouping, gamma) for fitted, _ in folds]
                for inverse_l2 in config.inverse_l2_grid:
                    heads = [fit_weighted_logistic(activations[fitted], labels[fitted], sample_weights, weight.shape[0], inverse_l2)
                             for (fitted, _), sample_weights in zip(folds, weights_by_fold)]
                    correct = np.concatenate([head_predictions(activations[rows], w, b) == labels[rows]
                                              for (_, rows), (w, b) in zip(folds, heads)])
                    metrics = metrics_of(correct)
                    if metrics["mean_group_accuracy"] >= floor:
                        candidates.append({"weight": heads[0][0], "bias": heads[0][1], "score": criterion(metrics),
                                           "inverse_l2": float(inverse_l2), "metrics": metrics, "grouping": grouping,
                                           "afr_gamma": gamma, "correct": correct})
    chosen = _choose_reweighted(candidates, best["score"], groupings, judged, held_y, config.selection,
                                prefer_mistakes=bool(validation_skew and validation_skew.get("skewed")),
                                skewed_judge=config.skewed_judge)
    if chosen is not None:
        best = chosen
    after = dict(best["metrics"])
    refit_on = evaluated_on + ", fitting half" if best["inverse_l2"] is not None else None
    kept_w, kept_b = best["weight"], best["bias"]
    every_row = np.concatenate([fit_rows, joined_rows, held])
    fit_rows = folds[0][0]
    if best["inverse_l2"] is not None and config.refit_on_validation:
        rows = every_row
        kept_w, kept_b = fit_weighted_logistic(activations[rows], labels[rows],
                                               weights_for(rows, best["grouping"], best.get("afr_gamma")),
                                               weight.shape[0], best["inverse_l2"])
        joined = f" and {n_training} training images" if n_training else ""
        judged_text = ("the half-fitted head on the held-out half" if len(folds) == 1
                       else "heads fitted on one half, on the other" if len(folds) == 2
                       else f"heads fitted on all but one of {len(folds)} folds, on that fold")
        refit_on = f"{evaluated_on}, every image{joined} (the metrics are those of {judged_text})"
    where = (f"{evaluated_on}, held-out half" if len(folds) == 1
             else f"{evaluated_on}, both halves, each judged by heads fitted on the other" if len(folds) == 2
             else f"{evaluated_on}, all {len(folds)} folds, each judged by heads fitted on the others")
    for metrics in (before, after):
        metrics.update(evaluated_on=where, n_evaluated=len(judged))
    n_fitted = len(fit_rows) if best["inverse_l2"] is not None else 0
    fitted_on = {}
    if n_fitted:
        fitted_on = {evaluated_on: n_fitted - n_training, "train": n_training} if n_training else {evaluated_on: n_fitted}
    kept_groups = groupings[best["grouping"] or next(iter(groupings))]
    after.update(fitted_on=fitted_on, inverse_l2=best["inverse_l2"], refit_on=refit_on,
                 refit=bool(best["inverse_l2"] is not None and config.refit_on_validation),
                 grouping=best["grouping"], groupings_tried=list(groupings), afr_gamma=best.get("afr_gamma"),
                 n_groups=len(np.unique(kept_groups[fit_rows])) if len(fit_rows) else 0)
    if validation_skew is not None:
        after["validation_skew"] = dict(validation_skew)
    result = TuningResult(
        method=method,
        n_train_images=n_fitted,
        epochs=0,
        stopped_early=False,
        seconds=time.perf_counter() - start,
        before=before,
        after=after,
        gaps_after=after["gaps"],
    )
    logger.info("tuning %s (reweight, %s groups, C=%s): %s accuracy %.3f -> %.3f, worst label-free group %.3f -> %.3f",
                method, best["grouping"], best["inverse_l2"], where, before["accuracy"], after["accuracy"], before["worst_group_accuracy"],
                after["worst_group_accuracy"])
    return result, np.asarray(kept_w, np.float32), np.asarray(kept_b, np.float32)


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
    *,
    has_validation: bool | None = None,
    spurious: dict[int, list[int]] | None = None,
) -> TuningStageResult:
    """The head-tuning stage: low-spuriosity tuning and every configured baseline.

    Every method starts from a generator seeded with ``seed`` and, with validation data,
    uses the same seeded validation halves (see the module docstring), so adding a
    baseline never changes another method's result.

    Args:
        head: the model's head ``(weight (K, D), bias (K,))``.
        train: training FeatureCache; train_scores: its spuriosity ``(N,)``.
        evaluation: the validation cache (or the training cache when there is no validation
            data); evaluation_scores: its spuriosity ``(M,)``.
        config: tuning settings (``baselines`` lists the extra methods).
        gap_config: k of the gaps.
        seed: seed of every method's generator and of the validation split.
        has_validation: whether ``evaluation`` is validation data (default: it is a
            different cache from ``train``). Without validation nothing is held out.
        spurious: class -> spurious feature indices, for the validation skew check of
            ``tuning.groups: auto`` (:func:`low_spuriosity_share`); None skips the check.

    Returns:
        A :class:`TuningStageResult`.
    """
    weight, bias = head
    if has_validation is None:
        has_validation = evaluation is not train
    if config.mode == "reweight":
        if config.validation_fit_fraction <= 0:
            raise ConfigError("`tuning.mode: reweight` fits on part of the data; set `tuning.validation_fit_fraction` in (0, 1) "
                              "or use `tuning.mode: select`")
        data, data_scores = (evaluation, evaluation_scores) if has_validation else (train, train_scores)
        fit_rows, held_rows = split_validation(data.labels, config.validation_fit_fraction, np.random.default_rng([seed, 1]))
        skew = None
        if has_validation and config.groups in ("auto", "all") and spurious and config.skewed_validation_share > 0:
            share = low_spuriosity_share(np.asarray(train.activations), train.labels, np.asarray(evaluation.activations),
                                         evaluation.labels, spurious)
            if np.isfinite(share):
                skew = {"low_spuriosity_share": share, "training_tail": TRAINING_TAIL,
                        "threshold": float(config.skewed_validation_share), "skewed": bool(share < config.skewed_validation_share)}
                logger.info("tuning: %.0f%% of validation images are below the training %.0f%% tail of spuriosity (threshold %.0f%%): %s",
                            100 * share, 100 * TRAINING_TAIL, 100 * config.skewed_validation_share,
                            "as skewed as training: preferring heads that balance the model's mistakes" if skew["skewed"]
                            else "enough low-spuriosity images: both groupings compared as usual")
        group_scores = None
        if config.control_groups == "other_cues" and spurious and np.isfinite(np.asarray(data_scores, np.float64)).any():
            group_scores = other_cue_scores(np.asarray(data.activations), data.labels, data_scores, spurious)
        training = None
        joins = config.training_images in ("low_spuriosity", "all") or (
            config.training_images == "when_skewed" and skew is not None and skew["skewed"])
        if has_validation and joins:
            training = (train, np.asarray(train_scores), training_rows(config.training_images, train.labels, train_scores))
        results, heads = {}, {}
        for method in ["low_spuriosity", *config.baselines]:
            ours = method == "low_spuriosity"
            result, w, b = reweight_head(method, weight, bias, data, data_scores, config, gap_config, fit_rows, held_rows,
                                         evaluated_on="val" if has_validation else "train",
                                         validation_skew=skew if ours else None,
                                         group_scores=group_scores if ours else None,
                                         training=training if ours else None, fold_seed=seed)
            results[method], heads[method] = result, (w, b)
        return TuningStageResult(results=results, heads=heads)
    fit_rows = held_rows = None
    if has_validation and config.validation_fit_fraction > 0:
        fit_rows, held_rows = split_validation(evaluation.labels, config.validation_fit_fraction,
                                               np.random.default_rng([seed, 1]))
    results, heads = {}, {}
    for method in ["low_spuriosity", *config.baselines]:
        result, w, b = tune_head(method, weight, bias, train, train_scores, evaluation, evaluation_scores,
                                 config, gap_config, np.random.default_rng(seed),
                                 val_fit_rows=fit_rows, val_held_out_rows=held_rows,
                                 evaluated_on="val" if has_validation else "train")
        results[method], heads[method] = result, (w, b)
    return TuningStageResult(results=results, heads=heads)
