"""A fast subset of the proving ground: two small worlds audited end to end with the defaults.

The full table (nine worlds, four models, dataset and SAM masks, leave-one-world-out calibration)
is `benchmarks/bench_proving_ground.py`; this asserts its facts qualitatively on a cue world whose
cue sits away from the object (a corner tag) and on the world with no cue at all.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import auditor
from auditor.data import ImageSource
from auditor.demo.world.dataset import WorldDataset
from auditor.demo.worlds.catalog import get_world
from auditor.demo.worlds.train import load_or_train, load_split, model_spec
from auditor.evaluation import head_predictions
from auditor.features import extract_features
from auditor.model import ModelAdapter

CONFIG = {"progress": False, "masks": {"provider": "dataset"}, "gaps": {"n_bootstrap": 300}, "tuning": {"baselines": []}}


def _audit(name: str):
    world = get_world(name)
    model, _ = load_or_train(world, model_spec("cnn16"))
    train, val, test = (load_split(world, s) for s in ("train", "val", "test"))
    report = auditor.audit(model, WorldDataset(train), WorldDataset(val, with_masks=False),
                           class_names=world.class_names, config=CONFIG)
    return world, report, val, test


def _worst_group(predictions: np.ndarray, split) -> float:
    correct = predictions == split.labels
    groups = 2 * split.labels + split.own_cue
    return min(float(correct[groups == g].mean()) for g in np.unique(groups))


@pytest.mark.slow
def test_corner_tag_world_flags_both_cues_keeps_controls_clean_and_tuning_lifts_the_worst_group(tmp_path):
    world, report, val, test = _audit("corner-tag")
    for c in world.cue_of_class:
        assert report.spurious_features(c), f"{world.class_names[c]}: its cue was missed"
        scores = report.spuriosity("val")[val.labels == c]
        assert roc_auc_score(val.own_cue[val.labels == c], scores) >= 0.9
    for c in world.control_classes:
        assert not report.spurious_features(c), f"control {world.class_names[c]} flagged"
    assert all(v.decided_by and v.explanation for v in report.verdicts)

    adapter = ModelAdapter(report.model, head=report.meta["head"])
    cache = extract_features(adapter, ImageSource(WorldDataset(test, with_masks=False), name="test"), tmp_path / "test", progress=False)
    erm = _worst_group(np.asarray(cache.predictions), test)
    tuned = _worst_group(head_predictions(cache.activations, *report.tuned_heads["low_spuriosity"]), test)
    assert tuned >= erm + 0.08, (erm, tuned)  # the bar, with balanced validation

    # validation as skewed as training: a smaller lift, but never below the model's own head
    skewed = load_split(dataclasses.replace(world, n_train=world.n_val, seed=world.seed + 7919), "train")
    skewed_report = auditor.audit(report.model, WorldDataset(load_split(world, "train")), WorldDataset(skewed, with_masks=False),
                                  class_names=world.class_names, config=CONFIG)
    tuned_skewed = _worst_group(head_predictions(cache.activations, *skewed_report.tuned_heads["low_spuriosity"]), test)
    assert tuned_skewed >= erm, (erm, tuned_skewed)
    # the skew check tells the two validation splits apart from the images alone (no cue flags)
    assert report.tuning["low_spuriosity"].after["validation_skew"]["skewed"] is False
    assert skewed_report.tuning["low_spuriosity"].after["validation_skew"]["skewed"] is True


@pytest.mark.slow
def test_world_without_cues_has_nothing_flagged():
    world, report, _, _ = _audit("no-cue")
    assert not world.cue_of_class
    assert [v for v in report.verdicts if v.label == "spurious"] == []
