"""AuditReport: the result of :func:`auditor.audit`, with JSON export."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from auditor.config import AuditConfig
from auditor.errors import InvalidInputError
from auditor.results import FeatureVerdict, GapEstimate, TuningResult, to_jsonable

SCHEMA_VERSION = "1.0"


@dataclass
class AuditReport:
    """Findings of one audit.

    Attributes:
        class_names: one per head output.
        config: the resolved configuration.
        important_features: class -> important features (most important first).
        verdicts: core/spurious verdict per important (class, feature), with evidence.
        gaps: class -> spurious gap on the evaluation split (val when given, else train).
        tuning: method -> before/after metrics of head tuning (ours and baselines).
        tuned_model: a copy of the model with the low-spuriosity-tuned head (None when tuning is off).
        sections: extra JSON sections from optional stages (concepts, neurontune, ...).
        meta: seed, versions, device, skipped classes.
        extra_models: other tuned copies by name (e.g. "neurontune").
        tuned_heads: method -> (weight ``(K, D)``, bias ``(K,)``) of every tuned head, baselines included.
    """

    class_names: list[str]
    config: AuditConfig
    important_features: dict[int, list[int]]
    verdicts: list[FeatureVerdict]
    gaps: dict[int, GapEstimate]
    tuning: dict[str, TuningResult] = field(default_factory=dict)
    tuned_model: nn.Module | None = None
    sections: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    extra_models: dict[str, nn.Module] = field(default_factory=dict)
    tuned_heads: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    _spuriosity: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _context: Any = field(default=None, repr=False)

    def _check_class(self, class_index: int) -> None:
        if not 0 <= class_index < len(self.class_names):
            raise InvalidInputError(f"class index {class_index} is outside 0..{len(self.class_names) - 1}")

    def spurious_features(self, class_index: int) -> list[int]:
        """Feature indices judged spurious for ``class_index`` (empty if none)."""
        self._check_class(class_index)
        return [v.feature for v in self.verdicts if v.class_index == class_index and v.label == "spurious"]

    def core_features(self, class_index: int) -> list[int]:
        """Feature indices judged core for ``class_index``."""
        self._check_class(class_index)
        return [v.feature for v in self.verdicts if v.class_index == class_index and v.label == "core"]

    def spuriosity(self, split: str = "train") -> np.ndarray:
        """Spuriosity of every image of ``split`` ("train" or "val") in dataset order; NaN where the class has no spurious feature.

        Raises:
            InvalidInputError: unknown split, or "val" when no validation data was given.
        """
        if split not in ("train", "val"):
            raise InvalidInputError(f"split must be 'train' or 'val'; got {split!r}")
        if split not in self._spuriosity:
            raise InvalidInputError(f"no {split!r} spuriosity: the audit was run without a {split} dataset")
        return self._spuriosity[split].copy()

    def evaluate(self, other_model: nn.Module, dataset, split: str | None = None):
        """Measure another model's per-class gaps on this audit's spuriosity rankings.

        Args:
            other_model: any classifier with the same classes.
            dataset: the dataset the ranking was computed on (same order).
            split: which ranking to use ("val" when available, else "train").

        Returns:
            :class:`auditor.compare.ModelEvaluation`.
        """
        from auditor.compare import evaluate_model

        return evaluate_model(self, other_model, dataset, split=split)

    def compare(self, models: dict[str, nn.Module], dataset, split: str | None = None) -> dict[str, Any]:
        """Measure several models on this audit's rankings and store the comparison in the report.

        The original model is included as "audited model". The comparison (per-model gaps with
        CIs, class-wise gap Pearson r, accuracy on low vs high spuriosity images) is stored as
        ``sections["model_comparison"]`` and rendered with a plot in the HTML report.

        Args:
            models: name -> classifier with the same classes.
            dataset: the dataset the ranking was computed on (same order).
            split: which ranking to use ("val" when available, else "train").

        Returns:
            The comparison dict (see :func:`auditor.compare.compare_models`).
        """
        from auditor.compare import compare_models, evaluate_model

        candidates = {"audited model": self._context.adapter.model, **models}
        evaluations = [evaluate_model(self, model, dataset, split=split, name=name) for name, model in candidates.items()]
        self.sections["model_comparison"] = compare_models(evaluations)
        return self.sections["model_comparison"]

    def to_dict(self) -> dict[str, Any]:
        """All findings as JSON-ready nested dicts with stable keys and a schema version."""
        classes = []
        for c, name in enumerate(self.class_names):
            verdicts = [v for v in self.verdicts if v.class_index == c]
            gap = self.gaps.get(c)
            classes.append({
                "index": c,
                "name": name,
                "important_features": self.important_features.get(c, []),
                "spurious_features": self.spurious_features(c),
                "core_features": self.core_features(c),
                "verdicts": verdicts,
                "gap": gap,
            })
        return to_jsonable({
            "schema_version": SCHEMA_VERSION,
            "class_names": self.class_names,
            "config": self.config.to_dict(),
            "classes": classes,
            "tuning": self.tuning,
            "sections": self.sections,
            "meta": self.meta,
        })

    def save(self, path: str | Path) -> Path:
        """Write ``to_dict()`` as JSON to ``path`` (a file, or a folder receiving results.json).

        Returns:
            The path of the written file.
        """
        path = Path(path)
        if path.suffix != ".json":
            path.mkdir(parents=True, exist_ok=True)
            path = path / "results.json"
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    def summary(self) -> str:
        """A short human-readable table of the findings, one line per class."""
        lines = [f"{'class':<14}{'spurious':<18}{'core':<18}{'gap':>8}  95% CI"]
        for c, name in enumerate(self.class_names):
            gap = self.gaps.get(c)
            gap_text = "     n/a" if gap is None or not np.isfinite(gap.gap) else f"{gap.gap:+8.3f}  [{gap.ci_low:+.3f}, {gap.ci_high:+.3f}]{' *' if gap.significant else ''}"
            lines.append(f"{name:<14}{str(self.spurious_features(c)):<18}{str(self.core_features(c)):<18}{gap_text}")
        return "\n".join(lines)


def environment_meta() -> dict[str, str]:
    """Versions of Python and the main libraries, for the report."""
    import sklearn
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__, "scikit-learn": sklearn.__version__}
