import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from auditor.config import RankingConfig
from auditor.ranking import (
    class_zscores,
    combine_scores,
    direction_scores,
    pooled_covariance,
    run_ranking,
    spuriosity_scores,
)


def test_class_zscores_are_per_class():
    values = np.array([[1.0], [3.0], [100.0], [300.0]])
    z = class_zscores(values, np.array([0, 0, 1, 1]))
    assert np.allclose(z[:, 0], [-1, 1, -1, 1])


def test_spuriosity_ranks_by_planted_feature_and_is_nan_without_spurious_features():
    rng = np.random.default_rng(0)
    activations = rng.normal(size=(200, 6))
    labels = np.repeat([0, 1], 100)
    activations[:100, 4] += np.linspace(0, 10, 100)  # planted: feature 4 grows along class 0
    scores = spuriosity_scores(activations, labels, {0: [4]})
    assert np.isnan(scores[100:]).all()
    assert np.corrcoef(scores[:100], np.arange(100))[0, 1] > 0.9


def test_spuriosity_averages_several_features():
    activations = np.array([[0.0, 30.0], [2.0, 10.0], [4.0, 20.0]])
    scores = spuriosity_scores(activations, np.zeros(3, int), {0: [0, 1]})
    # z-scores: feature 0 -> [-1.22, 0, 1.22], feature 1 -> [1.22, -1.22, 0]; means [0, -0.61, 0.61]
    assert np.argsort(scores).tolist() == [1, 0, 2]


def test_combine_scores_ignores_nan():
    out = combine_scores(np.array([1.0, np.nan, np.nan]), np.array([3.0, 2.0, np.nan]))
    assert out[0] == 2.0 and out[1] == 2.0 and np.isnan(out[2])


def test_a_cue_direction_whitened_by_the_covariance_takes_a_shared_nuisance_out():
    rng = np.random.default_rng(0)
    n = 400
    cue = rng.random(n) < 0.5
    nuisance = rng.normal(scale=2.0, size=n)  # e.g. object size, moving both features
    activations = np.column_stack([cue + nuisance, nuisance])
    labels = np.zeros(n, int)
    direction = np.array([1.0, 0.0])  # the swaps move feature 0 only
    whitened = direction_scores(activations, labels, {0: direction}, pooled_covariance(activations, labels), 0.01)
    by_mean = spuriosity_scores(activations, labels, {0: [0]})
    assert roc_auc_score(cue, whitened) > 0.99
    assert roc_auc_score(cue, by_mean) < 0.7
    assert abs(whitened.mean()) < 1e-9 and abs(whitened.std() - 1) < 1e-9


def test_the_ranking_stage_uses_cue_directions_only_for_ranked_classes_and_falls_back_to_the_mean():
    rng = np.random.default_rng(1)
    activations = rng.normal(size=(90, 3))
    labels = np.repeat([0, 1, 2], 30)
    spurious = {0: [0], 1: [1]}  # class 2 has no spurious feature
    directions = {0: np.array([0.0, 0.0, 1.0]), 2: np.array([1.0, 0.0, 0.0])}  # class 1 had no swap
    config = RankingConfig(feature_score="cue_direction", direction_shrinkage=0.0)
    scores = run_ranking({"train": activations}, {"train": labels}, spurious, None, config, cue_directions=directions).scores
    mean = spuriosity_scores(activations, labels, spurious)
    covariance = pooled_covariance(activations, labels)
    assert np.allclose(scores["train"][:30], direction_scores(activations, labels, {0: directions[0]}, covariance, 0.0)[:30])
    assert np.allclose(scores["train"][30:60], mean[30:60])
    assert np.isnan(scores["train"][60:]).all()
    by_mean = run_ranking({"train": activations}, {"train": labels}, spurious, None, RankingConfig(feature_score="mean"),
                          cue_directions=directions).scores["train"]
    assert np.allclose(by_mean[:60], mean[:60])


def test_the_ranking_stage_falls_back_to_the_mean_when_the_covariance_cannot_be_estimated(caplog):
    activations = np.array([[1.0, 0.0], [0.0, 2.0]])
    labels = np.array([0, 1])  # one image per class: no within-class covariance
    scores = run_ranking({"train": activations}, {"train": labels}, {0: [0]}, None, RankingConfig(),
                         cue_directions={0: np.array([1.0, 0.0])})
    assert scores.section["by_direction"] == [] and scores.section["by_mean"] == [0]
    assert np.allclose(scores.scores["train"][:1], spuriosity_scores(activations, labels, {0: [0]})[:1])
    assert "ranking every class by the mean" in caplog.text


def test_direction_scores_reject_mismatched_shapes_and_negative_shrinkage():
    acts = np.zeros((4, 2))
    with pytest.raises(ValueError, match="shrinkage"):
        direction_scores(acts, np.zeros(4, int), {0: np.ones(2)}, np.eye(2), -1.0)
    with pytest.raises(ValueError, match="does not match"):
        direction_scores(acts, np.zeros(4, int), {0: np.ones(3)}, np.eye(2), 1.0)
    with pytest.raises(ValueError, match="more labelled rows"):
        pooled_covariance(acts[:1], np.zeros(1, int))


def test_the_pooled_covariance_in_chunks_equals_the_direct_one_and_ignores_unlabelled_rows():
    rng = np.random.default_rng(2)
    activations = rng.normal(size=(500, 7)) + np.repeat(rng.normal(scale=5, size=(5, 7)), 100, axis=0)
    labels = np.repeat(np.arange(5), 100)
    labels[:7] = -1
    kept, kept_labels = activations[labels >= 0], labels[labels >= 0]
    centred = kept - np.stack([kept[kept_labels == c].mean(0) for c in kept_labels])
    direct = centred.T @ centred / (len(kept) - 5)
    assert np.allclose(pooled_covariance(activations, labels, chunk_size=37), direct)
    subset = pooled_covariance(activations, labels, max_rows=250)
    assert subset.shape == (7, 7) and np.allclose(subset, direct, atol=0.5)

