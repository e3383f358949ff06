import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from auditor.compare import compare_models, evaluate_model, evaluation_from_predictions, pearson_r
from auditor.config import AuditConfig, GapConfig
from auditor.errors import InvalidInputError
from auditor.ranking import SpuriosityRanking
from auditor.report.audit_report import AuditReport
from tests.conftest import assert_untouched, state_snapshot

GAPS = GapConfig(min_k=5, n_bootstrap=200)


def two_class_ranking(n=40):
    """Two classes of n images; the score is the position within the class."""
    labels = np.repeat([0, 1], n)
    scores = np.tile(np.arange(n, dtype=float), 2)
    return scores, labels


def test_gaps_and_low_high_accuracy_from_predictions():
    scores, labels = two_class_ranking()
    predictions = labels.copy()
    predictions[(labels == 0) & (scores >= 30)] = 1  # class 0 fails on its most spurious quarter
    predictions[(labels == 1) & (scores < 10)] = 0  # class 1 fails on its least spurious quarter
    evaluation = evaluation_from_predictions(scores, labels, predictions, gap_config=GAPS)
    assert evaluation.gaps[0].gap == -1.0 and evaluation.gaps[0].significant
    assert evaluation.gaps[1].gap == 1.0
    assert evaluation.mean_gap == 0.0
    assert evaluation.accuracy == 0.75
    assert evaluation.low_accuracy == 0.5 and evaluation.high_accuracy == 0.5


def test_unranked_classes_are_left_out():
    scores, labels = two_class_ranking()
    scores[labels == 1] = np.nan
    evaluation = evaluation_from_predictions(scores, labels, labels, gap_config=GAPS)
    assert list(evaluation.gaps) == [0]


def test_pearson_and_comparison():
    scores = np.tile(np.arange(40, dtype=float), 3)
    labels = np.repeat([0, 1, 2], 40)
    rank = np.tile(np.arange(40), 3)
    a = labels.copy()
    a[(labels == 0) & (rank < 20)] = 1  # gaps: +1, 0, 0 ... make three different gaps
    a[(labels == 1) & (rank < 5)] = 0
    b = labels.copy()
    b[(labels == 0) & (rank >= 20)] = 1  # the mirror image: gaps of opposite sign
    b[(labels == 1) & (rank >= 35)] = 0
    ea = evaluation_from_predictions(scores, labels, a, name="a", gap_config=GAPS)
    eb = evaluation_from_predictions(scores, labels, b, name="b", gap_config=GAPS)
    comparison = compare_models([ea, eb])
    assert comparison["classes"] == [0, 1, 2]
    assert comparison["correlation"]["a"]["a"] == pytest.approx(1.0)
    assert comparison["correlation"]["a"]["b"] == pytest.approx(-1.0)
    assert comparison["mean_correlation"] == pytest.approx(-1.0)
    assert [m["name"] for m in comparison["models"]] == ["a", "b"]
    assert pearson_r(np.ones(3), np.arange(3.0)) is None
    with pytest.raises(InvalidInputError, match="distinct"):
        compare_models([ea, ea])
    with pytest.raises(InvalidInputError, match="at least one"):
        compare_models([])


class Brightness(nn.Module):
    """Predicts class 1 when the image's mean exceeds 0.5, else class 0."""

    def __init__(self):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[-10.0], [10.0]]))
            self.fc.bias.copy_(torch.tensor([5.0, -5.0]))

    def forward(self, x):
        return self.fc(self.pool(x.mean(1, keepdim=True)).flatten(1))


def brightness_dataset(scores):
    """Class-0 images whose brightness follows the score: the brightest (most spurious) are misread as class 1."""
    values = torch.tensor(scores / scores.max(), dtype=torch.float32) * 0.9
    images = values.view(-1, 1, 1, 1).expand(-1, 3, 4, 4).clone()
    return TensorDataset(images, torch.zeros(len(scores), dtype=torch.long))


def test_evaluate_model_on_a_fixed_ranking_leaves_the_model_untouched():
    scores = np.arange(40, dtype=float)
    dataset = brightness_dataset(scores)
    model = Brightness().train()
    snapshot = state_snapshot(model)
    ranking = SpuriosityRanking("val", scores)
    evaluation = evaluate_model(ranking, model, dataset, device="cpu", gap_config=AuditConfig().replace(**{"gaps.min_k": 5}).gaps)
    assert evaluation.split == "val" and evaluation.name == "Brightness"
    assert evaluation.gaps[0].gap == pytest.approx(-1.0)
    assert evaluation.high_accuracy == 0.0 and evaluation.low_accuracy == 1.0
    assert "gaps" in evaluation.to_dict()
    assert_untouched(model, snapshot, training=True)


def test_evaluate_model_checks_the_dataset_matches_the_ranking():
    scores = np.arange(40, dtype=float)
    model = Brightness()
    with pytest.raises(InvalidInputError, match="has 39 images"):
        evaluate_model(scores, model, brightness_dataset(scores[:39]), device="cpu")
    labels = np.ones(40, np.int64)  # the audited split had other labels
    ranking = SpuriosityRanking("val", scores, labels)
    with pytest.raises(InvalidInputError, match="40 labels"):
        evaluate_model(ranking, model, brightness_dataset(scores), device="cpu")
    with pytest.raises(InvalidInputError, match="ranking is of the 'val' split"):
        evaluate_model(ranking, model, brightness_dataset(scores), split="train", device="cpu")


@pytest.mark.slow
def test_audit_runs_the_optional_stages_and_compares_models_on_a_small_world(tmp_path):
    import json

    from auditor.api import audit
    from auditor.compare import compare_models
    from auditor.demo.world.dataset import WorldDataset
    from auditor.demo.world.presets import world_preset
    from auditor.demo.world.train import TrainSpec, load_or_train_model, load_split

    spec = world_preset("default", image_size=32, n_train=120, n_val=60, n_test=10)
    model = load_or_train_model(spec, TrainSpec(epochs=6), progress=False)
    train, val = WorldDataset(load_split(spec, "train")), WorldDataset(load_split(spec, "val"))
    config = {"progress": False, "tuning": {"enabled": False}, "gaps": {"n_bootstrap": 200},
              "neurontune": {"enabled": True, "epochs": 50}, "discovery": {"enabled": True}, "noise": {"enabled": True}}
    report = audit(model, train, val, class_names=spec.class_names, config=config)
    assert {"neurontune", "discovery", "noise"} <= set(report.sections)
    assert report.sections["discovery"]["pool"]["n_images"] == len(val)
    tuned = report.extra_models["neurontune"]
    suppressed = report.sections["neurontune"]["suppressed"]
    assert suppressed and torch.all(tuned.fc.weight[:, suppressed] == 0)
    json.dumps(report.to_dict())  # every section is JSON-ready
    original = report.evaluate(model, val)
    repaired = evaluate_model(report, tuned, val, name="neurontune")
    loaded = AuditReport.load(report.save(tmp_path / "out"))
    assert loaded.ranking("val").labels.tolist() == report.ranking("val").labels.tolist()
    assert original.accuracy == pytest.approx(report.sections["neurontune"]["before"]["accuracy"])
    assert report.evaluate(model, val).gaps.keys() == loaded.evaluate(model, val).gaps.keys()
    for c, estimate in report.gaps.items():  # the audited model re-measured reproduces the audit's gaps
        assert original.gaps[c].gap == pytest.approx(estimate.gap)
    comparison = compare_models([original, repaired])
    assert set(comparison["correlation"]) == {"SmallCNN", "neurontune"}
    section = report.compare({"neurontune": tuned}, val)
    assert [m["name"] for m in section["models"]] == ["audited model", "neurontune"]
    with pytest.raises(InvalidInputError, match="has no model"):
        loaded.compare({"neurontune": tuned}, val)
