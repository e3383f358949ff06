import numpy as np
import pytest

from auditor.config import AuditConfig
from auditor.errors import ConfigError, InvalidInputError
from auditor.features import FeatureCache
from auditor.neurontune import (
    biased_dimensions,
    cap_suppression,
    neuron_bias_scores,
    neurontune_head,
    run_neurontune,
    spurious_overlap,
    worst_class_gain_confidence,
)
from auditor.results import FeatureVerdict
from auditor.tuning import fit_head


def test_bias_scores_are_median_differences_between_errors_and_successes():
    acts = np.array([[0.0, 1.0], [0.0, 2.0], [0.0, 5.0], [0.0, 7.0], [4.0, 0.0], [6.0, 0.0]])
    labels = np.array([0, 0, 0, 0, 1, 1])
    predictions = np.array([0, 0, 1, 1, 1, 1])  # class 0: two errors with high feature 1; class 1: no error
    delta = neuron_bias_scores(acts, labels, predictions, standardize=False)
    assert delta.shape == (2, 2)
    assert delta[0].tolist() == [0.0, 4.5]  # median(5, 7) - median(1, 2)
    assert np.isnan(delta[1]).all()  # no misclassified image of class 1
    scaled = neuron_bias_scores(acts, labels, predictions)
    assert scaled[0, 1] == pytest.approx(4.5 / acts[:, 1].std())


def test_bias_scores_reject_mismatched_lengths():
    with pytest.raises(InvalidInputError, match="same N"):
        neuron_bias_scores(np.zeros((3, 2)), np.zeros(3, int), np.zeros(2, int))


def test_biased_dimensions_rules_and_threshold():
    delta = np.array([[0.5, -1.0, 0.0, 0.2], [-0.2, -0.1, 0.3, 0.2], [np.nan] * 4])
    assert biased_dimensions(delta).tolist() == [True, False, True, True]
    assert biased_dimensions(delta, threshold=0.25).tolist() == [True, False, True, False]
    assert biased_dimensions(delta, combine="mean").tolist() == [True, False, True, True]
    assert biased_dimensions(delta, threshold=0.19, combine="mean").tolist() == [False, False, False, True]
    assert not biased_dimensions(np.full((2, 3), np.nan)).any()
    with pytest.raises(ConfigError, match="combine"):
        biased_dimensions(delta, combine="all")


def test_cap_keeps_the_most_biased_dimensions():
    delta = np.array([[0.1, 0.9, 0.5, 0.3], [0.0, 0.0, 0.0, 0.8]])
    flagged = biased_dimensions(delta)
    assert flagged.all()
    assert np.flatnonzero(cap_suppression(delta, flagged, "any", 0.5)).tolist() == [1, 3]
    assert cap_suppression(delta, flagged, "any", 1.0).all()


def test_overlap_with_the_audit():
    overlap = spurious_overlap([1, 2, 5], {0: [1, 3], 1: [2]}, {0: [0], 1: [5]})
    assert overlap["spurious_recall"] == pytest.approx(2 / 3)
    assert overlap["core_suppressed"] == 0.5
    assert overlap["per_class"][0]["spurious_kept"] == [3]
    assert overlap["jaccard"] == pytest.approx(2 / 4)


def planted(n_per_class, cue_rate, rng):
    """Two classes; dim 0 noisy core, dims 1/2 cues of class 0/1 (rate ``cue_rate`` with their class), dim 3 noise."""
    labels = np.repeat([0, 1], n_per_class)
    core = np.where(labels == 1, 1.0, -1.0) + rng.normal(0, 0.9, len(labels))
    own = rng.random(len(labels)) < cue_rate
    cue0 = np.where(labels == 0, own, ~own)
    cue1 = np.where(labels == 1, own, ~own)
    noise = rng.normal(0, 1, len(labels))
    acts = np.stack([core, 3.0 * cue0 + rng.normal(0, 0.2, len(labels)), 3.0 * cue1 + rng.normal(0, 0.2, len(labels)), noise], 1)
    return acts.astype(np.float32), labels, own


def worst_group(weight, bias, acts, labels, own):
    correct = (acts @ weight.T + bias).argmax(1) == labels
    return min(correct[(labels == c) & (own == f)].mean() for c in (0, 1) for f in (False, True))


def test_neurontune_suppresses_the_cues_and_improves_worst_group_accuracy():
    rng = np.random.default_rng(0)
    train, train_y, _ = planted(300, 0.97, rng)
    val, val_y, _ = planted(200, 0.5, rng)
    test, test_y, test_own = planted(400, 0.5, rng)
    w0, b0, _ = fit_head(train, train_y, np.zeros((2, 4)), np.zeros(2), epochs=300, lr=0.05, weight_decay=0.0)
    val_pred = (val @ w0.T + b0).argmax(1)
    result = neurontune_head(train, train_y, val, val_y, val_pred, w0, b0, epochs=200, lr=0.05, weight_decay=0.0)
    assert result["suppressed"] == [1, 2]
    assert np.all(result["weight"][:, [1, 2]] == 0)
    assert result["objective_after"] < result["objective_before"]
    assert worst_group(result["weight"], result["bias"], test, test_y, test_own) > worst_group(w0, b0, test, test_y, test_own) + 0.2


def test_run_neurontune_suppresses_the_spurious_dimensions():
    rng = np.random.default_rng(1)
    train, train_y, _ = planted(200, 0.97, rng)
    val, val_y, _ = planted(300, 0.5, rng)  # 150 held out per class: enough for the 0.99 gain confidence
    w0, b0, _ = fit_head(train, train_y, np.zeros((2, 4)), np.zeros(2), epochs=300, lr=0.05, weight_decay=0.0)
    config = AuditConfig().replace(**{"neurontune.enabled": True, "neurontune.epochs": 100, "gaps.min_k": 5})
    train_cache = FeatureCache.from_arrays(train, train @ w0.T + b0, train_y)
    val_cache = FeatureCache.from_arrays(val, val @ w0.T + b0, val_y)
    verdict = dict(importance=1.0, heat_inside=0.1, object_area=0.2, density_ratio=0.5, object_drop=0.0,
                   background_drop=0.5, heat_says_spurious=True, ablation_says_spurious=True, confirmed=True)
    verdicts = [FeatureVerdict(0, 1, "spurious", **verdict), FeatureVerdict(1, 2, "spurious", **verdict),
                FeatureVerdict(0, 0, "core", **verdict)]
    scores = np.where(val_y == 0, val[:, 1], val[:, 2]).astype(float)
    result = run_neurontune((w0, b0), train_cache, val_cache, "val", val_cache, "val", scores, verdicts,
                            config.neurontune, config.gaps, config.tuning.weight_decay)
    section = result.section
    assert section["identification_split"] == "val"
    assert section["suppressed"] == [1, 2]
    assert section["overlap"]["spurious_recall"] == 1.0 and section["overlap"]["core_suppressed"] == 0.0
    assert section["after"]["worst_class_accuracy"] > section["before"]["worst_class_accuracy"]
    assert section["after"]["mean_gap"] < section["before"]["mean_gap"]
    assert np.all(result.weight[:, [1, 2]] == 0) and result.weight.shape == (2, 4) and result.bias.shape == (2,)
    assert not section["fallback"] and section["gain_confidence"] >= config.neurontune.min_gain_confidence


def test_gain_confidence_separates_a_real_gain_from_a_lucky_one():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 100)
    original = rng.random(200) < np.where(labels == 0, 0.6, 0.9)  # class 0 is the worst class
    lucky, real = original.copy(), original.copy()
    lucky[np.flatnonzero((labels == 0) & ~original)[:2]] = True  # two more right answers in the worst class
    real[np.flatnonzero((labels == 0) & ~original)[:20]] = True
    hurt = original.copy()
    hurt[np.flatnonzero((labels == 0) & original)[:10]] = False
    confidence = {name: worst_class_gain_confidence(correct, original, labels, rng=np.random.default_rng(1))
                  for name, correct in (("lucky", lucky), ("real", real), ("hurt", hurt))}
    assert confidence["real"] > 0.99
    assert confidence["lucky"] < AuditConfig().neurontune.min_gain_confidence
    assert confidence["hurt"] < 0.01
    with pytest.raises(InvalidInputError):
        worst_class_gain_confidence(real, original[:-1], labels)


def planted_many(n_per_class, cue_rate, rng, n_core=4, n_noise=24):
    """Two classes, several weak core dimensions, one cue per class, many noise dimensions."""
    labels = np.repeat([0, 1], n_per_class)
    sign = np.where(labels == 1, 1.0, -1.0)[:, None]
    core = 0.5 * sign + rng.normal(0, 1.0, (len(labels), n_core))
    own = rng.random(len(labels)) < cue_rate
    cue0 = np.where(labels == 0, own, ~own)
    cue1 = np.where(labels == 1, own, ~own)
    cues = np.stack([2.0 * cue0, 2.0 * cue1], 1) + rng.normal(0, 0.3, (len(labels), 2))
    acts = np.concatenate([core, cues, rng.normal(0, 1, (len(labels), n_noise))], 1)
    return acts.astype(np.float32), labels, own


def test_default_neurontune_never_keeps_a_head_worse_than_erm_on_held_out_data():
    """lambda = 0 with 'any' flags nearly every dimension here; the held-out choice must not hurt."""
    rng = np.random.default_rng(0)
    train, train_y, _ = planted_many(400, 0.95, rng)
    val, val_y, _ = planted_many(300, 0.5, rng)
    test, test_y, test_own = planted_many(500, 0.5, rng)
    d = train.shape[1]
    w0, b0, _ = fit_head(train, train_y, np.zeros((2, d)), np.zeros(2), epochs=300, lr=0.05, weight_decay=0.0)
    config = AuditConfig().replace(**{"neurontune.enabled": True, "gaps.min_k": 5})
    assert config.neurontune.threshold == 0.0 and config.neurontune.combine == "any" and config.neurontune.select_on_holdout
    train_cache = FeatureCache.from_arrays(train, train @ w0.T + b0, train_y)
    val_cache = FeatureCache.from_arrays(val, val @ w0.T + b0, val_y)
    result = run_neurontune((w0, b0), train_cache, val_cache, "val", val_cache, "val", None, [],
                            config.neurontune, config.gaps, config.tuning.weight_decay)
    section = result.section
    assert section["n_over_threshold"] > d // 2  # the paper's default rule flags most dimensions
    erm_held_out = section["candidates"][0]
    kept = max(section["candidates"], key=lambda c: (c["worst_class_accuracy"], c["accuracy"]))
    assert kept["worst_class_accuracy"] >= erm_held_out["worst_class_accuracy"]
    assert section["n_held_out_images"] == 300 and section["n_identification_images"] == 300
    erm_wg = worst_group(w0, b0, test, test_y, test_own)
    assert worst_group(result.weight, result.bias, test, test_y, test_own) >= erm_wg - 0.03


def test_uncapped_paper_defaults_can_fall_below_erm_which_is_why_we_select():
    rng = np.random.default_rng(0)
    train, train_y, _ = planted_many(400, 0.95, rng)
    val, val_y, _ = planted_many(300, 0.5, rng)
    d = train.shape[1]
    w0, b0, _ = fit_head(train, train_y, np.zeros((2, d)), np.zeros(2), epochs=300, lr=0.05, weight_decay=0.0)
    pred = (val @ w0.T + b0).argmax(1)
    result = neurontune_head(train, train_y, val, val_y, pred, w0, b0, epochs=100, lr=0.05, weight_decay=0.0,
                             max_suppressed_fraction=0.5, select_activations=val, select_labels=val_y)
    scores = {c["n_suppressed"]: c["worst_class_accuracy"] for c in result["candidates"]}
    assert 0 in scores and len(scores) > 2
    assert result["fallback"] == (len(result["suppressed"]) == 0)
