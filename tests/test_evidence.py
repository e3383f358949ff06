"""The evidence stage on a real audit of the generated world (a small CNN trained on cue-laden images)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from auditor.api import audit
from auditor.demo.world.dataset import WorldDataset
from auditor.demo.world.generator import WorldSpec
from auditor.demo.world.train import TrainSpec, load_or_train_model, load_split
from auditor.evaluation import class_decile_accuracy
from auditor.evidence import CORRECT, THUMB, WRONG, heat_colours
from auditor.report.html import browser_snapshot, find_browser, render_html

SPEC = WorldSpec(image_size=32, n_train=60, n_val=40, n_test=10)
CONFIG = {"progress": False, "features": {"top_k": 3}, "verdicts": {"n_images": 8},
          "gaps": {"min_k": 5, "n_bootstrap": 100}, "tuning": {"epochs": 30, "baselines": []}, "report": {"n_grid_images": 5}}


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    torch.set_num_threads(1)
    model = load_or_train_model(SPEC, TrainSpec(epochs=12), progress=False)
    model.train()  # the user's mode must survive the audit and the report
    state = {k: v.clone() for k, v in model.state_dict().items()}
    report = audit(model, WorldDataset(load_split(SPEC, "train")), WorldDataset(load_split(SPEC, "val")),
                   class_names=SPEC.class_names, config=CONFIG)
    out = tmp_path_factory.mktemp("report")
    report.save(out)  # the evidence images were made during the audit; saving only writes data
    artifacts = report.artifacts
    return model, state, report, artifacts, Path(report.evidence_dir)


@pytest.mark.slow
def test_grids_show_the_ranked_images_with_correctness_frames(audited):
    model, _, report, artifacts, out = audited
    assert artifacts["split"] == "val" and artifacts["errors"] == []
    val = WorldDataset(load_split(SPEC, "val"))
    with torch.no_grad():
        correct = np.array([int(model.eval()(val[i][0][None]).argmax()) == val[i][1] for i in range(len(val))])
    model.train()
    for c, gap in report.gaps.items():
        entry = artifacts["classes"][str(c)]
        for key, indices in (("top_grid", gap.top_indices[:5]), ("bottom_grid", gap.bottom_indices[:5])):
            assert not entry[key].startswith("/") and entry[key].startswith("artifacts/")
            grid = np.asarray(Image.open(out / entry[key]).convert("RGB"))
            assert grid.shape[0] == THUMB + 6
            for n, index in enumerate(indices):  # each tile's frame colour says whether the model got it right
                frame = tuple(grid[1, n * (THUMB + 9) + 1])
                assert frame == (CORRECT if correct[index] else WRONG)


@pytest.mark.slow
def test_every_spurious_feature_has_heatmap_and_mask(audited):
    _, _, report, artifacts, out = audited
    spurious = [(v.class_index, v.feature) for v in report.verdicts if v.label == "spurious"]
    assert spurious
    for c, f in spurious:
        entry = artifacts["classes"][str(c)]["features"][str(f)]
        heat, mask = Image.open(out / entry["heatmap"]), Image.open(out / entry["mask"])
        assert heat.size == mask.size and heat.size[0] > THUMB
        assert entry["image_indices"] == next(v.image_indices for v in report.verdicts if (v.class_index, v.feature) == (c, f))[:4]


@pytest.mark.slow
def test_decile_accuracy_follows_the_cue(audited):
    _, _, report, artifacts, _ = audited
    worst = max((g for g in report.gaps.values() if np.isfinite(g.gap)), key=lambda g: g.gap)
    deciles = artifacts["classes"][str(worst.class_index)]["decile_accuracy"]
    assert len(deciles["before"]) == 10 and len(deciles["after"]) == 10
    assert worst.gap > 0.3
    assert deciles["before"][-1] > deciles["before"][0]  # the most spurious images are the ones it gets right


@pytest.mark.slow
def test_model_untouched_by_audit_and_report(audited):
    model, state, *_ = audited
    assert model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.slow
@pytest.mark.skipif(find_browser() is None, reason="Chromium not installed (Debian: apt-get install chromium; .ci/run installs it)")
def test_real_report_in_chromium(audited):
    _, _, report, artifacts, out = audited
    results = json.loads(json.dumps(report.to_dict()))
    results["artifacts"] = artifacts
    path = render_html(results, out, out / "report.html")
    dom = browser_snapshot(path, out / "shot.png", height=1600)
    counts = [int(n) for n in __import__("re").search(r'data-images-ok="(\d+)" data-images-total="(\d+)"', dom).groups()]
    assert counts[0] == counts[1] > 10
    for name in SPEC.class_names:
        assert name in dom


def test_class_decile_accuracy_and_colours():
    scores = np.arange(20, dtype=float)
    labels = np.array([0] * 20)
    correct = scores >= 10
    assert class_decile_accuracy(scores, labels, correct, 0) == [0.0] * 5 + [1.0] * 5
    assert class_decile_accuracy(scores, labels, correct, 1) == [None] * 10
    colours = heat_colours(np.array([[0.0, 1.0]]))
    assert colours[0, 0, 2] > colours[0, 0, 0] and colours[0, 1, 0] > colours[0, 1, 2]  # cold blue, hot red
