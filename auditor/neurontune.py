"""NeuronTune-style neuron regulation: annotation-free mitigation on cached features.

After Zheng, Ye and Zhang (2025). On an identification set (the validation split by
default; the training split is memorised and separates poorly), each feature dimension
``i`` gets, per class ``y``, a bias score::

    delta(y, i) = median activation over the class's misclassified images
                  - median activation over its correctly classified images

A dimension that is systematically higher on the class's errors is one the model leans
on when it goes wrong; it is *biased* when ``delta(y, i) > threshold`` for some class
(``combine="any"``) or on average over classes (``combine="mean"``). The biased
dimensions are set to zero in front of the head and the head is retrained with
class-balanced weighting on the training features. Checkpoints are selected without
group labels, by the smallest ``sum |delta|`` recomputed on the identification set with
the retrained head's predictions.

delta is expressed in units of each dimension's standard deviation over the
identification set, so ``threshold`` is comparable across models; the sign, and so the
default rule ``threshold = 0``, is unchanged by this scaling.

Deviations from the paper, and why:

* **Held-out choice of how many dimensions to suppress** (``neurontune.select_on_holdout``,
  on by default). With ``threshold = 0`` and ``combine = "any"`` nearly every dimension
  passes by chance when there are several classes, and suppressing half of them (the cap)
  removed core dimensions too: on a planted feature set worst-group accuracy fell 35-41
  points below ERM. So the identification split is cut in two (seeded, stratified by
  class, ``neurontune.holdout_fraction`` held out): delta is computed on the first part;
  candidates suppress the 1, 2, 4, ... most biased flagged dimensions (up to the cap); each
  is retrained as the paper does; and the candidate with the best worst-class accuracy on
  the held-out part (ties: average accuracy) is kept. The original head is a candidate too,
  so the kept head is never worse than ERM on held-out data; the section records when it
  fell back to it (``fallback``). Only class labels are used, never group labels.
* **A confidence check before replacing the original head** (``neurontune.min_gain_confidence``).
  Winning on a few hundred held-out images is often luck: on the proving ground, heads
  that won there lost up to 21 points of test worst-group accuracy. The winner is kept only
  when it beats the original head's held-out worst-class accuracy in at least that share of
  paired, class-stratified bootstrap resamples of the held-out images (``gain_confidence``
  in the section); otherwise the original head is kept.
* **Cap** (``max_suppressed_fraction``): at most this share of dimensions is suppressed.
* **Standardised delta** (above), so one threshold fits every model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from auditor.config import GapConfig, NeuronTuneConfig
from auditor.errors import ConfigError, InvalidInputError
from auditor.evaluation import head_metrics
from auditor.features import FeatureCache
from auditor.results import FeatureVerdict

logger = logging.getLogger(__name__)

COMBINE_RULES = ("any", "mean")


def neuron_bias_scores(
    activations: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    *,
    n_classes: int | None = None,
    min_images: int = 2,
    standardize: bool = True,
) -> np.ndarray:
    """Per class and dimension: median activation on errors minus median on correct images.

    Args:
        activations: float ``(N, D)`` features in front of the head.
        labels: int ``(N,)`` true classes.
        predictions: int ``(N,)`` the model's predictions.
        n_classes: K (``labels.max() + 1`` when None).
        min_images: a class needs at least this many misclassified and this many correct
            images; otherwise its row is NaN.
        standardize: divide by each dimension's standard deviation over all N images
            (dimensions with zero spread get 1).

    Returns:
        float64 ``(K, D)`` delta; NaN rows for classes without enough errors or successes.

    Raises:
        InvalidInputError: mismatched lengths.

    Example:
        >>> acts = np.array([[0., 1.], [0., 1.], [0., 3.], [0., 3.]])
        >>> neuron_bias_scores(acts, np.zeros(4, int), np.array([0, 0, 1, 1]), standardize=False).tolist()
        [[0.0, 2.0]]
    """
    activations = np.asarray(activations, np.float64)
    labels = np.asarray(labels, np.int64)
    predictions = np.asarray(predictions, np.int64)
    if activations.ndim != 2 or not len(activations) == len(labels) == len(predictions):
        raise InvalidInputError(
            f"activations {activations.shape}, labels {labels.shape} and predictions {predictions.shape} must be "
            "(N, D), (N,) and (N,) with the same N"
        )
    k = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    scale = activations.std(0) if standardize else np.ones(activations.shape[1])
    scale = np.where(scale > 0, scale, 1.0)
    delta = np.full((k, activations.shape[1]), np.nan)
    for c in range(k):
        members = labels == c
        wrong = members & (predictions != c)
        right = members & (predictions == c)
        if wrong.sum() < min_images or right.sum() < min_images:
            continue
        delta[c] = (np.median(activations[wrong], 0) - np.median(activations[right], 0)) / scale
    return delta


def biased_dimensions(delta: np.ndarray, threshold: float = 0.0, combine: str = "any") -> np.ndarray:
    """Dimensions judged biased from the ``(K, D)`` bias scores.

    Args:
        delta: float ``(K, D)``, NaN rows ignored.
        threshold: lambda; biased when the combined score exceeds it.
        combine: "any" (``delta(y, i) > threshold`` for some class y) or "mean"
            (mean over classes ``> threshold``).

    Returns:
        bool ``(D,)``; all False when every row is NaN.

    Raises:
        ConfigError: unknown ``combine``.

    Example:
        >>> biased_dimensions(np.array([[0.5, -1.0, 0.0], [-0.2, -0.1, 0.3]])).tolist()
        [True, False, True]
        >>> biased_dimensions(np.array([[0.5, -1.0, 0.0], [-0.2, -0.1, 0.3]]), combine="mean").tolist()
        [True, False, True]
    """
    if combine not in COMBINE_RULES:
        raise ConfigError(f"`neurontune.combine` must be one of {list(COMBINE_RULES)}; got {combine!r}")
    delta = np.asarray(delta, np.float64)
    rows = delta[np.isfinite(delta).all(1)] if delta.ndim == 2 else delta[None]
    if len(rows) == 0:
        return np.zeros(delta.shape[-1], bool)
    combined = rows.max(0) if combine == "any" else rows.mean(0)
    return combined > threshold


def cap_suppression(delta: np.ndarray, suppressed: np.ndarray, combine: str = "any", max_fraction: float = 0.5) -> np.ndarray:
    """Keep at most ``floor(max_fraction * D)`` suppressed dimensions, the most biased ones.

    Args:
        delta: float ``(K, D)`` bias scores.
        suppressed: bool ``(D,)`` from :func:`biased_dimensions`.
        combine: the rule that produced ``suppressed`` (ranks by max or mean over classes).
        max_fraction: largest share of dimensions to suppress, in ``[0, 1]``.

    Returns:
        bool ``(D,)``, a subset of ``suppressed``.

    Example:
        >>> cap_suppression(np.array([[0.1, 0.9, 0.5, -1.0]]), np.array([True, True, True, False]), max_fraction=0.25).tolist()
        [False, True, False, False]
    """
    suppressed = np.asarray(suppressed, bool).copy()
    limit = int(np.floor(max_fraction * len(suppressed)))
    if suppressed.sum() <= limit:
        return suppressed
    rows = np.asarray(delta, np.float64)
    rows = rows[np.isfinite(rows).all(1)]
    combined = rows.max(0) if combine == "any" else rows.mean(0)
    order = [i for i in np.argsort(-combined, kind="stable") if suppressed[i]]
    capped = np.zeros_like(suppressed)
    capped[order[:limit]] = True
    return capped


def bias_objective(delta: np.ndarray) -> float:
    """Model-selection score: ``sum |delta|`` over the finite entries (lower is better)."""
    finite = np.isfinite(delta)
    return float(np.abs(delta[finite]).sum())


def worst_class_gain_confidence(
    candidate_correct: np.ndarray,
    original_correct: np.ndarray,
    labels: np.ndarray,
    *,
    n_bootstrap: int = 1000,
    rng: np.random.Generator | None = None,
) -> float:
    """Share of bootstrap resamples in which a candidate head's worst-class accuracy beats the original's.

    The resamples are paired (both heads are scored on the same images) and stratified by class
    (each class keeps its size), so the worst class is always defined.

    Args:
        candidate_correct: bool ``(S,)`` the candidate head's correctness on held-out images.
        original_correct: bool ``(S,)`` the original head's correctness on the same images.
        labels: int ``(S,)`` their classes.
        n_bootstrap: resamples.
        rng: random generator (``default_rng(0)`` when None).

    Returns:
        A share in ``[0, 1]``: 1 when the candidate wins on every resample, 0 when it never does (ties lose).

    Raises:
        InvalidInputError: mismatched lengths or no images.

    Example:
        >>> labels = np.repeat([0, 1], 50)
        >>> better = worst_class_gain_confidence(np.ones(100, bool), np.arange(100) % 2 == 0, labels)
        >>> same = worst_class_gain_confidence(np.ones(100, bool), np.ones(100, bool), labels)
        >>> better, same
        (1.0, 0.0)
    """
    candidate_correct = np.asarray(candidate_correct, bool)
    original_correct = np.asarray(original_correct, bool)
    labels = np.asarray(labels)
    if not len(candidate_correct) == len(original_correct) == len(labels) or len(labels) == 0:
        raise InvalidInputError(
            f"candidate ({len(candidate_correct)}), original ({len(original_correct)}) and labels ({len(labels)}) "
            "must describe the same, non-empty set of images"
        )
    rng = np.random.default_rng(0) if rng is None else rng
    candidate_worst = np.full(n_bootstrap, np.inf)
    original_worst = np.full(n_bootstrap, np.inf)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        draws = members[rng.integers(0, len(members), size=(n_bootstrap, len(members)))]
        candidate_worst = np.minimum(candidate_worst, candidate_correct[draws].mean(1))
        original_worst = np.minimum(original_worst, original_correct[draws].mean(1))
    return float((candidate_worst > original_worst).mean())


def neurontune_head(
    train_activations: np.ndarray,
    train_labels: np.ndarray,
    ident_activations: np.ndarray,
    ident_labels: np.ndarray,
    ident_predictions: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    *,
    threshold: float = 0.0,
    combine: str = "any",
    epochs: int = 200,
    lr: float = 1e-2,
    weight_decay: float = 1e-3,
    check_every: int = 10,
    max_suppressed_fraction: float = 0.5,
    select_activations: np.ndarray | None = None,
    select_labels: np.ndarray | None = None,
    min_gain_confidence: float = 0.99,
    n_bootstrap: int = 1000,
    rng: np.random.Generator | None = None,
) -> dict:
    """Identify biased dimensions, suppress them and retrain the head (class-balanced).

    Args:
        train_activations: float ``(N, D)`` training features (the head is refit on them).
        train_labels: int ``(N,)``.
        ident_activations: float ``(M, D)`` identification-set features.
        ident_labels: int ``(M,)``.
        ident_predictions: int ``(M,)`` the original model's predictions on them.
        weight: float ``(K, D)`` the original head; bias: float ``(K,)``.
        threshold: lambda of :func:`biased_dimensions`.
        combine: "any" or "mean".
        epochs: most retraining epochs (full batch, Adam).
        lr: learning rate.
        weight_decay: L2 penalty on the head.
        check_every: epochs between checkpoints scored by ``sum |delta|``.
        max_suppressed_fraction: at most this share of the dimensions is suppressed (the
            most biased first). With few dimensions and several classes, ``threshold=0``
            with ``combine="any"`` flags nearly every dimension by chance and the head
            would collapse; the cap keeps it usable and is reported.
        select_activations: float ``(S, D)`` held-out images (not the identification ones);
            when given, the number of suppressed dimensions is chosen on them by worst-class
            accuracy, the original head included (see the module docstring).
        select_labels: int ``(S,)`` their labels.
        min_gain_confidence: with a held-out set, the best candidate replaces the original head
            only when :func:`worst_class_gain_confidence` is at least this (0: always).
        n_bootstrap: resamples of that check.
        rng: random generator of the check (``default_rng(0)`` when None).

    Returns:
        dict with ``weight (K, D)`` (zero columns on suppressed dimensions), ``bias (K,)``,
        ``suppressed`` (sorted int list), ``delta (K, D)`` of the original head,
        ``delta_after`` of the kept head, ``objective_before``/``objective_after``,
        ``epoch`` (kept checkpoint), ``epochs_run``, ``n_flagged`` (dimensions over the
        threshold before the cap), ``fallback`` (the original head was kept),
        ``candidates`` (held-out scores per number of suppressed dimensions; empty without
        a held-out set) and ``gain_confidence`` (the check's share for the best candidate;
        None without a held-out set or when the original head scored best).

    Raises:
        InvalidInputError: shapes that do not match the head.
    """
    weight = np.asarray(weight, np.float32)
    bias = np.asarray(bias, np.float32)
    k, d = weight.shape
    for name, acts in (("training", train_activations), ("identification", ident_activations)):
        if np.asarray(acts).shape[1] != d:
            raise InvalidInputError(f"{name} activations have {np.asarray(acts).shape[1]} features; the head expects {d}")
    ident = np.asarray(ident_activations, np.float64)
    ident_labels = np.asarray(ident_labels, np.int64)
    delta = neuron_bias_scores(ident, ident_labels, ident_predictions, n_classes=k)
    suppressed = biased_dimensions(delta, threshold, combine)
    flagged = int(suppressed.sum())
    suppressed = cap_suppression(delta, suppressed, combine, max_suppressed_fraction)
    if suppressed.sum() < flagged:
        # With a held-out choice of how many to suppress (the default), the cap is routine, not a warning.
        logger.log(
            logging.INFO if select_activations is not None else logging.WARNING,
            "neurontune: %d of %d dimensions exceed threshold %s; suppressing at most the %d most biased "
            "(max_suppressed_fraction=%s). Raise `neurontune.threshold` to suppress fewer.",
            flagged, d, threshold, int(suppressed.sum()), max_suppressed_fraction,
        )
    result = _retrain(train_activations, train_labels, ident, ident_labels, weight, bias, suppressed,
                      epochs=epochs, lr=lr, weight_decay=weight_decay, check_every=check_every)
    result.update(delta=delta, objective_before=bias_objective(np.where(np.isfinite(delta), delta, 0.0)),
                  n_flagged=flagged, fallback=False, candidates=[], gain_confidence=None)
    if select_activations is None:
        return result

    select_x = np.asarray(select_activations, np.float64)
    select_y = np.asarray(select_labels, np.int64)

    def correct_on_held_out(w: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (select_x @ np.asarray(w, np.float64).T + b).argmax(1) == select_y

    def held_out(w: np.ndarray, b: np.ndarray) -> tuple[float, float]:
        correct = correct_on_held_out(w, b)
        per_class = [correct[select_y == c].mean() for c in np.unique(select_y)]
        return float(min(per_class)), float(correct.mean())

    rows = delta[np.isfinite(delta).all(1)]
    combined = (rows.max(0) if combine == "any" else rows.mean(0)) if len(rows) else np.zeros(d)
    order = [i for i in np.argsort(-combined, kind="stable") if suppressed[i]]
    counts = sorted({n for n in (2 ** np.arange(0, 16)) if n < len(order)} | {len(order)} - {0})
    best = {"score": held_out(weight, bias), "result": None, "n": 0}
    candidates = [{"n_suppressed": 0, "worst_class_accuracy": best["score"][0], "accuracy": best["score"][1]}]
    for n in counts:
        mask = np.zeros(d, bool)
        mask[order[:n]] = True
        trial = result if n == len(order) else _retrain(train_activations, train_labels, ident, ident_labels, weight, bias,
                                                        mask, epochs=epochs, lr=lr, weight_decay=weight_decay,
                                                        check_every=check_every)
        score = held_out(trial["weight"], trial["bias"])
        candidates.append({"n_suppressed": int(n), "worst_class_accuracy": score[0], "accuracy": score[1]})
        if score > best["score"]:
            best = {"score": score, "result": trial, "n": n}
    confidence = None
    if best["result"] is not None:
        confidence = worst_class_gain_confidence(
            correct_on_held_out(best["result"]["weight"], best["result"]["bias"]), correct_on_held_out(weight, bias),
            select_y, n_bootstrap=n_bootstrap, rng=rng)
        if confidence < min_gain_confidence:
            logger.info("neurontune: the best candidate (%d dimensions suppressed) beats the original head on only "
                        "%.0f%% of held-out resamples (< %.0f%%); keeping the original head",
                        best["n"], 100 * confidence, 100 * min_gain_confidence)
            best = {**best, "result": None}
    if best["result"] is None:
        kept = {"weight": weight.copy(), "bias": bias.copy(), "suppressed": [], "delta_after": delta,
                "objective_after": result["objective_before"], "epoch": 0, "epochs_run": 0}
        result = {**result, **kept, "fallback": True}
    else:
        result = {**best["result"], "delta": delta, "objective_before": result["objective_before"], "n_flagged": flagged,
                  "fallback": False}
    result["candidates"] = candidates
    result["gain_confidence"] = confidence
    return result


def _retrain(train_activations, train_labels, ident, ident_labels, weight, bias, suppressed, *, epochs, lr,
             weight_decay, check_every) -> dict:
    """Suppress ``suppressed`` dimensions and retrain the head class-balanced; checkpoint by ``sum |delta|``."""
    from auditor.tuning import fit_head

    k = weight.shape[0]
    keep = ~suppressed
    masked_ident = ident * keep

    present = np.unique(ident_labels)

    def score(w: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray]:
        predictions = (masked_ident @ w.T + b).argmax(1)
        after = neuron_bias_scores(masked_ident, ident_labels, predictions, n_classes=k, min_images=1)
        after[:, suppressed] = 0.0
        correct = np.bincount(ident_labels[predictions == ident_labels], minlength=k)
        if (correct[present] < 2).any():
            return np.inf, after  # a class is (almost) never predicted: collapse, not fairness
        return bias_objective(np.where(np.isfinite(after), after, 0.0)), after

    start_weight = weight * keep
    objective, start_delta = score(start_weight, bias)
    best = {"weight": start_weight, "bias": bias, "objective": objective, "delta": start_delta, "epoch": 0}

    def should_stop(epoch: int, w: np.ndarray, b: np.ndarray) -> bool:
        value, after = score(w, b)
        if value < best["objective"]:
            best.update(weight=w, bias=b, objective=value, delta=after, epoch=epoch)
        return False

    _, _, epochs_run = fit_head(
        train_activations, train_labels, start_weight, bias,
        epochs=epochs, lr=lr, weight_decay=weight_decay, feature_mask=keep, balanced=True,
        should_stop=should_stop, check_every=check_every,
    )
    return {
        "weight": np.asarray(best["weight"], np.float32) * keep,
        "bias": np.asarray(best["bias"], np.float32),
        "suppressed": [int(i) for i in np.flatnonzero(suppressed)],
        "delta_after": best["delta"],
        "objective_after": float(best["objective"]),
        "epoch": int(best["epoch"]),
        "epochs_run": int(epochs_run),
    }


def spurious_overlap(suppressed: list[int], spurious: dict[int, list[int]], core: dict[int, list[int]]) -> dict:
    """How the suppressed dimensions overlap the audit's spurious and core features.

    Args:
        suppressed: suppressed dimension indices.
        spurious: class -> features the audit judged spurious.
        core: class -> features the audit judged core.

    Returns:
        dict: per class the suppressed spurious and core features; overall the share of the
        audit's spurious features that were suppressed (``spurious_recall``), the share of
        its core features suppressed (``core_suppressed``), and the Jaccard index of the
        suppressed set with the union of spurious features.

    Example:
        >>> spurious_overlap([1, 2], {0: [1, 3]}, {0: [0]})["spurious_recall"]
        0.5
    """
    chosen = {int(i) for i in suppressed}
    all_spurious = {f for feats in spurious.values() for f in feats}
    all_core = {f for feats in core.values() for f in feats} - all_spurious
    per_class = {}
    for c in sorted(set(spurious) | set(core)):
        per_class[int(c)] = {
            "spurious_suppressed": sorted(chosen & set(spurious.get(c, []))),
            "spurious_kept": sorted(set(spurious.get(c, [])) - chosen),
            "core_suppressed": sorted(chosen & set(core.get(c, []))),
        }
    union = chosen | all_spurious
    return {
        "per_class": per_class,
        "spurious_recall": len(chosen & all_spurious) / len(all_spurious) if all_spurious else None,
        "core_suppressed": len(chosen & all_core) / len(all_core) if all_core else None,
        "jaccard": len(chosen & all_spurious) / len(union) if union else None,
    }


@dataclass(frozen=True)
class NeuronTuneResult:
    """Output of :func:`run_neurontune`.

    Attributes:
        section: JSON-ready report section (identification split, suppressed dimensions,
            overlap with the audit's verdicts, metrics before/after on the evaluation split, seconds).
        weight: float32 ``(K, D)`` retrained head, zero columns on suppressed dimensions.
        bias: float32 ``(K,)``.
    """

    section: dict
    weight: np.ndarray
    bias: np.ndarray


def run_neurontune(
    head: tuple[np.ndarray, np.ndarray],
    train: FeatureCache,
    identification: FeatureCache,
    identification_split: str,
    evaluation: FeatureCache,
    evaluation_split: str,
    evaluation_scores: np.ndarray | None,
    verdicts: Sequence[FeatureVerdict],
    config: NeuronTuneConfig,
    gap_config: GapConfig,
    weight_decay: float,
    seed: int = 0,
) -> NeuronTuneResult:
    """The NeuronTune stage: suppress biased dimensions, retrain the head, measure it.

    Args:
        head: the model's head ``(weight (K, D), bias (K,))``.
        train: training FeatureCache (the head is refit on it).
        identification: the cache biased dimensions are identified on (validation by default).
        identification_split: its name, for the record.
        evaluation: the cache the before/after metrics are measured on; evaluation_split its name.
        evaluation_scores: float ``(M,)`` spuriosity of the evaluation split (None: no gaps).
        verdicts: the audit's verdicts (to report overlap with its spurious/core features).
        config: NeuronTune settings.
        gap_config: k of the gaps.
        weight_decay: L2 penalty of the retrained head.
        seed: seed of the identification / held-out split (``config.select_on_holdout``).

    Returns:
        A :class:`NeuronTuneResult`.

    Raises:
        ConfigError: a bad ``neurontune.combine``.
    """
    start = time.perf_counter()
    weight, bias = (np.asarray(a, np.float32) for a in head)
    train_rows = np.flatnonzero(np.asarray(train.labels) >= 0)  # unreadable images carry label -1
    ident_rows = np.flatnonzero(np.asarray(identification.labels) >= 0)
    select_rows = np.zeros(0, np.int64)
    if config.select_on_holdout:
        from auditor.tuning import split_validation

        held, ident_rows = split_validation(np.asarray(identification.labels), config.holdout_fraction,
                                            np.random.default_rng([seed, 2]))
        select_rows = held
    ident_acts = np.asarray(identification.activations)
    result = neurontune_head(
        np.asarray(train.activations)[train_rows], np.asarray(train.labels)[train_rows],
        ident_acts[ident_rows], np.asarray(identification.labels)[ident_rows],
        np.asarray(identification.predictions)[ident_rows],
        weight, bias,
        threshold=config.threshold, combine=config.combine, epochs=config.epochs, lr=config.lr,
        weight_decay=weight_decay, max_suppressed_fraction=config.max_suppressed_fraction,
        select_activations=ident_acts[select_rows] if len(select_rows) else None,
        select_labels=np.asarray(identification.labels)[select_rows] if len(select_rows) else None,
        min_gain_confidence=config.min_gain_confidence, n_bootstrap=config.n_bootstrap,
        rng=np.random.default_rng([seed, 3]),
    )
    seconds = time.perf_counter() - start
    acts = np.asarray(evaluation.activations)
    before = head_metrics(weight, bias, acts, evaluation.labels, evaluation_scores, gap_config)
    after = head_metrics(result["weight"], result["bias"], acts, evaluation.labels, evaluation_scores, gap_config)
    spurious: dict[int, list[int]] = {}
    core: dict[int, list[int]] = {}
    for v in verdicts:
        (spurious if v.label == "spurious" else core).setdefault(v.class_index, []).append(v.feature)
    per_class_biased = {
        int(c): [int(i) for i in np.flatnonzero(row > config.threshold)] for c, row in enumerate(result["delta"]) if np.isfinite(row).all()
    }
    section = {
        "identification_split": identification_split,
        "threshold": config.threshold,
        "combine": config.combine,
        "n_dimensions": int(weight.shape[1]),
        "suppressed": result["suppressed"],
        "n_suppressed": len(result["suppressed"]),
        "n_over_threshold": result["n_flagged"],
        "max_suppressed_fraction": config.max_suppressed_fraction,
        "n_identification_images": len(ident_rows),
        "n_held_out_images": len(select_rows),
        "candidates": result["candidates"],
        "fallback": result["fallback"],
        "gain_confidence": result["gain_confidence"],
        "min_gain_confidence": config.min_gain_confidence,
        "biased_by_class": per_class_biased,
        "overlap": spurious_overlap(result["suppressed"], spurious, core),
        "objective_before": result["objective_before"],
        "objective_after": result["objective_after"],
        "epoch": result["epoch"],
        "epochs_run": result["epochs_run"],
        "evaluation_split": evaluation_split,
        "before": before,
        "after": after,
        "seconds": seconds,
    }
    logger.info(
        "neurontune: %d of %d dimensions suppressed; %s accuracy %.3f -> %.3f, worst class %.3f -> %.3f",
        len(result["suppressed"]), weight.shape[1], evaluation_split, before["accuracy"], after["accuracy"],
        before["worst_class_accuracy"], after["worst_class_accuracy"],
    )
    return NeuronTuneResult(section=section, weight=np.asarray(result["weight"], np.float32), bias=np.asarray(result["bias"], np.float32))
