import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from auditor.compare import (
    compare_models,
    evaluate_model,
    evaluation_from_predictions,
    pearson_r,
)
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
              # (no confidence check: on 60 validation images per class it keeps the model's head, and this test
              # follows a suppressed head through the report)
              "neurontune": {"enabled": True, "epochs": 50, "min_gain_confidence": 0.0},
              "discovery": {"enabled": True}, "noise": {"enabled": True}}
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


def fake_evaluation(name, high, low):
    from auditor.compare import ModelEvaluation

    return ModelEvaluation(name, "val", 10, 0.5, {}, None, low, high)


def test_effective_robustness_is_the_residual_of_a_line_across_models():
    from auditor.compare import effective_robustness

    # Three models on the line low = 0.5 * high + 0.4, and one 0.1 above it.
    points = {"a": (0.4, 0.6), "b": (0.6, 0.7), "c": (0.8, 0.8), "d": (0.6, 0.8)}
    result = effective_robustness([fake_evaluation(n, h, lo) for n, (h, lo) in points.items()])
    slope, intercept = np.polyfit([h for h, _ in points.values()], [lo for _, lo in points.values()], 1)
    assert result["slope"] == pytest.approx(slope) and result["intercept"] == pytest.approx(intercept)
    for name, (h, lo) in points.items():
        assert result["models"][name] == pytest.approx(lo - (slope * h + intercept))
    assert result["models"]["d"] > 0 > result["models"]["a"]
    assert sum(result["models"].values()) == pytest.approx(0.0, abs=1e-12)
    two = effective_robustness([fake_evaluation("a", 0.4, 0.6), fake_evaluation("b", 0.6, 0.7)])
    assert two["slope"] is None and two["models"] == {"a": None, "b": None} and "at least 3" in two["note"]
    flat = effective_robustness([fake_evaluation(n, 0.5, lo) for n, lo in zip("xyz", (0.1, 0.2, 0.3))])
    assert flat["slope"] is None and "same high-spuriosity" in flat["note"]


def test_variance_ratio_separates_class_and_model_spread():
    from auditor.compare import variance_ratio

    class_effect = np.array([0.0, 0.2, 0.4, 0.6])
    model_effect = np.array([0.0, 0.02, -0.02])
    matrix = model_effect[:, None] + class_effect[None, :]
    result = variance_ratio(matrix)
    assert result["class_variance"] == pytest.approx(np.var(class_effect, ddof=1))
    assert result["model_variance"] == pytest.approx(np.var(model_effect, ddof=1))
    assert result["ratio"] == pytest.approx(np.var(class_effect, ddof=1) / np.var(model_effect, ddof=1))
    assert (result["n_models"], result["n_classes"]) == (3, 4)
    assert variance_ratio(matrix[:1])["ratio"] is None
    assert variance_ratio(np.tile(class_effect, (3, 1)))["ratio"] is None  # no model spread


def test_averaged_gaps_flag_classes_where_most_models_fail_the_spurious_end():
    scores, labels = two_class_ranking()
    models = []
    for seed in range(3):
        predictions = labels.copy()
        rng = np.random.default_rng(seed)
        # class 0: every model misreads most of its 10 most spurious images (a negative gap)
        top = np.flatnonzero((labels == 0) & (scores >= 30))
        predictions[rng.choice(top, 8, replace=False)] = 1
        # class 1: one model fails a few images at random (no consistent gap)
        if seed == 0:
            predictions[np.flatnonzero(labels == 1)[[3, 17, 25]]] = 0
        models.append(evaluation_from_predictions(scores, labels, predictions, name=f"m{seed}", gap_config=GAPS))
    comparison = compare_models(models, GAPS, np.random.default_rng(0))
    averaged = comparison["averaged_gaps"]
    assert averaged["0"]["gap"] == pytest.approx(np.mean([m.gaps[0].gap for m in models]))
    assert averaged["0"]["gap"] < -0.5 and averaged["0"]["significant"] and averaged["0"]["ci_high"] < 0
    assert not averaged["1"]["significant"]
    assert comparison["negative_gap_classes"] == [0]
    assert comparison["effective_robustness"]["n_models"] == 3
    assert comparison["variance_ratio"]["n_models"] == 3
    assert all("effective_robustness" in m for m in comparison["models"])
    from auditor.compare import averaged_gaps
    from auditor.noise import negative_gap_classes

    assert negative_gap_classes(averaged_gaps(models, GAPS)) == [0]  # the noise stage reads averaged gaps as they are


def test_report_compare_stores_and_renders_the_cross_model_analyses(tmp_path):
    import auditor
    from auditor.api import write_outputs
    from tests.conftest import PlantedDataset, TwoChannelNet

    fast = {"progress": False, "gaps": {"min_k": 5, "n_bootstrap": 100}, "verdicts": {"n_images": 8},
            "tuning": {"enabled": False}, "report": {"n_grid_images": 4}}
    train = PlantedDataset(n=40)
    for i in range(12):
        train.labels[i] = 1
    report = auditor.audit(TwoChannelNet(), train, class_names=["object", "other"], config=fast)
    # Heads leaning more or less on the background cue (feature 1): three models with different gaps.
    others = {f"cue weight {w}": TwoChannelNet(torch.tensor([[1.0, w], [-1.0, -w]])) for w in (0.2, 3.0)}
    section = report.compare(others, train, split="train")
    assert [m["name"] for m in section["models"]] == ["audited model", "cue weight 0.2", "cue weight 3.0"]
    er = section["effective_robustness"]
    assert er["n_models"] == 3 and sum(v for v in er["models"].values() if v is not None) == pytest.approx(0.0, abs=1e-9)
    assert section["variance_ratio"]["n_models"] == 3
    assert set(section["averaged_gaps"]) == {str(c) for c in section["classes"]}
    html = (write_outputs(report, tmp_path / "out")["html"]).read_text()
    assert "Variance of gaps across classes / across models" in html and "effective robustness" in html
