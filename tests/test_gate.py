"""The CI gate: condition parsing, metrics from a results dict, one-line reasons."""

from __future__ import annotations

import pytest

from auditor.errors import ConfigError
from auditor.gate import (
    METRICS,
    Condition,
    compute_metrics,
    evaluate_gate,
    gate_verdict,
    parse_condition,
    parse_conditions,
)


def _results(gaps=(0.3, -0.05, None), significant=(True, False, False), deciles=(0.9, 0.4, 0.8)):
    classes = []
    for i, (gap, sig) in enumerate(zip(gaps, significant)):
        verdicts = [{"class_index": i, "feature": 10 + i, "label": "spurious"}, {"class_index": i, "feature": 20 + i, "label": "core"}]
        classes.append({
            "index": i, "name": f"c{i}", "verdicts": verdicts,
            "gap": None if gap is None else {"gap": gap, "ci_low": gap - 0.1, "ci_high": gap + 0.1, "significant": sig},
        })
    before = {"accuracy": 0.75, "worst_class_accuracy": 0.5, "decile_accuracy": list(deciles) + [None]}
    return {"schema_version": "1.0", "classes": classes, "tuning": {"low_spuriosity": {"before": before, "after": {}}}}


def test_parse_condition_forms():
    assert parse_condition("max_gap>0.10") == Condition("max_gap", ">", 0.10)
    assert parse_condition(" worst_decile_accuracy <= .5 ") == Condition("worst_decile_accuracy", "<=", 0.5)
    assert parse_conditions(["max_gap>0.1, n_spurious_significant>=1", "accuracy<0.9"]) == [
        Condition("max_gap", ">", 0.1), Condition("n_spurious_significant", ">=", 1.0), Condition("accuracy", "<", 0.9)]


@pytest.mark.parametrize("text, message", [
    ("max_gap 0.1", "cannot read gate condition"),
    ("max_gap=>0.1", "cannot read gate condition"),
    ("max_gapp>0.1", r"unknown gate metric 'max_gapp'.*Did you mean 'max_gap'"),
])
def test_bad_conditions_are_config_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_condition(text)


def test_metrics_from_results():
    metrics = compute_metrics(_results())
    assert metrics["max_gap"][0] == pytest.approx(0.3) and "c0" in metrics["max_gap"][1]
    assert metrics["mean_gap"][0] == pytest.approx(0.125)  # the class without a gap is left out
    assert metrics["max_gap_ci_low"][0] == pytest.approx(0.2)
    assert metrics["n_significant_gaps"][0] == 1
    assert metrics["n_spurious"][0] == 3
    assert metrics["n_spurious_significant"][0] == 1  # only c0's gap is significant
    assert metrics["worst_decile_accuracy"][0] == pytest.approx(0.4)
    assert metrics["accuracy"][0] == 0.75 and metrics["worst_class_accuracy"][0] == 0.5


def test_gate_fails_with_one_line_reason():
    passed, reason = evaluate_gate(_results(), ["max_gap>0.10", "worst_decile_accuracy<0.5", "accuracy<0.5"])
    assert not passed
    assert "\n" not in reason
    assert reason.startswith("gate failed: max_gap=0.3 > 0.1 (class 'c0'); worst_decile_accuracy=0.4 < 0.5")
    assert "accuracy=0.75" not in reason  # that condition did not hold


def test_gate_passes_and_empty_gate():
    passed, reason = evaluate_gate(_results(), ["max_gap>0.5", "n_spurious_significant>=2"])
    assert passed and reason == "gate passed: max_gap=0.3, n_spurious_significant=1"
    assert evaluate_gate(_results(), []) == (True, "gate passed: no conditions")


def test_negative_gaps_do_not_fail_a_max_gap_gate():
    passed, _ = evaluate_gate(_results(gaps=(-0.2, -0.3, None), significant=(True, True, False)), ["max_gap>0.1", "n_significant_gaps>=1"])
    assert passed


def test_metric_absent_from_results_is_an_error():
    results = _results()
    results["tuning"] = {}
    with pytest.raises(ConfigError, match=r"'worst_decile_accuracy' is not available.*enable the stage"):
        evaluate_gate(results, ["worst_decile_accuracy<0.5"])


def test_skipped_classes_and_images_are_gate_metrics():
    results = _results()
    results["meta"] = {"skipped_classes": {"c2": "fewer than 2*min_k images"}}
    results["skipped_images"] = [
        {"split": "train", "index": 4, "path": "a/b.png", "reason": "truncated file"},
        {"split": "val", "index": 1, "path": None, "reason": "cannot identify image"},
        {"split": "train", "index": 9, "path": "a/c.png", "reason": "truncated file"},
    ]
    metrics = compute_metrics(results)
    assert metrics["n_skipped_classes"] == (1.0, "c2")
    assert metrics["n_skipped_images"] == (3.0, "2 train, 1 val")
    verdict = gate_verdict(results, ["n_skipped_classes>0", "n_skipped_images>=5"])
    assert verdict == {"conditions": ["n_skipped_classes>0", "n_skipped_images>=5"], "passed": False,
                       "reason": "gate failed: n_skipped_classes=1 > 0 (c2)"}
    results["meta"]["skipped_classes"] = {}
    results["skipped_images"] = []
    assert gate_verdict(results, ["n_skipped_classes>0", "n_skipped_images>0"])["passed"]


def test_gate_verdict_is_the_stored_gate():
    verdict = gate_verdict(_results(), ["max_gap>0.10", Condition("accuracy", "<", 0.5)])
    assert verdict == {"conditions": ["max_gap>0.10", "accuracy<0.5"], "passed": False,
                       "reason": "gate failed: max_gap=0.3 > 0.1 (class 'c0')"}
    assert gate_verdict(_results(), []) == {"conditions": [], "passed": True, "reason": "gate passed: no conditions"}


def test_gate_verdict_reports_a_missing_metric_without_raising():
    verdict = gate_verdict(_results(), ["n_skipped_images>0"])  # results without `skipped_images`
    assert verdict["passed"] is False and verdict["reason"].startswith("gate error: gate metric 'n_skipped_images' is not available")
    assert verdict["error"] in verdict["reason"]
    with pytest.raises(ConfigError, match="cannot read gate condition"):
        gate_verdict(_results(), ["max_gap 0.1"])  # malformed conditions still raise


def test_every_metric_is_documented_and_config_free():
    import ast
    import inspect

    from auditor import gate

    assert all(f"``{name}``" in gate.__doc__ for name in METRICS)
    tree = ast.parse(inspect.getsource(gate))
    top_imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert not any(getattr(node, "module", "") == "auditor.config" for node in top_imports)  # config imports gate
