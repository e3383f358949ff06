import json
import math

import numpy as np
import pytest
import torch

import auditor
from auditor.errors import ConfigError, InvalidInputError, UnsupportedModelError
from tests.conftest import PlantedDataset, TwoChannelNet, assert_untouched, state_snapshot

FAST = {"progress": False, "gaps": {"min_k": 5, "n_bootstrap": 100}, "verdicts": {"n_images": 8}, "tuning": {"epochs": 20}}


def planted_two_class(n_small: int = 4) -> PlantedDataset:
    dataset = PlantedDataset(n=40)
    for i in range(n_small):
        dataset.labels[i] = 1
    return dataset


def test_audit_on_planted_model_finds_the_spurious_feature_and_skips_tiny_classes(caplog, tmp_path):
    model = TwoChannelNet().train()
    snapshot = state_snapshot(model)
    dataset = planted_two_class()
    report = auditor.audit(model, dataset, class_names=["object", "other"], config=FAST)

    assert report.core_features(0) == [0] and report.spurious_features(0) == [1]
    assert report.spurious_features(1) == [] and "other" in report.meta["skipped_classes"]
    assert "skipping class 'other'" in caplog.text
    scores = report.spuriosity("train")
    assert scores.shape == (40,) and np.isnan(scores[:4]).all() and np.isfinite(scores[4:]).all()
    activations = torch.stack([dataset[i][0] for i in range(4, 40)])[:, 1]
    assert np.corrcoef(scores[4:], activations.clamp(min=0).mean((1, 2)).numpy())[0, 1] > 0.8  # ranks by feature 1

    assert set(report.gaps) == {0}
    assert report.tuned_model is not None and report.tuned_model is not model
    assert set(report.tuning) == {"low_spuriosity", "random", "error"}
    assert_untouched(model, snapshot, training=True)

    path = report.save(tmp_path / "out")
    data = json.loads(path.read_text())
    assert data["schema_version"] == "1.0" and data["classes"][0]["spurious_features"] == [1]
    verdict = data["classes"][0]["verdicts"][1]
    assert {"density_ratio", "object_drop", "background_drop", "heat_inside", "object_area"} <= set(verdict)
    with pytest.raises(InvalidInputError, match="without a val dataset"):
        report.spuriosity("val")


def test_validation_data_is_used_for_gaps():
    report = auditor.audit(TwoChannelNet(), planted_two_class(), PlantedDataset(n=30, seed=1), config=FAST)
    assert report.meta["evaluation_split"] == "val"
    assert report.spuriosity("val").shape == (30,)
    assert report.gaps[0].n_images == 30


def test_bad_inputs_give_clear_errors():
    with pytest.raises(InvalidInputError, match="2 outputs"):
        auditor.audit(TwoChannelNet(), planted_two_class(), class_names=["a", "b", "c"], config=FAST)
    with pytest.raises(InvalidInputError, match="is empty"):
        auditor.audit(TwoChannelNet(), torch.utils.data.TensorDataset(torch.zeros(0, 3, 4, 4), torch.zeros(0)), config=FAST)
    with pytest.raises(UnsupportedModelError, match="no nn.Linear"):
        auditor.audit(torch.nn.Conv2d(3, 2, 1), planted_two_class(), config=FAST)
    with pytest.raises(ConfigError, match="Did you mean"):
        auditor.audit(TwoChannelNet(), planted_two_class(), config={"tunning": {}})
    with pytest.raises(ConfigError, match="concepts.enabled"):
        auditor.audit(TwoChannelNet(), planted_two_class(), config={"ranking": {"source": "concepts"}})


def test_feature_cache_is_reused_from_its_folder(tmp_path):
    config = {**FAST, "features": {"cache_dir": str(tmp_path)}, "tuning": {"enabled": False}}
    first = auditor.audit(TwoChannelNet(), planted_two_class(), config=config)
    stamp = (tmp_path / "features" / "train" / "activations.npy").stat().st_mtime_ns
    second = auditor.audit(TwoChannelNet(), planted_two_class(), config=config)
    assert (tmp_path / "features" / "train" / "activations.npy").stat().st_mtime_ns == stamp
    assert np.array_equal(first.spuriosity("train"), second.spuriosity("train"), equal_nan=True)


def test_tuning_can_be_turned_off():
    report = auditor.audit(TwoChannelNet(), planted_two_class(), config={**FAST, "tuning": {"enabled": False}})
    assert report.tuned_model is None and report.tuning == {}
    assert not math.isnan(report.gaps[0].gap)
