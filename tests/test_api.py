import json
import math

import numpy as np
import pytest
import torch

import auditor
from auditor.errors import ConfigError, InvalidInputError, UnsupportedModelError
from tests.conftest import (
    PlantedDataset,
    TwoChannelNet,
    assert_untouched,
    state_snapshot,
)

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
    # the default cue direction is not used here: feature 1 was found by the object test (see below)
    assert report.sections["ranking"]["feature_score"] == "cue_direction" and report.sections["ranking"]["by_mean"] == [0]

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


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in ("seconds", "versions")}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def test_report_round_trips_through_results_json_without_the_model(tmp_path):
    model = TwoChannelNet()
    report = auditor.audit(model, planted_two_class(), PlantedDataset(n=30, seed=1), config=FAST)
    loaded = auditor.AuditReport.load(report.save(tmp_path / "out"))
    assert loaded.to_dict() == report.to_dict()
    assert loaded.model is None and loaded.tuned_heads.keys() == report.tuned_heads.keys()
    np.testing.assert_array_equal(loaded.spuriosity("val"), report.spuriosity("val"))
    assert loaded.gaps[0].gap == report.gaps[0].gap and loaded.spurious_features(0) == [1]
    with pytest.raises(InvalidInputError, match="loaded from disk"):
        _ = loaded.tuned_model
    rebuilt = loaded.with_head("low_spuriosity", model)
    assert torch.equal(rebuilt.fc.weight, report.tuned_model.fc.weight) and rebuilt is not model


def test_same_seed_same_results_json(tmp_path):
    first = auditor.audit(TwoChannelNet(), planted_two_class(), PlantedDataset(n=30, seed=1), config=FAST)
    second = auditor.audit(TwoChannelNet(), planted_two_class(), PlantedDataset(n=30, seed=1), config=FAST)
    a = json.loads(first.save(tmp_path / "a").read_text())
    b = json.loads(second.save(tmp_path / "b").read_text())
    assert _without_timings(a) == _without_timings(b)


class RaisesMidway(TwoChannelNet):
    """Fails on the n-th forward pass, after the audit has put hooks on it."""

    def __init__(self, fail_at: int):
        super().__init__()
        self.calls, self.fail_at = 0, fail_at
        self.frozen = torch.nn.BatchNorm2d(3).eval()  # a submodule the user keeps in eval inside a train-mode model

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("boom")
        return super().forward(x)


@pytest.mark.parametrize("fail_at", [2, 6])
def test_model_is_restored_after_an_exception_inside_audit(fail_at):
    model = RaisesMidway(fail_at).train()
    model.frozen.eval()
    snapshot = state_snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        auditor.audit(model, planted_two_class(), config=FAST)
    assert_untouched(model, snapshot, training=True)
    assert not model.frozen.training  # every module's own flag, not just the top one


class SomeUnreadable(PlantedDataset):
    def __init__(self, broken, **kwargs):
        super().__init__(**kwargs)
        self.broken = set(broken)

    def __getitem__(self, i):
        if i in self.broken:
            raise OSError(f"cannot identify image file 'img{i}.png'")
        return super().__getitem__(i)


def test_unreadable_images_are_skipped_counted_and_never_abort(tmp_path):
    train = SomeUnreadable([7], n=120)
    config = {**FAST, "data": {"max_skipped_fraction": 0.02}, "neurontune": {"enabled": True, "epochs": 20}}
    report = auditor.audit(TwoChannelNet(), train, SomeUnreadable([3], n=60, seed=1), config=config)
    assert [(r["split"], r["index"]) for r in report.skipped_images] == [("train", 7), ("val", 3)]
    assert "cannot identify" in report.skipped_images[0]["reason"]
    assert np.isnan(report.spuriosity("train")[7]) and report.ranking("val").labels[3] == -1
    assert json.loads(report.save(tmp_path).read_text())["skipped_images"][1]["index"] == 3
    with pytest.raises(InvalidInputError, match="max_skipped_fraction"):
        auditor.audit(TwoChannelNet(), SomeUnreadable([1, 2, 3], n=40), config=FAST)


def test_a_model_at_chance_gets_a_warning():
    near_chance = TwoChannelNet(head_weight=torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))  # predicts "other" for every image
    report = auditor.audit(near_chance, PlantedDataset(n=40), PlantedDataset(n=30, seed=1), config=FAST)
    assert any("near chance" in w for w in report.warnings)
    assert not any("grid" in w for w in report.warnings)  # a 16x16 map localises fine


class CoarseNet(TwoChannelNet):
    """The features' last spatial map is 2x2: far too coarse to place heat inside or outside an object."""

    def forward(self, x):
        return super().forward(torch.nn.functional.adaptive_avg_pool2d(x, 2))


def test_a_coarse_heatmap_grid_gets_a_warning():
    report = auditor.audit(CoarseNet(), PlantedDataset(n=40), config={**FAST, "tuning": {"enabled": False}})
    assert report.meta["heatmap_grid"] == [2, 2]
    assert any("grid is 2x2" in w and "model.feature_layer" in w for w in report.warnings)


class CountingNet(TwoChannelNet):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return super().forward(x)


def test_missing_sam_weights_fail_before_any_forward_pass_naming_the_split():
    model = CountingNet()
    with pytest.raises(FileNotFoundError, match=r"train dataset yields no object masks.*sam_checkpoint"):
        auditor.audit(model, PlantedDataset(n=40, with_masks=False), config=FAST)
    assert model.calls == 0
    with pytest.raises(InvalidInputError, match="train dataset yields no masks"):
        auditor.audit(model, PlantedDataset(n=40, with_masks=False), config={**FAST, "masks": {"provider": "dataset"}})
    assert model.calls == 0


def test_estimated_masks_get_the_stricter_swap_threshold_no_relighting_and_no_heat_fallback():
    """SAM (or box) masks leave object pixels in the 'background', so the swap test needs a higher bar,
    re-lighting the 'object' would carry background pixels along, and the heat's inside/outside split follows the
    mask's errors."""
    from auditor.api import _verdict_config
    from auditor.config import load_config
    from auditor.data import ImageSource

    image = torch.zeros(3, 8, 8)
    with_masks = ImageSource([{"image": image, "label": torch.tensor(0), "mask": np.ones((8, 8))}] * 2)
    without = ImageSource([(image, 0)] * 2)
    config = load_config()
    assert _verdict_config(config, with_masks).swap_threshold == config.verdicts.swap_threshold == 0.125
    assert _verdict_config(config, without).swap_threshold == config.verdicts.estimated_mask_swap_threshold == 0.2
    sam = load_config(**{"masks.provider": "sam"})
    assert _verdict_config(sam, with_masks).swap_threshold == 0.2
    grown = load_config(**{"verdicts.estimated_mask_background_dilation": 2})
    assert _verdict_config(grown, without).background_dilation == 2 and _verdict_config(grown, with_masks).background_dilation == 0
    assert _verdict_config(config, without).background_test_dilation == config.verdicts.estimated_mask_background_test_dilation == 1
    assert _verdict_config(config, with_masks).background_test_dilation == config.verdicts.background_test_dilation == 0
    assert _verdict_config(config, with_masks).swap_relight is True and _verdict_config(config, without).swap_relight is False
    relit = load_config(**{"verdicts.estimated_mask_swap_relight": True, "verdicts.swap_relight": False})
    assert _verdict_config(relit, without).swap_relight is True and _verdict_config(relit, with_masks).swap_relight is False
    assert _verdict_config(config, with_masks).heat_fallback is True and _verdict_config(config, without).heat_fallback is False
    fallback = load_config(**{"verdicts.estimated_mask_heat_fallback": True, "verdicts.heat_fallback": False})
    assert _verdict_config(fallback, without).heat_fallback is True and _verdict_config(fallback, with_masks).heat_fallback is False
    dataset_checks = (_verdict_config(config, with_masks).population_threshold,
                      _verdict_config(config, with_masks).population_flag_threshold)
    assert dataset_checks == (0.7, 0.82)
    estimated = _verdict_config(config, without)
    assert (estimated.population_threshold, estimated.population_flag_threshold) == (0.78, 0.0)
    assert estimated.population_images == config.verdicts.population_images == 32  # measured, not acted on


def test_a_cue_direction_is_not_used_where_the_backgrounds_were_not_compared():
    # the other class's images carry the same stripes, so feature 1 was found by the object test, not by comparing
    # backgrounds: its class's cue direction is noise and the mean of its spurious features ranks the class
    dataset = planted_two_class()
    report = auditor.audit(TwoChannelNet(), dataset, config=FAST)
    assert report.spurious_features(0) == [1] and report.verdicts[0].decided_by == "object"
    assert report.sections["ranking"]["by_direction"] == [] and report.sections["ranking"]["by_mean"] == [0]
    stripes = torch.stack([dataset[i][0] for i in range(4, 40)])[:, 1].clamp(min=0).mean((1, 2)).numpy()
    assert np.corrcoef(report.spuriosity("train")[4:], stripes)[0, 1] > 0.8


def test_the_cue_direction_ranks_by_what_the_class_backgrounds_move_and_is_kept_in_the_report(tmp_path):
    from auditor.report.html import render_html
    from tests.conftest import TwoClassPlanted

    dataset = TwoClassPlanted()
    report = auditor.audit(TwoChannelNet(), dataset, config=FAST)
    section = report.sections["ranking"]
    assert report.spurious_features(0) == [1] and section["feature_score"] == "cue_direction"
    assert section["by_direction"] == [0] and section["by_mean"] == []
    direction = section["cue_directions"]["0"]
    assert len(direction) == 2 and direction[1] > 0 and abs(direction[0]) < 0.05 * direction[1]
    scores = report.spuriosity("train")[:24]
    stripes = torch.stack([dataset[i][0] for i in range(24)])[:, 1].clamp(min=0).mean((1, 2)).numpy()
    assert np.corrcoef(scores, stripes)[0, 1] > 0.9
    loaded = auditor.AuditReport.load(report.save(tmp_path / "out"))
    assert loaded.sections["ranking"] == section
    page = render_html(json.loads((tmp_path / "out" / "results.json").read_text()), tmp_path / "out",
                       tmp_path / "report.html").read_text()
    assert "How the spuriosity rankings were scored" in page and "Ranked by the cue direction (class_0)" in page
    assert section["direction_reference"] == "clean_classes" and "in which nothing was judged spurious" in page
    assert len(section["direction_errors"]["0"]) == 2 and section["direction_errors"]["0"][1] > 0
