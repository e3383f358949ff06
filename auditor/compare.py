"""Bias across many models: measure any classifier on rankings computed once.

The spuriosity rankings come from one audit (one model's features and verdicts).
Any other classifier over the same classes can then be measured on them: run it on the
same images, and compare its accuracy on each class's most and least spurious images.

``evaluate_model`` gives one model's per-class gaps (with bootstrap CIs) and its
accuracy on low- and high-spuriosity images; ``compare_models`` sets several side by
side, with the paper's cross-model analyses:

* the class-wise gap correlation (Pearson r) between every pair of models;
* effective robustness: each model's accuracy on low-spuriosity images minus what a linear
  fit across the compared models predicts from its accuracy on high-spuriosity images
  (:func:`effective_robustness`, at least 3 models);
* the variance ratio of gaps across classes vs across models (:func:`variance_ratio`);
* gaps averaged over the compared models with a bootstrap CI (:func:`averaged_gaps`), whose
  significantly negative classes are the label-noise candidates
  (``negative_gap_classes`` of :mod:`auditor.noise` reads them as they are).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from auditor.config import GapConfig
from auditor.data import ImageSource
from auditor.errors import InvalidInputError
from auditor.gaps import class_gaps
from auditor.model import logits_from_output, resolve_device
from auditor.ranking import SpuriosityRanking
from auditor.results import GapEstimate, to_jsonable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelEvaluation:
    """One model measured on a fixed spuriosity ranking.

    Attributes:
        name: the model's label in comparisons.
        split: the ranking's split ("train" or "val").
        n_images: images evaluated.
        accuracy: overall accuracy.
        gaps: class -> :class:`GapEstimate` (top-k minus bottom-k accuracy, bootstrap CI).
        mean_gap: mean of the finite gaps (None when no class has one).
        low_accuracy: accuracy on the pooled bottom-k (least spurious) images of every ranked class.
        high_accuracy: accuracy on the pooled top-k (most spurious) images.
        predictions: int64 ``(N,)`` the model's predictions (not serialised).
    """

    name: str
    split: str
    n_images: int
    accuracy: float
    gaps: dict[int, GapEstimate]
    mean_gap: float | None
    low_accuracy: float | None
    high_accuracy: float | None
    predictions: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))

    def to_dict(self) -> dict:
        """JSON-ready summary (predictions left out)."""
        return to_jsonable({
            "name": self.name,
            "split": self.split,
            "n_images": self.n_images,
            "accuracy": self.accuracy,
            "mean_gap": self.mean_gap,
            "low_accuracy": self.low_accuracy,
            "high_accuracy": self.high_accuracy,
            "gaps": {c: g for c, g in self.gaps.items()},
        })


def _ranking(rankings, split: str | None) -> SpuriosityRanking:
    """A :class:`SpuriosityRanking` from a ranking, a float array of scores, or anything with ``ranking(split)``."""
    if isinstance(rankings, SpuriosityRanking):
        if split is not None and split != rankings.split:
            raise InvalidInputError(f"the ranking is of the {rankings.split!r} split, not {split!r}")
        return rankings
    if isinstance(rankings, np.ndarray):
        return SpuriosityRanking(split=split or "val", scores=np.asarray(rankings, np.float64))
    ranking_of = getattr(rankings, "ranking", None)
    if callable(ranking_of):
        return ranking_of(split)
    raise InvalidInputError(
        f"cannot read spuriosity rankings from {type(rankings).__name__}; pass a SpuriosityRanking "
        "(report.ranking(split)), an AuditReport, or a float (N,) array of scores"
    )


@torch.no_grad()
def predict_dataset(model: nn.Module, source: ImageSource, device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Predictions and labels of ``model`` over ``source`` (eval mode; every module's training flag is restored).

    Returns:
        ``(predictions int64 (N,), labels int64 (N,))`` in dataset order; -1 for images that could not be read.
    """
    device = torch.device(device)
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        original = next(model.parameters()).device
    except StopIteration:
        original = device
    model.to(device)
    predictions = np.full(len(source), -1, np.int64)
    labels = np.full(len(source), -1, np.int64)
    try:
        for indices, images, batch_labels, _ in source.batches():
            logits = logits_from_output(model(images.to(device)))
            predictions[indices] = logits.argmax(1).cpu().numpy()
            labels[indices] = batch_labels.numpy()
    finally:
        model.to(original)
        for module, training in flags:
            module.training = training
    return predictions, labels


def evaluation_from_predictions(
    scores: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    *,
    name: str = "model",
    split: str = "val",
    gap_config: GapConfig = GapConfig(),
    rng: np.random.Generator | None = None,
) -> ModelEvaluation:
    """Gaps and low/high-spuriosity accuracy of given predictions on a fixed ranking.

    Args:
        scores: float ``(N,)`` spuriosity (NaN for classes without spurious features).
        labels: int ``(N,)``.
        predictions: int ``(N,)``.
        name: label of the model.
        split: the ranking's split, for the record.
        gap_config: k and bootstrap settings.
        rng: random generator for the bootstrap (seed 0 when None).

    Returns:
        A :class:`ModelEvaluation`.

    Raises:
        InvalidInputError: mismatched lengths.

    Example:
        >>> s = np.arange(40.); y = np.zeros(40, int); p = np.where(s < 20, 0, 1)
        >>> evaluation_from_predictions(s, y, p, gap_config=GapConfig(min_k=10)).gaps[0].gap
        -1.0
    """
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, np.int64)
    predictions = np.asarray(predictions, np.int64)
    if not len(scores) == len(labels) == len(predictions):
        raise InvalidInputError(
            f"scores ({len(scores)}), labels ({len(labels)}) and predictions ({len(predictions)}) must have the same length"
        )
    rng = np.random.default_rng(0) if rng is None else rng
    correct = predictions == labels
    gaps = class_gaps(scores, labels, correct, gap_config, rng)
    finite = [g.gap for g in gaps.values() if np.isfinite(g.gap)]
    top = [i for g in gaps.values() for i in g.top_indices]
    bottom = [i for g in gaps.values() for i in g.bottom_indices]
    return ModelEvaluation(
        name=name,
        split=split,
        n_images=len(labels),
        accuracy=float(correct[labels >= 0].mean()) if (labels >= 0).any() else float("nan"),
        gaps=gaps,
        mean_gap=float(np.mean(finite)) if finite else None,
        low_accuracy=float(correct[bottom].mean()) if bottom else None,
        high_accuracy=float(correct[top].mean()) if top else None,
        predictions=predictions,
    )


def evaluate_model(
    rankings,
    other_model: nn.Module,
    dataset,
    *,
    split: str | None = None,
    name: str | None = None,
    batch_size: int = 64,
    device: str = "auto",
    mean: list[float] | None = None,
    std: list[float] | None = None,
    gap_config: GapConfig | None = None,
    seed: int = 0,
) -> ModelEvaluation:
    """Measure ``other_model`` on spuriosity rankings computed once by an audit.

    Args:
        rankings: a :class:`~auditor.ranking.SpuriosityRanking` (``report.ranking(split)``), an
            :class:`~auditor.report.audit_report.AuditReport`, or a float ``(N,)`` array of scores.
        other_model: any classifier over the same classes (outputs logits ``(n, K)``).
        dataset: the images the ranking was computed on, in the same order (map-style
            Dataset yielding ``(image, label[, mask])``), prepared as ``other_model`` expects.
        split: which ranking ("val" when the audit has one, else "train").
        name: label of the model (its class name when None).
        batch_size: images per forward pass.
        device: "auto", "cpu", "cuda", ...
        mean, std: normalisation of the dataset's images (only used to validate the dataset).
        gap_config: k and bootstrap settings (the report's when ``rankings`` is an AuditReport, else defaults).
        seed: seed of the bootstrap (the report's seed when ``rankings`` is an AuditReport and ``gap_config`` is None).

    Returns:
        A :class:`ModelEvaluation`.

    Raises:
        InvalidInputError: the dataset's length or labels differ from those the ranking was
            computed on.

    Example:
        >>> evaluation = report.evaluate(other_model, val_set)   # doctest: +SKIP
        >>> evaluation.gaps[0].gap, evaluation.low_accuracy       # doctest: +SKIP
    """
    ranking = _ranking(rankings, split)
    scores, split = ranking.scores, ranking.split
    audit_config = getattr(rankings, "config", None)  # an AuditReport carries its gap settings and seed
    if gap_config is None and audit_config is not None:
        gap_config, seed = audit_config.gaps, int(audit_config.seed)
    source = ImageSource(dataset, batch_size=batch_size, mean=mean, std=std, name=split)
    if len(source) != len(scores):
        raise InvalidInputError(
            f"the dataset has {len(source)} images but the {split!r} ranking has {len(scores)}; pass the dataset the "
            "audit ranked, in the same order"
        )
    predictions, labels = predict_dataset(other_model, source, resolve_device(device))
    stored = ranking.labels
    if stored is not None:
        readable = stored >= 0
        if len(labels) == len(stored) and not np.array_equal(labels[readable], stored[readable]):
            n_diff = int((labels[readable] != stored[readable]).sum())
            raise InvalidInputError(
                f"{n_diff} labels of the dataset differ from those of the audited {split!r} split; pass the same "
                "dataset in the same order"
            )
        labels = np.where(readable, labels, -1) if len(labels) == len(stored) else labels
    return evaluation_from_predictions(
        scores, labels, predictions, name=name or type(other_model).__name__, split=split,
        gap_config=gap_config or GapConfig(), rng=np.random.default_rng(seed),
    )


def pearson_r(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson correlation of two equal-length vectors (None for fewer than 3 points or zero variance).

    Example:
        >>> pearson_r(np.array([1., 2., 3.]), np.array([2., 4., 7.])) > 0.99
        True
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def effective_robustness(evaluations: list[ModelEvaluation]) -> dict:
    """Accuracy on low-spuriosity images beyond what high-spuriosity accuracy predicts across models.

    A line ``low = slope * high + intercept`` is fitted (least squares) through the compared
    models' (high-spuriosity accuracy, low-spuriosity accuracy) points; a model's effective
    robustness is its low-spuriosity accuracy minus the line's value at its high-spuriosity
    accuracy. Positive: the model does better on images without the spurious cue than models
    equally good on images with it. The residuals of a least-squares fit sum to zero, so the
    numbers are relative to the compared set.

    Args:
        evaluations: one :class:`ModelEvaluation` per model.

    Returns:
        JSON-ready dict: ``slope``, ``intercept``, ``n_models`` (models with both
        accuracies), ``models`` (name -> effective robustness) and ``note``; slope, intercept
        and the values are None with fewer than 3 models or identical high-spuriosity accuracies.

    Example:
        >>> def e(n, hi, lo): return ModelEvaluation(n, "val", 10, 0.5, {}, None, lo, hi)
        >>> er = effective_robustness([e("a", .5, .6), e("b", .7, .8), e("c", .6, .8)])
        >>> round(er["slope"], 3), round(er["models"]["c"], 3)
        (1.0, 0.067)
    """
    points = [(e.name, e.high_accuracy, e.low_accuracy) for e in evaluations
              if e.high_accuracy is not None and e.low_accuracy is not None
              and np.isfinite(e.high_accuracy) and np.isfinite(e.low_accuracy)]
    empty = {"slope": None, "intercept": None, "n_models": len(points), "models": {e.name: None for e in evaluations}}
    if len(points) < 3:
        return {**empty, "note": f"needs at least 3 models with low- and high-spuriosity accuracy; got {len(points)}"}
    high = np.array([p[1] for p in points], np.float64)
    low = np.array([p[2] for p in points], np.float64)
    if np.ptp(high) == 0:
        return {**empty, "note": "every model has the same high-spuriosity accuracy: no line can be fitted"}
    slope, intercept = np.polyfit(high, low, 1)
    values = {name: float(lo - (slope * hi + intercept)) for name, hi, lo in points}
    return {
        "slope": float(slope),
        "intercept": float(intercept),
        "n_models": len(points),
        "models": {e.name: values.get(e.name) for e in evaluations},
        "note": "low-spuriosity accuracy minus a least-squares line through (high, low) accuracy of the compared models",
    }


def variance_ratio(gap_matrix: np.ndarray) -> dict:
    """How much more gaps vary across classes than across models.

    Args:
        gap_matrix: float ``(n_models, n_classes)`` gaps of each model on each class (finite).

    Returns:
        JSON-ready dict: ``class_variance`` (variance across classes, averaged over models),
        ``model_variance`` (variance across models, averaged over classes), ``ratio``
        (class / model variance; None when either side has fewer than 2 entries or the model
        variance is 0, below 1e-12), ``n_models``, ``n_classes``.

    Example:
        >>> variance_ratio(np.array([[0.1, 0.5, 0.9], [0.2, 0.5, 0.8]]))["ratio"] > 10
        True
    """
    gap_matrix = np.asarray(gap_matrix, np.float64)
    n_models, n_classes = gap_matrix.shape if gap_matrix.ndim == 2 else (0, 0)
    result = {"class_variance": None, "model_variance": None, "ratio": None, "n_models": int(n_models), "n_classes": int(n_classes)}
    if n_models < 2 or n_classes < 2:
        return result
    class_variance = float(gap_matrix.var(axis=1, ddof=1).mean())
    model_variance = float(gap_matrix.var(axis=0, ddof=1).mean())
    result.update(class_variance=class_variance, model_variance=model_variance,
                  ratio=class_variance / model_variance if model_variance > 1e-12 else None)
    return result


def averaged_gaps(evaluations: list[ModelEvaluation], gap_config: GapConfig = GapConfig(),
                  rng: np.random.Generator | None = None) -> dict[int, GapEstimate]:
    """Per-class gaps averaged over models, with a bootstrap CI over the images.

    Every model is measured on the same top-k and bottom-k images of a class (the ranking
    is shared), so the averaged gap is the mean fraction of models right on the top-k images
    minus that on the bottom-k; the interval resamples the images of each end. A
    significantly negative averaged gap is a label-noise candidate that does not hinge on
    one model's quirks, as in the paper.

    Args:
        evaluations: models measured on one ranking (their ``predictions`` are used).
        gap_config: bootstrap settings (``n_bootstrap``, ``confidence``).
        rng: random generator (seed 0 when None).

    Returns:
        class -> :class:`~auditor.results.GapEstimate` for every class with a finite gap in
        every model; the note flags significantly negative classes.

    Raises:
        InvalidInputError: no evaluations, or evaluations without predictions.
    """
    if not evaluations:
        raise InvalidInputError("averaged_gaps needs at least one ModelEvaluation")
    if any(len(e.predictions) != e.n_images for e in evaluations):
        raise InvalidInputError("every ModelEvaluation needs its predictions (those from evaluate_model carry them)")
    rng = np.random.default_rng(0) if rng is None else rng
    first = evaluations[0]
    classes = sorted(set.intersection(*[{c for c, g in e.gaps.items() if np.isfinite(g.gap)} for e in evaluations]))
    result = {}
    for c in classes:
        estimate = first.gaps[c]
        top, bottom = np.asarray(estimate.top_indices), np.asarray(estimate.bottom_indices)
        top_right = np.mean([e.predictions[top] == c for e in evaluations], axis=0)
        bottom_right = np.mean([e.predictions[bottom] == c for e in evaluations], axis=0)
        k = len(top)
        resampled = rng.integers(0, k, size=(gap_config.n_bootstrap, 2, k))
        boot = top_right[resampled[:, 0]].mean(1) - bottom_right[resampled[:, 1]].mean(1)
        alpha = 1 - gap_config.confidence
        low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
        gap = float(top_right.mean() - bottom_right.mean())
        significant = bool(low > 0 or high < 0)
        note = f"averaged over {len(evaluations)} models"
        if significant and gap < 0:
            note += "; negative gap: the most spurious images are misclassified by most models (possible label noise)"
        result[c] = GapEstimate(
            class_index=c, gap=gap, ci_low=float(low), ci_high=float(high), significant=significant, k=k,
            top_accuracy=float(top_right.mean()), bottom_accuracy=float(bottom_right.mean()), n_images=estimate.n_images,
            top_indices=list(estimate.top_indices), bottom_indices=list(estimate.bottom_indices), note=note,
        )
    return result


def compare_models(evaluations: list[ModelEvaluation], gap_config: GapConfig = GapConfig(),
                   rng: np.random.Generator | None = None) -> dict:
    """Several models side by side on the same ranking.

    Args:
        evaluations: one :class:`ModelEvaluation` per model, all on the same split.
        gap_config: bootstrap settings of the averaged gaps.
        rng: random generator of the averaged gaps' bootstrap (seed 0 when None).

    Returns:
        JSON-ready dict: ``models`` (name, accuracy, mean gap, low/high-spuriosity accuracy,
        effective robustness, per-class gaps with CIs), ``classes`` (class indices with a
        finite gap in every model), ``correlation`` (``{a: {b: r}}``, class-wise gap Pearson
        r over those classes; None with fewer than 3), ``mean_correlation`` over distinct
        pairs, ``effective_robustness`` (:func:`effective_robustness`), ``variance_ratio``
        (:func:`variance_ratio` over those classes), ``averaged_gaps`` (class -> gap, CI,
        significant, note; :func:`averaged_gaps`, only when every evaluation has predictions)
        and ``negative_gap_classes`` (classes whose averaged gap is significantly negative).

    Raises:
        InvalidInputError: no evaluations, duplicate names, or evaluations on different splits.
    """
    if not evaluations:
        raise InvalidInputError("compare_models needs at least one ModelEvaluation")
    names = [e.name for e in evaluations]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"model names must be distinct to compare them; got {names}")
    splits = {e.split for e in evaluations}
    if len(splits) > 1:
        raise InvalidInputError(f"evaluations were made on different splits {sorted(splits)}; compare on one ranking")
    classes = sorted(set.intersection(*[{c for c, g in e.gaps.items() if np.isfinite(g.gap)} for e in evaluations]))
    vectors = {e.name: np.array([e.gaps[c].gap for c in classes]) for e in evaluations}
    correlation = {a: {b: pearson_r(vectors[a], vectors[b]) for b in names} for a in names}
    pairs = [correlation[a][b] for i, a in enumerate(names) for b in names[i + 1:] if correlation[a][b] is not None]
    robustness = effective_robustness(evaluations)
    matrix = np.array([vectors[n] for n in names]).reshape(len(names), len(classes))
    averaged: dict[int, GapEstimate] = {}
    if all(len(e.predictions) == e.n_images for e in evaluations):
        averaged = averaged_gaps(evaluations, gap_config, rng)
    return to_jsonable({
        "split": splits.pop(),
        "models": [
            {
                "name": e.name,
                "accuracy": e.accuracy,
                "mean_gap": e.mean_gap,
                "low_accuracy": e.low_accuracy,
                "high_accuracy": e.high_accuracy,
                "effective_robustness": robustness["models"].get(e.name),
                "gaps": {c: {"gap": g.gap, "ci_low": g.ci_low, "ci_high": g.ci_high, "significant": g.significant}
                         for c, g in e.gaps.items()},
            }
            for e in evaluations
        ],
        "classes": classes,
        "correlation": correlation,
        "mean_correlation": float(np.mean(pairs)) if pairs else None,
        "effective_robustness": robustness,
        "variance_ratio": variance_ratio(matrix),
        "averaged_gaps": {c: {"gap": g.gap, "ci_low": g.ci_low, "ci_high": g.ci_high, "significant": g.significant,
                              "k": g.k, "note": g.note} for c, g in averaged.items()},
        "negative_gap_classes": sorted(c for c, g in averaged.items() if g.significant and g.gap < 0),
    })
