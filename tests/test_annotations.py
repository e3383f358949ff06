"""Human core/spurious annotations: CSV import, agreement, Cohen's kappa, disagreements with evidence."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from auditor.annotations import (
    HumanLabel,
    agreement,
    cohen_kappa,
    read_annotations,
    run_annotations,
)
from auditor.errors import InvalidInputError
from auditor.results import FeatureVerdict


def _write(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _verdict(c, f, label, **evidence):
    values = dict(importance=1.0, heat_inside=0.2, object_area=0.1, density_ratio=0.5, object_drop=0.0, background_drop=0.4,
                  heat_says_spurious=True, ablation_says_spurious=True, confirmed=True, image_indices=[1, 2, 3])
    values.update(evidence)
    return FeatureVerdict(class_index=c, feature=f, label=label, **values)


def test_simple_csv_with_names_and_synonyms(tmp_path):
    path = _write(tmp_path / "h.csv", ["class", "feature", "label"],
                  [["cat", 3, "core"], ["dog", 5, "Background"], [1, 6, "main object"]])
    labels = read_annotations(path, ["cat", "dog"])
    assert labels == [HumanLabel(0, 3, "core", 1, 0), HumanLabel(1, 5, "spurious", 1, 1), HumanLabel(1, 6, "core", 1, 0)]


def test_salient_imagenet_layout_majority_vote(tmp_path):
    rows = [[325, 595, w] for w in ("background", "background", "separate_object", "main_object", "main_object")]
    rows += [[325, 12, w] for w in ("main_object", "main_object", "main_object", "background", "main_object")]
    path = _write(tmp_path / "discover_spurious_features.csv", ["Input.class_index", "Input.feature_index", "Answer.main"], rows)
    labels = {(h.class_index, h.feature): h for h in read_annotations(path)}
    assert labels[(325, 595)].label == "spurious" and labels[(325, 595)].n_spurious == 3 and labels[(325, 595)].n_votes == 5
    assert labels[(325, 12)].label == "core"


@pytest.mark.parametrize("header, row, message", [
    (["klass", "feature", "label"], ["0", "1", "core"], "no class column"),
    (["class", "feature", "label"], ["0", "1", "maybe"], "label 'maybe' is not one of"),
    (["class", "feature", "label"], ["wolf", "1", "core"], "class 'wolf' is neither an index"),
    (["class", "feature", "label"], ["0", "x1", "core"], "feature 'x1' is not an integer"),
])
def test_bad_csv_rows_name_the_problem(tmp_path, header, row, message):
    with pytest.raises(InvalidInputError, match=message):
        read_annotations(_write(tmp_path / "h.csv", header, [row]), ["cat"])


def test_kappa_matches_sklearn():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, 200)
    b = np.where(rng.random(200) < 0.7, a, 1 - a)
    confusion = [[int(((a == i) & (b == j)).sum()) for j in (0, 1)] for i in (0, 1)]
    assert cohen_kappa(confusion) == pytest.approx(cohen_kappa_score(a, b))
    assert cohen_kappa([[5, 0], [0, 0]]) == 1.0
    assert np.isnan(cohen_kappa([[0, 0], [0, 0]]))


def test_agreement_confusion_and_disagreements():
    human = [HumanLabel(0, 1, "spurious", 5, 4), HumanLabel(0, 2, "core", 5, 1), HumanLabel(1, 3, "spurious", 1, 1),
             HumanLabel(1, 4, "core", 1, 0), HumanLabel(2, 9, "core", 1, 0)]
    verdicts = [_verdict(0, 1, "spurious"), _verdict(0, 2, "core"), _verdict(1, 3, "core", heat_inside=0.9),
                _verdict(1, 4, "core"), _verdict(1, 8, "spurious")]
    result = agreement(human, verdicts, ["cat", "dog", "fox"])
    assert result["confusion"] == [[2, 0], [1, 1]]  # rows human core/spurious, columns automated
    assert result["n_compared"] == 4 and result["n_agree"] == 3 and result["accuracy"] == 0.75
    assert result["kappa"] == pytest.approx(cohen_kappa_score(["s", "c", "s", "c"], ["s", "c", "c", "c"]))
    assert result["n_human_only"] == 1 and result["n_auto_only"] == 1
    (d,) = result["disagreements"]
    assert (d["class_name"], d["feature"], d["human"], d["automated"]) == ("dog", 3, "spurious", "core")
    assert d["evidence"]["heat_inside"] == 0.9 and d["image_indices"] == [1, 2, 3]


def test_agreement_from_results_dict():
    results = {"class_names": ["cat"], "classes": [{"index": 0, "verdicts": [{"class_index": 0, "feature": 1, "label": "core"}]}]}
    result = agreement([HumanLabel(0, 1, "spurious", 1, 1)], results)
    assert result["disagreements"][0]["class_name"] == "cat"
    assert result["confusion"] == [[0, 0], [1, 0]] and result["kappa"] == 0.0


def test_annotation_stage(tmp_path):
    path = _write(tmp_path / "h.csv", ["class", "feature", "label"], [[0, 1, "core"]])
    section = run_annotations(path, [_verdict(0, 1, "core")], ["cat"]).section
    assert section["enabled"] and section["n_agree"] == 1 and section["source"].endswith("h.csv")


def _votes(path, pairs):
    """A Salient-ImageNet-layout CSV: ``pairs`` maps (class, feature) -> list of worker answers."""
    rows = [[c, f, answer] for (c, f), answers in pairs.items() for answer in answers]
    return _write(path, ["Input.class_index", "Input.feature_index", "Answer.main"], rows)


def test_ties_are_configurable(tmp_path):
    path = _votes(tmp_path / "h.csv", {(0, 1): ["background", "main_object", "background", "main_object"],
                                      (0, 2): ["background", "background", "main_object", "background", "main_object"]})
    assert [h.label for h in read_annotations(path)] == ["spurious", "spurious"]
    assert [h.label for h in read_annotations(path, ties="core")] == ["core", "spurious"]
    with pytest.raises(InvalidInputError, match="ties must be one of"):
        read_annotations(path, ties="maybe")


def test_human_labels_decide_the_pairs_and_keep_the_automated_verdict_beside(tmp_path):
    from auditor.annotations import apply_human_labels

    automated = [_verdict(0, 1, "core"), _verdict(0, 2, "spurious"), _verdict(1, 4, "spurious")]
    human = [HumanLabel(0, 1, "spurious", 5, 4), HumanLabel(0, 2, "spurious", 5, 5), HumanLabel(1, 4, "core", 5, 1),
             HumanLabel(1, 7, "spurious", 5, 3)]  # (1, 7) was not among the audited features
    used, spurious, pairs = apply_human_labels(human, automated, n_classes=2, n_features=8)
    assert [(v.class_index, v.feature, v.label) for v in used] == [(0, 1, "spurious"), (0, 2, "spurious"), (1, 4, "core")]
    assert used[0].heat_inside == automated[0].heat_inside  # the evidence stays
    assert used[0].decided_by == "human" and "automated verdict was core" in used[0].explanation
    assert spurious == {0: [1, 2], 1: [7]}
    assert [(p["feature"], p["human"], p["automated"]) for p in pairs] == [(1, "spurious", "core"), (2, "spurious", "spurious"),
                                                                          (4, "core", "spurious"), (7, "spurious", None)]
    with pytest.raises(InvalidInputError, match="features are 0..7"):
        apply_human_labels([HumanLabel(0, 9, "core", 1, 0)], automated, n_classes=2, n_features=8)
    with pytest.raises(InvalidInputError, match="model has 2 classes"):
        apply_human_labels([HumanLabel(5, 1, "core", 1, 0)], automated, n_classes=2)

    path = _votes(tmp_path / "h.csv", {(0, 1): ["background"] * 4 + ["main_object"], (1, 4): ["main_object"] * 3})
    only_agreement = run_annotations(path, automated, ["a", "b"])
    assert only_agreement.verdicts == automated and only_agreement.spurious == {0: [2], 1: [4]}
    assert only_agreement.section["used_for_rankings"] is False and "pairs" not in only_agreement.section
    used_result = run_annotations(path, automated, ["a", "b"], use_as_labels=True, n_features=8)
    assert used_result.spurious == {0: [1, 2]}
    section = used_result.section
    assert section["used_for_rankings"] is True and section["n_changed"] == 2
    assert section["confusion"] == only_agreement.section["confusion"] == [[0, 1], [1, 0]]  # against the automated verdicts
    assert section["kappa"] == pytest.approx(cohen_kappa([[0, 1], [1, 0]]))


def test_audit_uses_human_labels_for_rankings_gaps_and_tuning(tmp_path):
    import auditor
    from tests.conftest import PlantedDataset, TwoChannelNet

    fast = {"progress": False, "gaps": {"min_k": 5, "n_bootstrap": 100}, "verdicts": {"n_images": 8},
            "tuning": {"epochs": 20, "baselines": []}, "report": {"html": False}}
    model, data = TwoChannelNet(), PlantedDataset(n=40)
    plain = auditor.audit(model, data, class_names=["object", "other"], config=fast)
    assert plain.spurious_features(0) == [1] and plain.core_features(0) == [0]
    # Humans say the opposite: feature 0 (the object channel) is spurious, feature 1 core.
    path = _votes(tmp_path / "human.csv", {(0, 0): ["background"] * 3 + ["main_object"] * 2,
                                          (0, 1): ["main_object"] * 4 + ["background"]})
    compared = auditor.audit(model, data, class_names=["object", "other"],
                             config={**fast, "report": {"html": False, "human_annotations": str(path)}})
    np.testing.assert_array_equal(compared.spuriosity("train"), plain.spuriosity("train"))  # agreement only: nothing changes
    assert compared.sections["human_agreement"]["kappa"] is not None
    used = auditor.audit(model, data, class_names=["object", "other"], config=fast, annotations=path)
    assert used.spurious_features(0) == [0] and used.core_features(0) == [1]
    assert used.config.report.annotations_as_labels and used.config.report.human_annotations == str(path)
    activations = torch_mean_channel(data, 0)
    assert np.corrcoef(used.spuriosity("train"), activations)[0, 1] > 0.8  # ranked by the human-spurious feature now
    assert not np.allclose(used.spuriosity("train"), plain.spuriosity("train"))
    section = used.sections["human_agreement"]
    assert section["used_for_rankings"] and section["n_changed"] == 2
    assert {(p["feature"], p["human"], p["automated"]) for p in section["pairs"]} == {(0, "spurious", "core"), (1, "core", "spurious")}
    assert section["confusion"] == [[0, 1], [1, 0]] and section["kappa"] == pytest.approx(-1.0)
    assert used.gaps[0].top_indices != plain.gaps[0].top_indices  # the gap is measured on the new ranking
    assert used.tuning["low_spuriosity"].before["max_gap"] == pytest.approx(used.gaps[0].gap)
    from auditor.report.html import render_html

    html = render_html(used.to_dict(), tmp_path, tmp_path / "report.html").read_text()
    assert 'id="human-labels-used"' in html and "2 differ from the automated verdict" in html


def torch_mean_channel(data, channel):
    import torch

    return torch.stack([data[i][0][channel] for i in range(len(data))]).clamp(min=0).mean((1, 2)).numpy()


def test_annotations_as_labels_needs_the_csv_and_ties_are_checked():
    from auditor.config import load_config
    from auditor.errors import ConfigError

    with pytest.raises(ConfigError, match="names no CSV"):
        load_config({"report": {"annotations_as_labels": True}})
    with pytest.raises(ConfigError, match="annotation_ties"):
        load_config({"report": {"annotation_ties": "maybe"}})
    config = load_config({"report": {"human_annotations": "h.csv", "annotations_as_labels": True, "annotation_ties": "core"}})
    assert config.report.annotations_as_labels and config.report.annotation_ties == "core"
