"""End-to-end: the quick world's CNN (trained once, cached) audited with no human input."""

import json

import numpy as np
import pytest

from auditor.cli import main
from auditor.demo import run_demo
from tests.conftest import assert_untouched, state_snapshot


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    return run_demo(output_dir=tmp_path_factory.mktemp("demo"), quick=True, progress=False)


@pytest.mark.slow
def test_cue_classes_are_flagged_and_controls_are_clean(quick_demo):
    for name, row in quick_demo.truth.items():
        assert row["flagged"] == (row["cue"] is not None), f"{name}: cue {row['cue']}, flagged {row['flagged']}"


@pytest.mark.slow
def test_spuriosity_separates_images_with_and_without_the_cue(quick_demo):
    assert set(quick_demo.auroc) == {"circle", "square", "triangle"}
    assert quick_demo.auroc["circle"] >= 0.9 and quick_demo.auroc["triangle"] >= 0.9, quick_demo.auroc
    # square's cue is a small tree: the default cue direction ranks it at 0.83-0.90 over audit seeds, the mean of its
    # spurious features at 0.94; the one world where the direction loses (benchmarks/RESULTS.md, stop 36)
    assert quick_demo.auroc["square"] >= 0.8, quick_demo.auroc
    report = quick_demo.report
    for c in (3, 4):  # controls: no spurious feature, so no ranking
        assert np.isnan(report.spuriosity("val")[report.ranking("val").labels == c]).all()


@pytest.mark.slow
def test_cue_classes_have_significant_positive_gaps(quick_demo):
    for c in (0, 1, 2):
        gap = quick_demo.report.gaps[c]
        assert gap.significant and gap.gap > 0.3, gap


@pytest.mark.slow
def test_low_spuriosity_tuning_lifts_the_worst_group_without_costing_accuracy(quick_demo):
    """With balanced validation, plain class-balanced retraining ("random") is a strong baseline too (the
    proving ground measures ours 2-3 points above it on average, less than one world's seed spread), so
    only a large shortfall against it would be a defect here."""
    test = quick_demo.test
    erm, ours, random = test["original (ERM)"], test["low_spuriosity"], test["random"]
    assert ours["worst_group"] >= erm["worst_group"] + 0.15, test
    assert ours["accuracy"] >= erm["accuracy"] - 0.02, test
    assert ours["worst_group"] >= random["worst_group"] - 0.1, test


@pytest.mark.slow
def test_demo_leaves_the_model_untouched_and_writes_reports(quick_demo):
    model = quick_demo.report.model
    assert quick_demo.report.tuned_model is not model
    results = json.loads(quick_demo.written["results"].read_text())
    assert results["sections"]["demo_ground_truth"]["truth"]["circle"]["flagged"] is True
    assert quick_demo.written["html"].exists()


@pytest.mark.slow
def test_audit_does_not_modify_the_users_model(quick_demo):
    import auditor
    from auditor.demo.world.dataset import WorldDataset
    from auditor.demo.world.train import load_split

    model = quick_demo.report.model.train()
    snapshot = state_snapshot(model)
    split = load_split(quick_demo.world, "val")
    auditor.audit(model, WorldDataset(split), class_names=quick_demo.world.class_names,
                  config={"progress": False, "tuning": {"enabled": False}, "verdicts": {"n_images": 4}})
    assert_untouched(model, snapshot, training=True)


@pytest.mark.slow
def test_cli_demo_prints_findings(quick_demo, tmp_path, capsys):
    assert main(["demo", "--quick", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[OK ] circle" in out and "worst group" in out
    assert (tmp_path / "results.json").exists() and (tmp_path / "report.html").exists()
