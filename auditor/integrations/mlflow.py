"""Log an audit to MLflow: the resolved config as params, headline figures as metrics, the report files and the tuned model.

What one call logs (names are prefixed so that an audit logged into a training run's own run
cannot collide with the run's params and metrics):

* params ``auditor.<dotted config key>``: the resolved configuration;
* metrics ``audit.<name>``: every gate metric that the results give (``max_gap``, ``mean_gap``,
  ``max_gap_ci_low``, ``n_significant_gaps``, ``n_spurious``, ...), ``n_spurious_features``,
  per class ``gap.<class>``, ``gap_ci_low.<class>``, ``gap_ci_high.<class>``, the accuracy and max gap
  before and after low-spuriosity tuning (``accuracy_before``, ``accuracy_after``,
  ``max_gap_before``, ``max_gap_after``) and ``gate_passed`` (1 or 0, only with a gate);
* artifacts under ``auditor/``: results.json, report.html and the evidence images (``artifacts/``);
* the low-spuriosity-tuned model with :mod:`mlflow.pytorch` (``tuned_model``), when asked for and
  the report has its model and a tuned head;
* tags ``auditor.gate`` (the gate's reason) and ``auditor.version``.

Runs: with no run given and none active, a new run is started in ``report.mlflow.experiment``; with
an active run (a training pipeline's), a nested child run is started (``report.mlflow.nested: true``)
or the active run itself receives the audit; an explicit run (a run id or ``mlflow.entities.Run``)
is resumed and logged into.

Example:
    >>> report = auditor.audit(model, train, val)                    # doctest: +SKIP
    >>> run_id = report.log_to_mlflow()                              # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditor.integrations import require

if TYPE_CHECKING:
    from auditor.report.audit_report import AuditReport

logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
"""The embedded default store: a SQLite file in the current folder (used when neither the config nor
``$MLFLOW_TRACKING_URI`` names a tracking server)."""
PARAM_PREFIX = "auditor."
METRIC_PREFIX = "audit."
ARTIFACT_PATH = "auditor"
MODEL_NAME = "tuned_model"
_MAX_PARAM_LENGTH = 6000
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")


def _mlflow():
    return require("mlflow", "mlflow", "logging to MLflow (`report.log_to_mlflow`, `auditor audit --mlflow`)")


def metric_key(*parts: Any) -> str:
    """An MLflow-safe metric name ``audit.<part>.<part>`` (characters MLflow rejects become ``_``).

    Example:
        >>> metric_key("gap", "water bird (0)")
        'audit.gap.water bird _0_'
    """
    return METRIC_PREFIX + ".".join(_UNSAFE.sub("_", str(p)) for p in parts)


def flatten_config(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config dicts as ``{dotted key: text}`` for MLflow params (texts cut to MLflow's 6000 characters).

    Example:
        >>> flatten_config({"gaps": {"min_k": 5}, "seed": 0})
        {'gaps.min_k': '5', 'seed': '0'}
    """
    flat: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)[:_MAX_PARAM_LENGTH]
    return flat


def headline_metrics(results: dict[str, Any]) -> dict[str, float]:
    """The figures a pipeline tracks, from a results dict (``AuditReport.to_dict()``, with ``gate`` when set).

    Args:
        results: the results dict.

    Returns:
        metric name (``audit.``-prefixed) -> finite value; figures the results do not give are absent.
    """
    from auditor.gate import compute_metrics

    metrics: dict[str, float] = {}
    for name, (value, _) in compute_metrics(results).items():
        metrics[metric_key(name)] = float(value)
    n_spurious = sum(len(entry.get("spurious_features") or []) for entry in results.get("classes", []))
    metrics[metric_key("n_spurious_features")] = float(n_spurious)
    for entry in results.get("classes", []):
        gap = entry.get("gap") or {}
        for field, name in (("gap", "gap"), ("ci_low", "gap_ci_low"), ("ci_high", "gap_ci_high")):
            value = gap.get(field)
            if isinstance(value, (int, float)) and math.isfinite(value):
                metrics[metric_key(name, entry.get("name", entry.get("index")))] = float(value)
    tuning = (results.get("tuning") or {}).get("low_spuriosity") or {}
    for stage in ("before", "after"):
        for figure in ("accuracy", "max_gap", "mean_gap", "worst_class_accuracy"):
            value = (tuning.get(stage) or {}).get(figure)
            if isinstance(value, (int, float)) and math.isfinite(value):
                metrics[metric_key(f"{figure}_{stage}")] = float(value)
    gate = results.get("gate")
    if isinstance(gate, dict) and "passed" in gate:
        metrics[metric_key("gate_passed")] = 1.0 if gate["passed"] else 0.0
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


def _run_id(run: Any) -> str:
    if isinstance(run, str):
        return run
    info = getattr(run, "info", None)
    if info is not None and getattr(info, "run_id", None):
        return info.run_id
    from auditor.errors import InvalidInputError

    raise InvalidInputError(f"run must be an MLflow run id or an mlflow Run; got {type(run).__name__}")


@contextmanager
def _tracking_uri(mlflow, uri: str | None) -> Iterator[None]:
    """Point MLflow at ``uri`` for the duration (the caller's tracking URI is restored after)."""
    if uri is None:
        yield
        return
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def _run_scope(mlflow, run: Any, experiment: str, run_name: str | None, nested: bool):
    """A context manager yielding the run to log into: a run this call starts or resumes, or the active one."""
    active = mlflow.active_run()
    if run is not None:
        run_id = _run_id(run)
        if active is not None and active.info.run_id == run_id:
            return nullcontext(active)
        return mlflow.start_run(run_id=run_id, nested=active is not None)
    if active is not None:
        if not nested:
            return nullcontext(active)
        return mlflow.start_run(run_name=run_name, nested=True, experiment_id=active.info.experiment_id)
    experiment_id = mlflow.set_experiment(experiment).experiment_id
    return mlflow.start_run(run_name=run_name, experiment_id=experiment_id)


def _log_into(mlflow, scope, report: AuditReport, results: dict, folder: Path, log_model: bool, input_example: Any) -> str:
    """Log params, metrics, tags, files and the tuned model into the run ``scope`` yields; its run id."""
    with scope as active:
        run_id = active.info.run_id
        params = flatten_config(results.get("config") or report.config.to_dict(), PARAM_PREFIX)
        items = list(params.items())
        for start in range(0, len(items), 100):
            mlflow.log_params(dict(items[start:start + 100]))
        mlflow.log_metrics(headline_metrics(results))
        from auditor import __version__ as version

        tags = {"auditor.version": version}
        if isinstance(results.get("gate"), dict):
            tags["auditor.gate"] = str(results["gate"].get("reason", ""))[:5000]
        mlflow.set_tags(tags)
        for name in ("results.json", "report.html"):
            if (folder / name).is_file():
                mlflow.log_artifact(str(folder / name), artifact_path=ARTIFACT_PATH)
        if (folder / "artifacts").is_dir():
            mlflow.log_artifacts(str(folder / "artifacts"), artifact_path=f"{ARTIFACT_PATH}/artifacts")
        if log_model:
            _log_tuned_model(mlflow, report, input_example)
        logger.info("logged the audit to MLflow run %s (%s)", run_id, mlflow.get_tracking_uri())
    return run_id


def log_report(
    report: AuditReport,
    run: Any = None,
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    log_model: bool | None = None,
    nested: bool | None = None,
    output_dir: str | Path | None = None,
    gate: dict | None = None,
    input_example: Any = None,
) -> str:
    """Log an audit report to MLflow.

    Settings not given here come from ``report.config.report.mlflow``.

    Args:
        report: the audit report.
        run: an MLflow run id or ``mlflow.entities.Run`` to log into (resumed when not active);
            None: a new run, or a nested child of the active run (see ``nested``).
        tracking_uri: the tracking server or store; None: the config's, else (when no run is active
            and none is given) ``$MLFLOW_TRACKING_URI``, else the local SQLite store ``mlflow.db``.
        experiment: experiment of a new run (not of a nested one, which joins its parent's).
        run_name: name of a new run.
        log_model: log the low-spuriosity-tuned model with ``mlflow.pytorch``.
        nested: with an active run and ``run=None``: a nested child run (True) or the active run (False).
        output_dir: the folder ``auditor audit``/``write_outputs`` wrote results.json, report.html and
            artifacts/ to; None: they are written to a temporary folder first.
        gate: the gate verdict (default: the one in ``output_dir``'s results.json, else evaluated from
            ``config.gate.fail_on`` when set).
        input_example: a batch of model inputs (tensor or array, e.g. ``(1, 3, H, W)``); with it the
            tuned model is saved in MLflow's traced "pt2" format, without it as a pickle (the model's
            class must then be importable where it is loaded).

    Returns:
        The run id that received the audit.

    Raises:
        MissingDependencyError: mlflow is not installed (``pip install "auditor[mlflow]"``).
        InvalidInputError: ``run`` is neither a run id nor a Run.
    """
    import json

    mlflow = _mlflow()
    settings = report.config.report.mlflow
    uri = tracking_uri or settings.tracking_uri
    if uri is None and run is None and mlflow.active_run() is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        uri = DEFAULT_TRACKING_URI
    experiment = experiment or settings.experiment
    run_name = run_name if run_name is not None else settings.run_name
    log_model = settings.log_model if log_model is None else log_model
    nested = settings.nested if nested is None else nested

    written = tempfile.TemporaryDirectory(prefix="auditor-mlflow-") if output_dir is None else nullcontext(str(output_dir))
    with written as output_folder:
        if output_dir is None:
            from auditor.api import write_outputs

            write_outputs(report, output_folder, gate)
        folder = Path(output_folder)
        results = json.loads((folder / "results.json").read_text()) if (folder / "results.json").is_file() else report.to_dict()
        if gate is not None:
            results["gate"] = gate
        elif "gate" not in results and report.config.gate.fail_on:
            from auditor.gate import gate_verdict

            results["gate"] = gate_verdict(results, report.config.gate.fail_on)

        with _tracking_uri(mlflow, uri):
            run_id = _log_into(mlflow, _run_scope(mlflow, run, experiment, run_name, nested), report, results, folder,
                               log_model, input_example)
    return run_id


def _log_tuned_model(mlflow, report: AuditReport, input_example: Any = None) -> None:
    if "low_spuriosity" not in report.tuned_heads:
        logger.warning("mlflow: no low-spuriosity head (tuning was off), so no tuned model is logged")
        return
    if report.model is None:
        logger.warning("mlflow: the report has no model (loaded from disk), so the tuned model is not logged; "
                       "pass the model to AuditReport.load(path, model)")
        return
    import mlflow.pytorch
    import torch

    requirements = [f"torch=={torch.__version__.split('+')[0]}"]
    if input_example is None:
        mlflow.pytorch.log_model(report.tuned_model, name=MODEL_NAME, pip_requirements=requirements, serialization_format="pickle")
    else:
        mlflow.pytorch.log_model(report.tuned_model, name=MODEL_NAME, pip_requirements=requirements, serialization_format="pt2",
                                 input_example=input_example)
