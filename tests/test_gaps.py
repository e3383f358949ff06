import numpy as np
import pytest

from auditor.config import GapConfig
from auditor.gaps import class_gaps, gap_k, spurious_gap


def test_gap_k_respects_fraction_minimum_and_size():
    assert gap_k(500, 0.1, 10) == 50
    assert gap_k(50, 0.1, 10) == 10
    assert gap_k(19, 0.1, 10) == 0


def test_planted_positive_gap_is_significant():
    scores = np.arange(100.0)
    correct = scores >= 50  # the most spurious half is always right, the rest always wrong
    est = spurious_gap(scores, correct, np.arange(100) + 1000, 3, rng=np.random.default_rng(0))
    assert est.gap == pytest.approx(1.0)
    assert est.significant and est.ci_low > 0
    assert est.k == 10 and est.class_index == 3
    assert est.top_indices[0] == 1099 and est.bottom_indices[0] == 1000
    assert est.note == ""


def test_negative_gap_is_flagged_as_possible_label_noise():
    scores = np.arange(60.0)
    correct = scores < 30
    est = spurious_gap(scores, correct, np.arange(60), 0, rng=np.random.default_rng(0))
    assert est.gap == pytest.approx(-1.0) and est.significant
    assert "label noise" in est.note


def test_no_gap_when_accuracy_does_not_depend_on_spuriosity():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=400)
    correct = rng.random(400) < 0.7
    est = spurious_gap(scores, correct, np.arange(400), 0, rng=np.random.default_rng(0))
    assert est.ci_low <= 0 <= est.ci_high
    assert not est.significant


def test_class_gaps_skips_classes_without_scores_and_warns_on_small_ones(caplog):
    labels = np.array([0] * 100 + [1] * 100 + [2] * 8)
    scores = np.concatenate([np.arange(100.0), np.full(100, np.nan), np.arange(8.0)])
    correct = np.ones(208, bool)
    gaps = class_gaps(scores, labels, correct, GapConfig(), np.random.default_rng(0))
    assert set(gaps) == {0, 2}
    assert gaps[0].gap == 0.0
    assert np.isnan(gaps[2].gap) and gaps[2].note.startswith("skipped")
    assert "min_k" in caplog.text
