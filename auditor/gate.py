"""Pass/fail gate on an audit's results, for CI pipelines that must block a model.

A condition reads ``<metric><op><number>``, e.g. ``"max_gap>0.10"``; the gate *fails*
when any condition holds. Metrics are read from the results dict
(``AuditReport.to_dict()`` / ``results.json``):

==========================  ===============================================================
metric                      meaning
==========================  ===============================================================
``max_gap``                 largest spurious gap over classes (top-k minus bottom-k accuracy)
``mean_gap``                mean gap over classes with a gap
``max_gap_ci_low``          largest lower confidence bound of a gap (a conservative ``max_gap``)
``n_significant_gaps``      classes whose gap is positive and significant (CI excludes 0)
``n_spurious``              (class, feature) pairs labelled spurious
``n_spurious_significant``  spurious pairs in classes with a positive significant gap
``worst_decile_accuracy``   lowest accuracy over the ten spuriosity deciles (original head)
``accuracy``                accuracy of the original head on the evaluation split
``worst_class_accuracy``    lowest per-class accuracy of the original head
``n_skipped_classes``       classes left out of the audit (``meta.skipped_classes``), e.g. too few images
``n_skipped_images``        unreadable images skipped while reading the data (``skipped_images``)
==========================  ===============================================================

Operators: ``>``, ``>=``, ``<``, ``<=``, ``==``, ``!=``.

:func:`gate_verdict` is the one gate path: the API stores its dict as ``results["gate"]``
and the CLI turns it into the exit code. This module does not import :mod:`auditor.config`
(the config imports :func:`parse_conditions` to check ``gate.fail_on`` when it loads).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from auditor.errors import ConfigError

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne, ">": operator.gt, "<": operator.lt,
}
_PATTERN = re.compile(r"^\s*([a-z_]+)\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Condition:
    """One failing condition: the gate fails when ``metric op threshold`` holds."""

    metric: str
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _gaps(results: dict) -> list[tuple[str, dict]]:
    out = []
    for entry in results.get("classes", []):
        gap = entry.get("gap")
        if isinstance(gap, dict) and _finite(gap.get("gap")):
            out.append((str(entry.get("name", entry.get("index"))), gap))
    return out


def _before(results: dict) -> dict:
    for tuning in (results.get("tuning") or {}).values():
        if isinstance(tuning, dict) and isinstance(tuning.get("before"), dict):
            return tuning["before"]
    return (results.get("sections") or {}).get("metrics") or {}


def _flatten(values: Any) -> list[float]:
    if isinstance(values, dict):
        return [v for item in values.values() for v in _flatten(item)]
    if isinstance(values, (list, tuple)):
        return [v for item in values for v in _flatten(item)]
    return [float(values)] if _finite(values) else []


def compute_metrics(results: dict) -> dict[str, tuple[float, str]]:
    """Every gate metric available in ``results``, with a short note on where it comes from.

    Args:
        results: the results dict (``AuditReport.to_dict()``).

    Returns:
        metric name -> ``(value, note)``; metrics the results cannot give are absent.
    """
    metrics: dict[str, tuple[float, str]] = {}
    gaps = _gaps(results)
    if gaps:
        name, worst = max(gaps, key=lambda item: item[1]["gap"])
        metrics["max_gap"] = (float(worst["gap"]), f"class {name!r}")
        metrics["mean_gap"] = (sum(g["gap"] for _, g in gaps) / len(gaps), f"{len(gaps)} classes")
        lows = [(n, g["ci_low"]) for n, g in gaps if _finite(g.get("ci_low"))]
        if lows:
            low_name, low = max(lows, key=lambda item: item[1])
            metrics["max_gap_ci_low"] = (float(low), f"class {low_name!r}")
    significant = {n for n, g in gaps if g.get("significant") and g["gap"] > 0}
    if "classes" in results:
        metrics["n_significant_gaps"] = (float(len(significant)), ", ".join(sorted(significant)) or "none")
        spurious = [
            (str(entry.get("name", entry.get("index"))), v)
            for entry in results["classes"]
            for v in entry.get("verdicts", [])
            if v.get("label") == "spurious"
        ]
        metrics["n_spurious"] = (float(len(spurious)), f"{len(spurious)} (class, feature) pairs")
        in_significant = [(n, v) for n, v in spurious if n in significant]
        metrics["n_spurious_significant"] = (
            float(len(in_significant)),
            ", ".join(f"{n}/{v.get('feature')}" for n, v in in_significant[:5]) or "none",
        )
    before = _before(results)
    deciles = _flatten(before.get("decile_accuracy"))
    if deciles:
        metrics["worst_decile_accuracy"] = (min(deciles), "original head")
    if _finite(before.get("accuracy")):
        metrics["accuracy"] = (float(before["accuracy"]), "original head")
    if _finite(before.get("worst_class_accuracy")):
        metrics["worst_class_accuracy"] = (float(before["worst_class_accuracy"]), "original head")
    meta = results.get("meta")
    if isinstance(meta, dict):
        skipped = meta.get("skipped_classes") or {}
        names = ", ".join(sorted(map(str, skipped))[:5]) or "none"
        metrics["n_skipped_classes"] = (float(len(skipped)), names)
    if isinstance(results.get("skipped_images"), list):
        images = results["skipped_images"]
        by_split: dict[str, int] = {}
        for item in images:
            split = str(item.get("split", "?")) if isinstance(item, dict) else "?"
            by_split[split] = by_split.get(split, 0) + 1
        metrics["n_skipped_images"] = (float(len(images)), ", ".join(f"{n} {s}" for s, n in sorted(by_split.items())) or "none")
    return metrics


TUNING_METRICS = ("worst_decile_accuracy", "accuracy", "worst_class_accuracy")
"""Metrics read from the head-tuning section (absent when ``tuning.enabled`` is false)."""

METRIC_DOCS: dict[str, str] = {
    "max_gap": "largest spurious gap over classes (top-k minus bottom-k accuracy)",
    "mean_gap": "mean gap over classes with a gap",
    "max_gap_ci_low": "largest lower confidence bound of a gap (a conservative `max_gap`)",
    "n_significant_gaps": "classes whose gap is positive and significant (CI excludes 0)",
    "n_spurious": "(class, feature) pairs labelled spurious",
    "n_spurious_significant": "spurious pairs in classes with a positive significant gap",
    "worst_decile_accuracy": "lowest accuracy over the ten spuriosity deciles (original head; needs tuning)",
    "accuracy": "accuracy of the original head on the evaluation split (needs tuning)",
    "worst_class_accuracy": "lowest per-class accuracy of the original head (needs tuning)",
    "n_skipped_classes": "classes left out of the audit (`meta.skipped_classes`, e.g. too few images)",
    "n_skipped_images": "unreadable images skipped while reading the data (`skipped_images`)",
}
"""Every gate metric with its meaning (docs/CONFIG.md's table is generated from it)."""

METRICS = tuple(METRIC_DOCS)


def parse_condition(text: str) -> Condition:
    """Parse ``"max_gap>0.10"`` into a :class:`Condition`.

    Raises:
        ConfigError: bad syntax or an unknown metric (naming the allowed ones).

    Example:
        >>> parse_condition("max_gap > 0.1")
        Condition(metric='max_gap', op='>', threshold=0.1)
    """
    match = _PATTERN.match(str(text))
    if not match:
        raise ConfigError(
            f"cannot read gate condition {text!r}; expected <metric><op><number> such as 'max_gap>0.10' "
            f"with op one of {sorted(_OPS)}"
        )
    metric, op, number = match.groups()
    if metric not in METRICS:
        import difflib

        hint = difflib.get_close_matches(metric, METRICS, n=1)
        raise ConfigError(
            f"unknown gate metric {metric!r} in {text!r}; allowed: {list(METRICS)}." + (f" Did you mean {hint[0]!r}?" if hint else "")
        )
    return Condition(metric, op, float(number))


def parse_conditions(texts: Iterable[str]) -> list[Condition]:
    """Parse several conditions; each string may hold several separated by commas or ``;``."""
    return [parse_condition(part) for text in texts for part in re.split(r"[,;]", str(text)) if part.strip()]


def evaluate_gate(results: dict, conditions: Iterable[str | Condition]) -> tuple[bool, str]:
    """Check the results against failing conditions.

    Args:
        results: the results dict.
        conditions: strings such as ``"max_gap>0.10"`` or parsed :class:`Condition` objects.
            An empty list always passes.

    Returns:
        ``(passed, reason)``: ``reason`` is one line naming every condition that held
        (with the measured value and where it comes from), or saying all passed.

    Raises:
        ConfigError: a malformed condition, or a metric the results cannot give
            (e.g. ``worst_decile_accuracy`` when tuning did not run).

    Example:
        >>> evaluate_gate({"classes": [{"name": "cat", "gap": {"gap": 0.3, "significant": True}}]}, ["max_gap>0.1"])
        (False, "gate failed: max_gap=0.3 > 0.1 (class 'cat')")
    """
    conditions = list(conditions)
    parsed = [c for c in conditions if isinstance(c, Condition)]
    parsed += parse_conditions(c for c in conditions if not isinstance(c, Condition))
    if not parsed:
        return True, "gate passed: no conditions"
    metrics = compute_metrics(results)
    failures = []
    for condition in parsed:
        if condition.metric not in metrics:
            raise ConfigError(
                f"gate metric {condition.metric!r} is not available in these results "
                f"(available: {sorted(metrics)}); enable the stage that produces it or drop the condition"
            )
        value, note = metrics[condition.metric]
        if _OPS[condition.op](value, condition.threshold):
            failures.append(f"{condition.metric}={value:.4g} {condition.op} {condition.threshold:g} ({note})")
    if failures:
        return False, "gate failed: " + "; ".join(failures)
    summary = ", ".join(f"{c.metric}={metrics[c.metric][0]:.4g}" for c in parsed)
    return True, f"gate passed: {summary}"


def gate_verdict(results: dict, conditions: Iterable[str | Condition]) -> dict[str, Any]:
    """The gate's verdict as stored in ``results["gate"]``: the one gate path of the API and the CLI.

    Args:
        results: the results dict (``AuditReport.to_dict()`` / ``results.json``).
        conditions: failing conditions such as ``"max_gap>0.10"`` (strings or parsed
            :class:`Condition` objects); an empty list always passes.

    Returns:
        ``{"conditions": [str, ...], "passed": bool, "reason": str}``. When a condition names a
        metric these results cannot give (e.g. ``max_gap`` when every class was skipped), the
        verdict does not pass, its reason starts with ``"gate error: "`` and the dict gains
        ``"error"`` (the message), so callers can still write the results before failing.

    Raises:
        ConfigError: a malformed condition or an unknown metric (already caught when the
            configuration loads, see :func:`auditor.config.load_config`).

    Example:
        >>> gate_verdict({"classes": [{"name": "cat", "gap": {"gap": 0.3}}]}, ["max_gap>0.1"])
        {'conditions': ['max_gap>0.1'], 'passed': False, 'reason': "gate failed: max_gap=0.3 > 0.1 (class 'cat')"}
    """
    conditions = list(conditions)
    texts = [str(c) for c in conditions]
    parsed: list[Condition] = []
    for condition in conditions:  # syntax errors and unknown metrics raise here
        parsed += [condition] if isinstance(condition, Condition) else parse_conditions([condition])
    try:
        passed, reason = evaluate_gate(results, parsed)
    except ConfigError as error:  # a metric the results lack: report it, let the caller decide when to fail
        return {"conditions": texts, "passed": False, "reason": f"gate error: {error}", "error": str(error)}
    return {"conditions": texts, "passed": passed, "reason": reason}
