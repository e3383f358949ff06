"""Human core/spurious annotations: CSV import, agreement, Cohen's kappa, disagreements with evidence."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from auditor.annotations import HumanLabel, agreement, cohen_kappa, run_annotations, read_annotations
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
