import numpy as np

from auditor.ranking import class_zscores, combine_scores, spuriosity_scores


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
