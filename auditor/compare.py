"""Bias across many models: measure any classifier on rankings computed once.

The spuriosity rankings come from one audit (one model's features and verdicts).
Any other classifier over the same classes can then be measured on them: run it on the
same images, and compare its accuracy on each class's most and least spurious images.

``evaluate_model`` gives one model's per-class gaps (with bootstrap CIs) and its
accuracy on low- and high-spuriosity images; ``compare_models`` sets several side by
side, with the class-wise gap correlation (Pearson r) between every pair.
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
        n_images=int(len(labels)),
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


def compare_models(evaluations: list[ModelEvaluation]) -> dict:
    """Several models side by side on the same ranking.

    Args:
        evaluations: one :class:`ModelEvaluation` per model, all on the same split.

    Returns:
        JSON-ready dict: ``models`` (name, accuracy, mean gap, low/high-spuriosity accuracy,
        per-class gaps with CIs), ``classes`` (class indices with a finite gap in every
        model), ``correlation`` (``{a: {b: r}}``, class-wise gap Pearson r over those
        classes; None with fewer than 3), and ``mean_correlation`` over distinct pairs.

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
    return to_jsonable({
        "split": splits.pop(),
        "models": [
            {
                "name": e.name,
                "accuracy": e.accuracy,
                "mean_gap": e.mean_gap,
                "low_accuracy": e.low_accuracy,
                "high_accuracy": e.high_accuracy,
                "gaps": {c: {"gap": g.gap, "ci_low": g.ci_low, "ci_high": g.ci_high, "significant": g.significant}
                         for c, g in e.gaps.items()},
            }
            for e in evaluations
        ],
        "classes": classes,
        "correlation": correlation,
        "mean_correlation": float(np.mean(pairs)) if pairs else None,
    })
