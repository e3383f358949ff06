"""AuditReport: the result of :func:`auditor.audit`, as plain data that round-trips through results.json.

The report holds results only: verdicts, spuriosity rankings, gaps, tuning results, the
tuned heads as arrays and the optional stages' sections. It keeps a reference to the
audited model (never a copy, never the datasets, caches or CLIP/SAM encoders), so that
``tuned_model`` can be built on demand; a report loaded from disk has no model and can
be given one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from auditor.config import AuditConfig, load_config
from auditor.errors import InvalidInputError
from auditor.ranking import SpuriosityRanking
from auditor.results import FeatureVerdict, GapEstimate, TuningResult, to_jsonable

SCHEMA_VERSION = "1.0"
SPLITS = ("train", "val")


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
        sections: extra JSON sections from optional stages (concepts, neurontune, ...).
        meta: seed, versions, device, head and layer names, skipped classes.
        tuned_heads: method -> (weight float32 ``(K, D)``, bias float32 ``(K,)``) of every tuned
            head, baselines and NeuronTune included.
        rankings: split -> float64 ``(N,)`` spuriosity (NaN where the class has no spurious feature).
        labels: split -> int64 ``(N,)`` labels the rankings were computed with (-1: unreadable image).
        predictions: split -> int64 ``(N,)`` the audited model's predictions (-1: unreadable image).
        skipped_images: images that could not be read: ``{"split", "index", "path", "reason"}`` records.
        warnings: caveats shown at the top of the report (e.g. validation accuracy near chance).
        artifacts: paths (relative to ``evidence_dir``) and plot data of the report's images.
        evidence_dir: folder holding the evidence images made during the audit (None: none made).
        model: the audited model (not serialised); None for a report loaded from disk.
    """

    class_names: list[str]
    config: AuditConfig
    important_features: dict[int, list[int]]
    verdicts: list[FeatureVerdict]
    gaps: dict[int, GapEstimate]
    tuning: dict[str, TuningResult] = field(default_factory=dict)
    sections: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    tuned_heads: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    rankings: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    labels: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    predictions: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    skipped_images: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    artifacts: dict[str, Any] = field(default_factory=dict, repr=False)
    evidence_dir: str | None = None
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ findings

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
        """Spuriosity of every image of ``split`` ("train" or "val") in dataset order.

        Returns:
            float64 ``(N,)``; NaN where the class has no spurious feature (or the image was unreadable).

        Raises:
            InvalidInputError: unknown split, or "val" when no validation data was given.
        """
        return self.ranking(split).scores.copy()

    def ranking(self, split: str | None = None) -> SpuriosityRanking:
        """The spuriosity ranking of ``split`` with its labels, for :mod:`auditor.compare`.

        Args:
            split: "train" or "val"; None picks "val" when the audit had validation data.

        Raises:
            InvalidInputError: unknown split, or one the audit did not rank.
        """
        if split is None:
            split = "val" if "val" in self.rankings else "train"
        if split not in SPLITS:
            raise InvalidInputError(f"split must be 'train' or 'val'; got {split!r}")
        if split not in self.rankings:
            raise InvalidInputError(f"no {split!r} spuriosity: the audit was run without a {split} dataset")
        labels = self.labels.get(split)
        return SpuriosityRanking(split=split, scores=np.asarray(self.rankings[split], np.float64),
                                 labels=None if labels is None else np.asarray(labels, np.int64))

    # ------------------------------------------------------------------ models

    @property
    def tuned_model(self) -> nn.Module | None:
        """A copy of the audited model with the low-spuriosity-tuned head (None when tuning is off).

        Raises:
            InvalidInputError: the report was loaded from disk and has no model (use :meth:`with_head`).
        """
        if "low_spuriosity" not in self.tuned_heads:
            return None
        return self.with_head("low_spuriosity")

    @property
    def extra_models(self) -> dict[str, nn.Module]:
        """Other tuned copies of the model by name (e.g. "neurontune"), built on demand."""
        names = [name for name in self.tuned_heads if name not in self.tuning]
        return {name: self.with_head(name) for name in names}

    def with_head(self, method: str, model: nn.Module | None = None) -> nn.Module:
        """A deep copy of ``model`` (default: the audited model) with the head tuned by ``method``.

        Args:
            method: a key of ``tuned_heads`` ("low_spuriosity", "random", "error", "neurontune").
            model: the model to copy (needed for a report loaded from disk).

        Returns:
            The copy in eval mode; the original is untouched.

        Raises:
            InvalidInputError: unknown method, or no model.
            UnsupportedModelError: a head that does not fit the model.
        """
        if method not in self.tuned_heads:
            raise InvalidInputError(f"no tuned head {method!r}; available: {sorted(self.tuned_heads)}")
        model = model if model is not None else self.model
        if model is None:
            raise InvalidInputError(
                "this report has no model (it was loaded from disk); pass the audited model: "
                f"report.with_head({method!r}, model)"
            )
        from auditor.model import copy_with_head

        weight, bias = self.tuned_heads[method]
        return copy_with_head(model, self.meta.get("head"), weight, bias)

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

        return evaluate_model(self.ranking(split), other_model, dataset, gap_config=self.config.gaps,
                              seed=self.config.seed, batch_size=self.config.data.batch_size,
                              mean=self.config.data.mean, std=self.config.data.std)

    def compare(self, models: dict[str, nn.Module], dataset, split: str | None = None, audited_model: nn.Module | None = None) -> dict[str, Any]:
        """Measure several models on this audit's rankings and store the comparison in the report.

        The audited model is included as "audited model". The comparison (per-model gaps with
        CIs, class-wise gap Pearson r, accuracy on low vs high spuriosity images, effective
        robustness, the variance ratio of gaps across classes vs models, and gaps averaged over
        the models with the significantly negative ones flagged) is stored as
        ``sections["model_comparison"]`` and rendered with a plot in the HTML report.

        Args:
            models: name -> classifier with the same classes.
            dataset: the dataset the ranking was computed on (same order).
            split: which ranking to use ("val" when available, else "train").
            audited_model: the audited model, for a report loaded from disk.

        Returns:
            The comparison dict (see :func:`auditor.compare.compare_models`).

        Raises:
            InvalidInputError: no audited model is known.
        """
        from auditor.compare import compare_models

        audited = audited_model if audited_model is not None else self.model
        if audited is None:
            raise InvalidInputError("this report has no model (it was loaded from disk); pass `audited_model=`")
        candidates = {"audited model": audited, **models}
        evaluations = []
        for name, model in candidates.items():
            evaluation = self.evaluate(model, dataset, split=split)
            evaluations.append(dataclasses.replace(evaluation, name=name))
        self.sections["model_comparison"] = compare_models(evaluations, self.config.gaps, np.random.default_rng(self.config.seed))
        return self.sections["model_comparison"]

    # ------------------------------------------------------------------ integrations

    def log_to_mlflow(self, run: Any = None, **options: Any) -> str:
        """Log this audit to MLflow (``pip install "auditor[mlflow]"``).

        Logs the resolved config as params, the headline figures as metrics (per-class gap with
        CI bounds, max and mean gap, number of spurious features, accuracy before/after tuning,
        gate pass/fail), results.json, report.html and the evidence images as artifacts, and the
        tuned model with ``mlflow.pytorch``. See :func:`auditor.integrations.mlflow.log_report`.

        Args:
            run: an MLflow run id or Run to log into; None: a new run, or a nested child of the
                active run (``report.mlflow.nested``).
            **options: ``tracking_uri``, ``experiment``, ``run_name``, ``log_model``, ``nested``,
                ``output_dir``, ``gate``, ``input_example`` (defaults from ``config.report.mlflow``).

        Returns:
            The run id.

        Raises:
            MissingDependencyError: mlflow is not installed.

        Example:
            >>> run_id = report.log_to_mlflow()                     # doctest: +SKIP
        """
        from auditor.integrations.mlflow import log_report

        return log_report(self, run, **options)

    def to_fiftyone(self, dataset_name: str, **options: Any):
        """The audited images as a FiftyOne dataset (``pip install "auditor[fiftyone]"``).

        One sample per audited image with its label, prediction, spuriosity, top-k / bottom-k
        membership, its class's spurious features and the heatmap of its class's most spurious
        feature; a saved view per class sorted by spuriosity. See
        :func:`auditor.integrations.fiftyone.to_fiftyone`.

        Args:
            dataset_name: name of the FiftyOne dataset (replaced when it exists).
            **options: ``split``, ``image_paths``, ``dataset``, ``image_dir``, ``overwrite``, ``persistent``.

        Returns:
            The ``fiftyone.Dataset``.

        Raises:
            MissingDependencyError: fiftyone is not installed.

        Example:
            >>> dataset = report.to_fiftyone("my-audit")            # doctest: +SKIP
        """
        from auditor.integrations.fiftyone import to_fiftyone

        return to_fiftyone(self, dataset_name, **options)

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """All findings as JSON-ready nested dicts with stable keys and a schema version."""
        classes = []
        for c, name in enumerate(self.class_names):
            classes.append({
                "index": c,
                "name": name,
                "important_features": self.important_features.get(c, []),
                "spurious_features": self.spurious_features(c),
                "core_features": self.core_features(c),
                "verdicts": [v for v in self.verdicts if v.class_index == c],
                "gap": self.gaps.get(c),
            })
        results = to_jsonable({
            "schema_version": SCHEMA_VERSION,
            "class_names": self.class_names,
            "config": self.config.to_dict(),
            "classes": classes,
            "tuning": self.tuning,
            "sections": self.sections,
            "meta": self.meta,
            "skipped_images": self.skipped_images,
            "warnings": self.warnings,
        })
        if self.artifacts:
            results["artifacts"] = to_jsonable(self.artifacts)
        return results

    def save(self, path: str | Path) -> Path:
        """Write results.json, and beside it the rankings (``spuriosity_<split>.npy``), labels (``labels_<split>.npy``),
        predictions (``predictions_<split>.npy``) and tuned heads (``tuned_heads.npz``).

        Args:
            path: a folder (receiving results.json) or a ``.json`` file path.

        Returns:
            The path of results.json.
        """
        path = Path(path)
        if path.suffix != ".json":
            path = path / "results.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        for split, scores in self.rankings.items():
            np.save(path.parent / f"spuriosity_{split}.npy", np.asarray(scores, np.float64))
        for split, labels in self.labels.items():
            np.save(path.parent / f"labels_{split}.npy", np.asarray(labels, np.int64))
        for split, predictions in self.predictions.items():
            np.save(path.parent / f"predictions_{split}.npy", np.asarray(predictions, np.int64))
        if self.tuned_heads:
            arrays = {}
            for method, (weight, bias) in self.tuned_heads.items():
                arrays[f"{method}.weight"], arrays[f"{method}.bias"] = weight, bias
            np.savez(path.parent / "tuned_heads.npz", **arrays)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None) -> AuditReport:
        """Read a report written by :meth:`save` (or ``auditor audit``).

        Args:
            path: results.json or the folder holding it.
            model: the audited model, to rebuild tuned models (optional).

        Returns:
            The report; ``to_dict()`` equals the saved results.json (apart from a ``gate`` entry).

        Raises:
            InvalidInputError: missing file, not an auditor results.json, or an unsupported schema version.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "results.json"
        data = read_results(path)
        folder = path.parent
        rankings = {s: np.load(folder / f"spuriosity_{s}.npy") for s in SPLITS if (folder / f"spuriosity_{s}.npy").exists()}
        labels = {s: np.load(folder / f"labels_{s}.npy") for s in SPLITS if (folder / f"labels_{s}.npy").exists()}
        predictions = {s: np.load(folder / f"predictions_{s}.npy") for s in SPLITS if (folder / f"predictions_{s}.npy").exists()}
        heads: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if (folder / "tuned_heads.npz").exists():
            with np.load(folder / "tuned_heads.npz") as stored:
                for key in stored.files:
                    method, part = key.rsplit(".", 1)
                    weight, bias = heads.get(method, (None, None))
                    heads[method] = (stored[key], bias) if part == "weight" else (weight, stored[key])
        classes = data["classes"]
        artifacts = data.get("artifacts") or {}
        return cls(
            class_names=list(data["class_names"]),
            config=load_config(data["config"]),
            important_features={int(e["index"]): list(e.get("important_features", [])) for e in classes},
            verdicts=[_from_dict(FeatureVerdict, v) for e in classes for v in e.get("verdicts", [])],
            gaps={int(e["index"]): _from_dict(GapEstimate, e["gap"]) for e in classes if e.get("gap")},
            tuning={m: _from_dict(TuningResult, r) for m, r in (data.get("tuning") or {}).items()},
            sections=data.get("sections") or {},
            meta=data.get("meta") or {},
            tuned_heads=heads,
            rankings=rankings,
            labels=labels,
            predictions=predictions,
            skipped_images=list(data.get("skipped_images") or []),
            warnings=list(data.get("warnings") or []),
            artifacts=artifacts,
            evidence_dir=str(folder) if artifacts else None,
            model=model,
        )

    def summary(self) -> str:
        """The findings as an aligned text table, one line per class (see :func:`auditor.report.summary.format_summary`)."""
        from auditor.report.summary import format_summary

        return format_summary(self.to_dict())


def read_results(path: str | Path) -> dict[str, Any]:
    """Read and check an auditor results.json.

    Raises:
        InvalidInputError: missing file, not JSON, not an auditor results.json, or an unsupported schema version.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"results file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InvalidInputError(f"{str(path)!r} is not a results JSON file: {error}") from None
    if not isinstance(data, dict) or "schema_version" not in data or "classes" not in data:
        raise InvalidInputError(f"{str(path)!r} is not an auditor results.json (no schema_version/classes)")
    if str(data["schema_version"]).split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise InvalidInputError(f"{str(path)!r} has schema version {data['schema_version']}; this auditor reads {SCHEMA_VERSION}")
    return data


def _from_dict(cls: type, values: dict[str, Any]):
    """A result dataclass from its JSON form (None restored to NaN for float fields, unknown keys dropped)."""
    kwargs = {}
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    for name, annotation in hints.items():
        if name not in values:
            continue
        value = values[name]
        if value is None and "float" in str(annotation):
            value = math.nan
        kwargs[name] = value
    return cls(**kwargs)


def environment_meta() -> dict[str, str]:
    """Versions of Python and the main libraries, for the report."""
    import sklearn
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__, "scikit-learn": sklearn.__version__}
