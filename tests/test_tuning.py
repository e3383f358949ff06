import dataclasses

import numpy as np
import pytest

from auditor.config import GapConfig, TuningConfig
from auditor.errors import ConfigError
from auditor.evaluation import decile_accuracy
from auditor.features import FeatureCache
from auditor.ranking import spuriosity_scores
from auditor.tuning import (
    fit_head,
    label_free_groupings,
    low_spuriosity_share,
    otsu_threshold,
    run_tuning,
    select_tuning_images,
    split_validation,
    training_rows,
    tune_head,
    tuning_groups,
)


def planted_split(n_per_class, cue_rate, rng):
    """Two classes; feature 0 is a noisy core signal, features 1/2 are class 0/1 cues."""
    labels = np.repeat([0, 1], n_per_class)
    core = np.where(labels == 1, 1.0, -1.0) + rng.normal(0, 0.8, len(labels))
    cue0 = np.where(labels == 0, rng.random(len(labels)) < cue_rate, rng.random(len(labels)) < 1 - cue_rate)
    cue1 = np.where(labels == 1, rng.random(len(labels)) < cue_rate, rng.random(len(labels)) < 1 - cue_rate)
    activations = np.stack([core, 3.0 * cue0 + rng.normal(0, 0.2, len(labels)), 3.0 * cue1 + rng.normal(0, 0.2, len(labels))], 1)
    return activations.astype(np.float32), labels, np.stack([cue0, cue1], 1)


def planted_worst_group(weight, bias, activations, labels, cues):
    """Worst accuracy over the planted groups (class x own cue present) of a head on a planted split."""
    correct = (activations @ weight.T + bias).argmax(1) == labels
    own_cue = cues[np.arange(len(labels)), labels]
    return min(correct[(labels == c) & (own_cue == f)].mean() for c in (0, 1) for f in (False, True))


def erm_head(activations, labels):
    weight, bias, _ = fit_head(activations, labels, np.zeros((2, 3)), np.zeros(2), epochs=300, lr=0.05, weight_decay=0.0)
    return weight, bias


def cache_for(activations, labels, weight, bias):
    return FeatureCache.from_arrays(activations, activations @ weight.T + bias, labels)


def planted_problem(val_cue_rate, seed=3, n_val=300):
    """Training at cue rate 0.95 (400 per class), validation at ``val_cue_rate`` (``n_val`` per class), a balanced
    test split (400), the ERM head, the feature caches of train and validation and their spuriosity."""
    from types import SimpleNamespace

    rng = np.random.default_rng(seed)
    train_x, train_y, _ = planted_split(400, 0.95, rng)
    val_x, val_y, _ = planted_split(n_val, val_cue_rate, rng)
    test_x, test_y, test_cues = planted_split(400, 0.5, rng)
    weight, bias = erm_head(train_x, train_y)
    spurious = {0: [1], 1: [2]}
    return SimpleNamespace(train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y, test_x=test_x, test_y=test_y,
                           test_cues=test_cues, weight=weight, bias=bias, spurious=spurious,
                           train=cache_for(train_x, train_y, weight, bias), val=cache_for(val_x, val_y, weight, bias),
                           train_scores=spuriosity_scores(train_x, train_y, spurious),
                           val_scores=spuriosity_scores(val_x, val_y, spurious))


def tuned_with(p, training_images, baselines=()):
    """Low-spuriosity tuning of a planted problem with the default config but these two keys; the stage and the
    kept head's planted test worst group."""
    stage = run_tuning((p.weight, p.bias), p.train, p.train_scores, p.val, p.val_scores,
                       TuningConfig(baselines=list(baselines), training_images=training_images), GapConfig(), seed=0,
                       spurious=p.spurious)
    return stage, planted_worst_group(*stage.heads["low_spuriosity"], p.test_x, p.test_y, p.test_cues)


def test_fit_head_learns_a_separable_problem_and_respects_feature_mask():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    w, b, epochs = fit_head(x, y, np.zeros((2, 3)), np.zeros(2), epochs=200, lr=0.1, weight_decay=0.0)
    assert ((x @ w.T + b).argmax(1) == y).mean() > 0.95 and epochs == 200
    w, b, _ = fit_head(x, y, np.zeros((2, 3)), np.zeros(2), epochs=50, lr=0.1, weight_decay=0.0,
                       feature_mask=np.array([False, True, True]))
    assert np.all(w[:, 0] == 0)


def test_fit_head_stops_when_asked():
    x = np.eye(2, dtype=np.float32)
    calls = []
    _, _, epochs = fit_head(x, np.array([0, 1]), np.zeros((2, 2)), np.zeros(2), epochs=100, lr=0.1, weight_decay=0.0,
                            should_stop=lambda e, w, b: calls.append(e) or e >= 30)
    assert epochs == 30 and calls == [10, 20, 30]


def test_selection_methods():
    labels = np.repeat([0, 1], 10)
    scores = np.concatenate([np.arange(10.0), np.full(10, np.nan)])
    correct = np.ones(20, bool); correct[[3, 15]] = False
    rng = np.random.default_rng(0)
    low = select_tuning_images("low_spuriosity", labels, scores, correct, 4, rng)
    assert low[:4].tolist() == [0, 1, 2, 3] and len(low) == 8 and set(low[4:]) <= set(range(10, 20))
    error = select_tuning_images("error", labels, scores, correct, 2, rng)
    assert 3 in error and 15 in error
    with pytest.raises(ConfigError, match="unknown tuning method"):
        select_tuning_images("vibes", labels, scores, correct, 2, rng)


def test_decile_accuracy_tracks_spuriosity():
    labels = np.zeros(100, int)
    scores = np.arange(100.0)
    correct = scores >= 50
    deciles = decile_accuracy(scores, labels, correct)
    assert deciles[:5] == [0.0] * 5 and deciles[5:] == [1.0] * 5


def test_low_spuriosity_tuning_closes_the_gap_and_random_tuning_does_not():
    rng = np.random.default_rng(0)
    train_x, train_y, _ = planted_split(600, 0.9, rng)
    val_x, val_y, val_cues = planted_split(200, 0.5, rng)
    weight, bias = erm_head(train_x, train_y)
    spurious = {0: [1], 1: [2]}
    train, val = cache_for(train_x, train_y, weight, bias), cache_for(val_x, val_y, weight, bias)
    train_scores = spuriosity_scores(train_x, train_y, spurious)
    val_scores = spuriosity_scores(val_x, val_y, spurious)

    # training images only: the selection rule alone must make the difference (validation halves are tested below)
    config = TuningConfig(n_per_class=60, epochs=300, lr=0.05, max_accuracy_drop=0.02, baselines=["random"],
                          validation_fit_fraction=0.0, mode="select", selection="worst_decile")
    stage = run_tuning((weight, bias), train, train_scores, val, val_scores, config, GapConfig(), seed=0)
    ours, rand = stage.results["low_spuriosity"], stage.results["random"]
    w_ours, b_ours = stage.heads["low_spuriosity"]
    fit_rows, held_rows = split_validation(val_y, config.validation_fit_fraction, np.random.default_rng([0, 1]))
    alone, w_alone, _ = tune_head("low_spuriosity", weight, bias, train, train_scores, val, val_scores, config, GapConfig(),
                                  np.random.default_rng(0), val_fit_rows=fit_rows, val_held_out_rows=held_rows)
    assert alone.after == ours.after and np.array_equal(w_alone, w_ours)  # a baseline never changes our result
    assert ours.before["max_gap"] > 0.3
    assert ours.after["max_gap"] < ours.before["max_gap"] - 0.3
    assert rand.after["max_gap"] > ours.after["max_gap"] + 0.2
    assert ours.after["accuracy"] >= ours.before["accuracy"] - 0.02

    def worst_group(w, b):
        return planted_worst_group(w, b, val_x, val_y, val_cues)

    assert worst_group(weight, bias) < 0.7  # ERM leans on the cues
    assert worst_group(w_ours, b_ours) > worst_group(weight, bias) + 0.2


def test_validation_split_is_stratified_disjoint_and_keeps_held_out_rows():
    labels = np.array([0] * 9 + [1] * 3 + [-1] * 2)
    fit, held = split_validation(labels, 0.5, np.random.default_rng(0))
    assert not set(fit) & set(held) and set(fit) | set(held) == set(range(12))  # unreadable rows in neither
    assert np.bincount(labels[held]).min() >= 1 and np.bincount(labels[fit]).tolist() == [4, 2]
    fit, held = split_validation(labels, 0.0, np.random.default_rng(0))
    assert len(fit) == 0 and len(held) == 12


@pytest.mark.parametrize("val_cue_rate, size_scales", [(0.5, [1.0]), (0.9, [1.0, 0.5, 0.25])])
def test_select_mode_lifts_the_worst_group_and_reports_only_held_out_images(val_cue_rate, size_scales):
    """Few cue-free training images; validation balanced (0.5) or as skewed as training (0.9, where a smaller,
    cleaner set chosen on the held-out half is needed); no group labels used."""
    p = planted_problem(val_cue_rate)
    train_x, train_y, val_x, val_y = p.train_x, p.train_y, p.val_x, p.val_y
    test_x, test_y, test_cues = p.test_x, p.test_y, p.test_cues
    weight, bias, spurious, train, val = p.weight, p.bias, p.spurious, p.train, p.val
    config = TuningConfig(baselines=[], size_scales=size_scales, mode="select", selection="worst_decile")
    stage = run_tuning((weight, bias), train, spuriosity_scores(train_x, train_y, spurious), val,
                       spuriosity_scores(val_x, val_y, spurious), config, GapConfig(), seed=0)
    result = stage.results["low_spuriosity"]
    _, held = split_validation(val_y, config.validation_fit_fraction, np.random.default_rng([0, 1]))
    assert result.after["evaluated_on"] == "val, held-out half" and result.after["n_evaluated"] == len(held) == 300
    assert result.after["fitted_on"]["val"] > 0 and result.n_train_images == sum(result.after["fitted_on"].values())

    def worst_group(w, b):
        return planted_worst_group(w, b, test_x, test_y, test_cues)

    erm = worst_group(weight, bias)
    assert erm < 0.75
    assert worst_group(*stage.heads["low_spuriosity"]) > erm + 0.08


def test_without_validation_nothing_is_held_out():
    rng = np.random.default_rng(0)
    x, y, _ = planted_split(100, 0.9, rng)
    weight, bias = erm_head(x, y)
    cache = cache_for(x, y, weight, bias)
    scores = spuriosity_scores(x, y, {0: [1], 1: [2]})
    stage = run_tuning((weight, bias), cache, scores, cache, scores, TuningConfig(baselines=[], epochs=20, mode="select"),
                       GapConfig(), seed=0)
    after = stage.results["low_spuriosity"].after
    assert after["evaluated_on"] == "train" and set(after["fitted_on"]) <= {"train"} and after["n_evaluated"] == 200
    # reweighting halves the training split instead: what it reports was never fitted on (by default each half is
    # judged by heads fitted on the other; without cross-fitting the held-out half alone)
    stage = run_tuning((weight, bias), cache, scores, cache, scores, TuningConfig(baselines=[]), GapConfig(), seed=0)
    after = stage.results["low_spuriosity"].after
    assert after["evaluated_on"] == "train, both halves, each judged by heads fitted on the other"
    assert after["n_evaluated"] == 200 and set(after["fitted_on"]) <= {"train"} and sum(after["fitted_on"].values()) <= 100
    stage = run_tuning((weight, bias), cache, scores, cache, scores, TuningConfig(baselines=[], cross_fit=False), GapConfig(),
                       seed=0)
    after = stage.results["low_spuriosity"].after
    assert after["evaluated_on"] == "train, held-out half" and after["n_evaluated"] == 100


def test_otsu_threshold_splits_two_modes_and_refuses_constant_values():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 0.3, 95), rng.normal(4, 0.3, 5)])
    threshold = otsu_threshold(values)
    assert (values > threshold).sum() == 5
    assert otsu_threshold(np.array([0.0, 0.1, 0.2, 5.0, 5.1])) == 0.2
    assert np.isnan(otsu_threshold(np.ones(10))) and np.isnan(otsu_threshold(np.array([np.nan, 1.0])))


def test_tuning_groups_are_label_free_and_per_method():
    labels = np.array([0] * 6 + [1] * 4 + [-1])
    scores = np.array([0.0, 0.1, 0.2, 3.0, 3.1, 3.2, np.nan, np.nan, np.nan, np.nan, np.nan])
    correct = np.array([True] * 9 + [False, True])
    assert tuning_groups("low_spuriosity", labels, scores, correct).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, -1]
    assert tuning_groups("random", labels, scores, correct).tolist() == [0] * 6 + [2] * 4 + [-1]
    assert tuning_groups("error", labels, scores, correct).tolist() == [0] * 6 + [2, 2, 2, 3, -1]
    with pytest.raises(ConfigError, match="unknown tuning method"):
        tuning_groups("vibes", labels, scores, correct)


@pytest.mark.parametrize("val_cue_rate", [0.5, 0.9])
def test_reweighting_lifts_the_worst_group_from_held_out_choices_only(val_cue_rate):
    """Default mode: group-reweighted retraining on one validation half, chosen on the other; no group labels.
    (Without cross-fitting, so that the reported figures are the kept head's own; with it, see below.)"""
    p = planted_problem(val_cue_rate)
    train_x, train_y, val_x, val_y = p.train_x, p.train_y, p.val_x, p.val_y
    test_x, test_y, test_cues = p.test_x, p.test_y, p.test_cues
    weight, bias, spurious, train, val = p.weight, p.bias, p.spurious, p.train, p.val
    val_scores = spuriosity_scores(val_x, val_y, spurious)
    config = TuningConfig(baselines=["random"], refit_on_validation=False, cross_fit=False)
    assert config.mode == "reweight" and config.selection == "worst_group"
    stage = run_tuning((weight, bias), train, spuriosity_scores(train_x, train_y, spurious), val, val_scores, config,
                       GapConfig(), seed=0)
    ours, rand = stage.results["low_spuriosity"], stage.results["random"]
    fit, held = split_validation(val_y, config.validation_fit_fraction, np.random.default_rng([0, 1]))
    assert ours.after["evaluated_on"] == "val, held-out half" and ours.after["n_evaluated"] == len(held) == 300
    assert ours.after["fitted_on"] == {"val": len(fit)} and ours.after["inverse_l2"] in config.inverse_l2_grid
    # the reported figures are the kept head's on the held-out half, which it never saw
    w, b = stage.heads["low_spuriosity"]
    held_correct = (val_x[held] @ w.T + b).argmax(1) == val_y[held]
    assert ours.after["accuracy"] == pytest.approx(held_correct.mean(), abs=1e-6)
    assert ours.after["worst_group_accuracy"] >= ours.before["worst_group_accuracy"]

    def worst_group(w, b):
        return planted_worst_group(w, b, test_x, test_y, test_cues)

    erm = worst_group(weight, bias)
    assert erm < 0.75
    assert worst_group(w, b) > erm + 0.08
    if val_cue_rate > 0.5:  # skewed validation: only the spuriosity groups upweight the rare cue-free images
        assert worst_group(w, b) > worst_group(*stage.heads["random"]) + 0.05
    assert rand.after["fitted_on"] in ({}, {"val": len(fit)})
    # candidates balanced the spuriosity groups and the model's mistakes; none may lose to the model's head on the former
    assert ours.after["groupings_tried"] == ["spuriosity", "error"] and ours.after["grouping"] in ("spuriosity", "error")
    assert ours.after["mean_group_accuracy"] >= ours.before["mean_group_accuracy"] - config.max_accuracy_drop
    # judged out of fold on every validation image (the default), the kept head lifts the worst group as well
    crossed = run_tuning((weight, bias), train, spuriosity_scores(train_x, train_y, spurious), val, val_scores,
                         TuningConfig(baselines=[]), GapConfig(), seed=0)
    assert crossed.results["low_spuriosity"].after["n_evaluated"] == len(val_y)
    assert worst_group(*crossed.heads["low_spuriosity"]) > erm + 0.08


def test_low_spuriosity_share_compares_a_split_with_the_class_training_tail():
    p_like_training, p_balanced = planted_problem(0.95), planted_problem(0.5)
    like_training = low_spuriosity_share(p_like_training.train_x, p_like_training.train_y, p_like_training.val_x,
                                         p_like_training.val_y, p_like_training.spurious)
    balanced = low_spuriosity_share(p_balanced.train_x, p_balanced.train_y, p_balanced.val_x, p_balanced.val_y,
                                    p_balanced.spurious)
    assert 0.0 < like_training < 0.3 and 0.45 < balanced < 0.7  # about the 10% tail itself vs. half the split cue-free
    # the training split against itself sits at the tail by construction; no spurious class gives no evidence
    itself = low_spuriosity_share(p_balanced.train_x, p_balanced.train_y, p_balanced.train_x, p_balanced.train_y, p_balanced.spurious)
    assert itself == pytest.approx(0.1, abs=0.01)
    assert np.isnan(low_spuriosity_share(p_balanced.train_x, p_balanced.train_y, p_balanced.val_x, p_balanced.val_y, {0: [], 1: []}))


@pytest.mark.parametrize("val_cue_rate", [0.5, 0.95])
def test_auto_groups_balance_the_mistakes_when_validation_is_as_skewed_as_training(val_cue_rate):
    p = planted_problem(val_cue_rate)
    config = TuningConfig(baselines=[])
    stage = run_tuning((p.weight, p.bias), p.train, spuriosity_scores(p.train_x, p.train_y, p.spurious), p.val,
                       spuriosity_scores(p.val_x, p.val_y, p.spurious), config, GapConfig(), seed=0, spurious=p.spurious)
    after = stage.results["low_spuriosity"].after
    skew = after["validation_skew"]
    assert skew["threshold"] == config.skewed_validation_share and skew["training_tail"] == 0.1
    assert skew["skewed"] is (val_cue_rate > 0.5) and (skew["low_spuriosity_share"] < config.skewed_validation_share) is skew["skewed"]
    assert after["groupings_tried"] == ["spuriosity", "error"]
    erm = planted_worst_group(p.weight, p.bias, p.test_x, p.test_y, p.test_cues)
    ours = planted_worst_group(*stage.heads["low_spuriosity"], p.test_x, p.test_y, p.test_cues)
    if not skew["skewed"]:
        assert ours > erm + 0.08
    else:
        # 10 of the 600 validation images are mistakes, mostly ambiguous ones: a head balancing them inverts the core
        # feature (the `error` baseline keeps it); the floor on the spuriosity groups refuses it. Ours is not promised
        # to beat ERM here: over twelve seeds of this problem it falls below ERM's test worst group on 4 (two folds)
        # or 5 (five folds) of them (stop 32), but never to the inverted head.
        error_baseline = run_tuning((p.weight, p.bias), p.train, spuriosity_scores(p.train_x, p.train_y, p.spurious), p.val,
                                    spuriosity_scores(p.val_x, p.val_y, p.spurious), dataclasses.replace(config, baselines=["error"]),
                                    GapConfig(), seed=0, spurious=p.spurious)
        inverted = planted_worst_group(*error_baseline.heads["error"], p.test_x, p.test_y, p.test_cues)
        assert inverted < erm - 0.2 and ours > inverted + 0.2
        validation_only, _ = tuned_with(p, "none")
        assert validation_only.results["low_spuriosity"].after["grouping"] != "error"
        # by default the training images' low tail joins the fit, and the mistakes head no longer inverts
        assert after["fitted_on"]["train"] > 0
    # the check can be turned off, and never runs without spurious features or with `groups: spuriosity`
    for off, kwargs in ((dataclasses.replace(config, skewed_validation_share=0.0), {"spurious": p.spurious}),
                        (dataclasses.replace(config, groups="spuriosity"), {"spurious": p.spurious}), (config, {})):
        quiet = run_tuning((p.weight, p.bias), p.train, spuriosity_scores(p.train_x, p.train_y, p.spurious), p.val,
                           spuriosity_scores(p.val_x, p.val_y, p.spurious), off, GapConfig(), seed=0, **kwargs)
        assert "validation_skew" not in quiet.results["low_spuriosity"].after
    # without validation data the training split is halved: it cannot be compared with itself
    train_scores = spuriosity_scores(p.train_x, p.train_y, p.spurious)
    alone = run_tuning((p.weight, p.bias), p.train, train_scores, p.train, train_scores, config, GapConfig(), seed=0,
                       spurious=p.spurious)
    assert "validation_skew" not in alone.results["low_spuriosity"].after


def test_without_spurious_features_low_spuriosity_tuning_is_class_balanced_retraining():
    rng = np.random.default_rng(5)
    train_x, train_y, _ = planted_split(200, 0.95, rng)
    val_x, val_y, _ = planted_split(150, 0.9, rng)
    weight, bias = erm_head(train_x, train_y)
    train, val = cache_for(train_x, train_y, weight, bias), cache_for(val_x, val_y, weight, bias)
    no_scores = np.full(len(val_y), np.nan)
    stage = run_tuning((weight, bias), train, np.full(len(train_y), np.nan), val, no_scores,
                       TuningConfig(baselines=["random"]), GapConfig(), seed=0)
    ours, rand = stage.results["low_spuriosity"], stage.results["random"]
    assert ours.after["groupings_tried"] == ["spuriosity"]  # no spurious verdict: the mistakes are not upweighted
    np.testing.assert_allclose(stage.heads["low_spuriosity"][0], stage.heads["random"][0], atol=1e-6)
    assert ours.after["inverse_l2"] == rand.after["inverse_l2"]
    with pytest.raises(ConfigError, match="tuning.groups"):
        label_free_groupings("low_spuriosity", val_y, no_scores, np.ones(len(val_y), bool), "mistakes")


def test_refit_on_validation_uses_every_image_and_says_so():
    rng = np.random.default_rng(4)
    train_x, train_y, _ = planted_split(200, 0.95, rng)
    val_x, val_y, _ = planted_split(150, 0.5, rng)
    weight, bias = erm_head(train_x, train_y)
    spurious = {0: [1], 1: [2]}
    train, val = cache_for(train_x, train_y, weight, bias), cache_for(val_x, val_y, weight, bias)
    args = (train, spuriosity_scores(train_x, train_y, spurious), val, spuriosity_scores(val_x, val_y, spurious))
    half = run_tuning((weight, bias), *args, TuningConfig(baselines=[], refit_on_validation=False), GapConfig(), seed=0)
    full = run_tuning((weight, bias), *args, TuningConfig(baselines=[]), GapConfig(), seed=0)  # the default refits
    assert half.results["low_spuriosity"].after["refit_on"] == "val, fitting half"
    assert full.results["low_spuriosity"].after["refit_on"].startswith("val, every image")
    assert full.results["low_spuriosity"].after["refit"] and not half.results["low_spuriosity"].after["refit"]
    assert full.results["low_spuriosity"].after["inverse_l2"] == half.results["low_spuriosity"].after["inverse_l2"]
    assert not np.allclose(full.heads["low_spuriosity"][0], half.heads["low_spuriosity"][0])


def test_cross_fit_judges_every_candidate_out_of_fold_on_both_halves():
    from auditor.evaluation import head_predictions
    from auditor.tuning import fit_weighted_logistic, group_balanced_weights

    p = planted_problem(0.5, seed=5, n_val=60)
    config = TuningConfig(baselines=["random"], cross_fit=True, folds=2)
    half = run_tuning((p.weight, p.bias), p.train, p.train_scores, p.val, p.val_scores,
                      dataclasses.replace(config, cross_fit=False), GapConfig(), seed=0, spurious=p.spurious)
    both = run_tuning((p.weight, p.bias), p.train, p.train_scores, p.val, p.val_scores, config, GapConfig(), seed=0,
                      spurious=p.spurious)
    original_accuracy = float((head_predictions(p.val_x, p.weight, p.bias) == p.val_y).mean())
    for method in ("low_spuriosity", "random"):
        judged_half, judged_both = half.results[method], both.results[method]
        assert judged_half.before["n_evaluated"] == 60 and judged_both.before["n_evaluated"] == 120
        assert judged_both.before["evaluated_on"] == "val, both halves, each judged by heads fitted on the other"
        assert judged_both.before["accuracy"] == pytest.approx(original_accuracy)
        assert judged_both.after["worst_group_accuracy"] >= judged_both.before["worst_group_accuracy"]
    # the kept class-balanced head's reported accuracy is that of heads fitted on one half, predicting the other
    after = both.results["random"].after
    assert after["inverse_l2"] is not None and "fitted on one half, on the other" in after["refit_on"]
    fit, held = split_validation(p.val_y, 0.5, np.random.default_rng([0, 1]))
    correct = []
    for fitted, judged in ((fit, held), (held, fit)):
        weights = group_balanced_weights(p.val_y[fitted], p.val_y[fitted])
        w, b = fit_weighted_logistic(p.val_x[fitted], p.val_y[fitted], weights, 2, after["inverse_l2"])
        correct.append(head_predictions(p.val_x[judged], w, b) == p.val_y[judged])
    assert after["accuracy"] == pytest.approx(float(np.concatenate(correct).mean()))


def test_all_groups_add_class_balanced_candidates_judged_like_the_rest():
    p = planted_problem(0.5, seed=5, n_val=60)
    groupings = label_free_groupings("low_spuriosity", p.val_y, p.val_scores, np.asarray(p.val.correct), "all")
    assert list(groupings) == ["spuriosity", "error", "random"]
    assert np.array_equal(groupings["random"], tuning_groups("random", p.val_y, p.val_scores, np.asarray(p.val.correct)))
    stage = run_tuning((p.weight, p.bias), p.train, p.train_scores, p.val, p.val_scores,
                       TuningConfig(baselines=[], groups="all"), GapConfig(), seed=0, spurious=p.spurious)
    after = stage.results["low_spuriosity"].after
    assert after["groupings_tried"] == ["spuriosity", "error", "random"]
    assert after["worst_group_accuracy"] >= stage.results["low_spuriosity"].before["worst_group_accuracy"]


def test_cross_fit_is_validated():
    from auditor.config import load_config

    assert load_config(**{"tuning.cross_fit": True}).tuning.cross_fit is True
    with pytest.raises(ConfigError, match="cross_fit"):
        load_config(**{"tuning.cross_fit": "sometimes"})


def test_reweighting_needs_a_fitting_share():
    from auditor.config import load_config

    with pytest.raises(ConfigError, match="validation_fit_fraction"):
        load_config(**{"tuning.validation_fit_fraction": 0.0})
    assert load_config(**{"tuning.validation_fit_fraction": 0.0, "tuning.mode": "select"}).tuning.mode == "select"


def test_auto_groups_compare_retrained_heads_on_every_grouping_but_never_lose_to_the_original_on_spuriosity():
    from auditor.tuning import _choose_reweighted

    held_y = np.repeat([0, 1], 4)
    groupings = {"spuriosity": 2 * held_y, "error": 2 * held_y + np.tile([0, 0, 1, 1], 2)}  # 2 mistakes per class

    def candidate(predictions, own_worst, own_mean):  # a head judged by its held-out predictions
        return {"correct": np.array(predictions) == held_y, "score": (-own_worst, -own_mean), "grouping": "x",
                "metrics": {"worst_group_accuracy": own_worst}}

    fixes_nothing = candidate([0, 0, 1, 1, 1, 1, 0, 0], 0.8, 0.9)  # wrong on every "mistake" image
    fixes_mistakes = candidate([0, 0, 0, 1, 1, 1, 1, 0], 0.8, 0.85)  # right on half of them
    original = (-0.7, -0.8)
    args = (groupings, np.arange(8), held_y, "worst_group")
    assert _choose_reweighted([fixes_nothing, fixes_mistakes], original, *args) is fixes_mistakes
    worse_than_original = candidate([0, 0, 0, 1, 1, 1, 1, 0], 0.6, 0.85)
    assert _choose_reweighted([fixes_nothing, worse_than_original], original, *args) is fixes_nothing
    assert _choose_reweighted([worse_than_original], original, *args) is None
    one_grouping = ({"spuriosity": groupings["spuriosity"]}, *args[1:])
    assert _choose_reweighted([fixes_nothing, fixes_mistakes], original, *one_grouping) is fixes_nothing
    # validation as skewed as training: the heads fitted on the mistakes come first, judged by the mistakes, even
    # against a head that looks better on the (then uninformative) spuriosity groups; without one, the rule above
    mistakes_head = dict(candidate([0, 0, 0, 1, 1, 1, 1, 0], 0.6, 0.85), grouping="error")
    mistakes_head_worse = dict(candidate([0, 0, 1, 1, 1, 1, 0, 0], 0.8, 0.9), grouping="error")
    preferred = _choose_reweighted([fixes_nothing, mistakes_head_worse, mistakes_head], original, *args, prefer_mistakes=True)
    assert preferred is mistakes_head
    assert _choose_reweighted([fixes_nothing, fixes_mistakes], original, *args, prefer_mistakes=True) is fixes_mistakes


def test_skewed_judge_rules_choose_among_the_mistakes_heads_differently():
    from auditor.tuning import _choose_reweighted

    held_y = np.repeat([0, 1], 4)
    groupings = {"spuriosity": 2 * held_y, "error": 2 * held_y + np.tile([0, 0, 1, 1], 2)}
    args = (groupings, np.arange(8), held_y, "worst_group")

    def mistakes_head(predictions, own_worst):
        return {"correct": np.array(predictions) == held_y, "score": (-own_worst, -0.85), "grouping": "error",
                "metrics": {"worst_group_accuracy": own_worst}}

    right_on_every_mistake = mistakes_head([0, 0, 0, 0, 1, 1, 1, 1], 0.3)  # but poor on the spuriosity groups
    half_the_mistakes = mistakes_head([0, 0, 0, 1, 1, 1, 1, 0], 0.7)
    original = (-0.7, -0.8)
    heads = [right_on_every_mistake, half_the_mistakes]

    def choose(judge):
        return _choose_reweighted(heads, original, *args, prefer_mistakes=True, skewed_judge=judge)

    assert choose("mistakes") is right_on_every_mistake
    assert choose("both") is half_the_mistakes  # min(1.0, 0.3) < min(0.5, 0.7)
    # guarded: the mistakes' favourite loses to the original on the spuriosity groups, so the unskewed rule decides
    assert choose("guarded") is half_the_mistakes
    assert _choose_reweighted([right_on_every_mistake], original, *args, prefer_mistakes=True, skewed_judge="guarded") is None


def test_skewed_judge_is_validated():
    from auditor.config import load_config

    with pytest.raises(ConfigError, match="skewed_judge"):
        load_config(**{"tuning.skewed_judge": "votes"})
    assert load_config(**{"tuning.skewed_judge": "both"}).tuning.skewed_judge == "both"


def test_other_cue_scores_split_a_clean_class_by_the_leaked_cue():
    from auditor.tuning import other_cue_scores, tuning_groups

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 60)
    cue_of_class0 = np.where(labels == 0, rng.random(120) < 0.9, rng.random(120) < 0.3)  # leaks into class 1
    acts = np.stack([3.0 * cue_of_class0 + rng.normal(0, 0.3, 120), rng.normal(0, 1, 120)], 1)
    scores = np.where(labels == 0, acts[:, 0], np.nan)  # class 1 has no spurious feature
    filled = other_cue_scores(acts, labels, scores, {0: [0], 1: []})
    assert np.array_equal(filled[labels == 0], scores[labels == 0])
    groups = tuning_groups("low_spuriosity", labels, filled, np.ones(120, bool))
    clean = labels == 1
    assert np.array_equal(groups[clean] == 3, cue_of_class0[clean])  # the Otsu split finds the leaked cue exactly
    assert np.isnan(other_cue_scores(acts, labels, np.full(120, np.nan), {})).all()  # no spurious feature: nothing


def test_control_groups_is_validated():
    from auditor.config import load_config

    with pytest.raises(ConfigError, match="control_groups"):
        load_config(**{"tuning.control_groups": "everything"})
    assert load_config(**{"tuning.control_groups": "other_cues"}).tuning.control_groups == "other_cues"


def test_control_groups_other_cues_splits_the_clean_class_inside_run_tuning():
    problem = planted_problem(0.5)
    spurious = {0: [1], 1: []}  # the audit found class 1 clean; class 0's cue leaks into half of class 1's images
    val_scores = np.where(problem.val_y == 0, problem.val_x[:, 1], np.nan).astype(float)
    train_scores = np.where(problem.train_y == 0, problem.train_x[:, 1], np.nan).astype(float)

    def n_groups(rule):
        stage = run_tuning((problem.weight, problem.bias), problem.train, train_scores, problem.val, val_scores,
                           TuningConfig(baselines=[], groups="spuriosity", control_groups=rule), GapConfig(), seed=0,
                           spurious=spurious)
        return stage.results["low_spuriosity"].after["n_groups"]

    assert (n_groups("none"), n_groups("other_cues")) == (3, 4)


def test_afr_baseline_upweights_what_the_model_finds_hard_and_needs_reweight_mode():
    from auditor.config import load_config
    from auditor.tuning import afr_weights

    weights = afr_weights(np.array([0.9, 0.1, 0.9, 0.9]), np.array([0, 0, 1, 1]), gamma=4.0)
    assert weights[1] > weights[0] and np.isclose(weights[:2].sum(), weights[2:].sum()) and np.isclose(weights.mean(), 1.0)
    problem = planted_problem(0.5)
    val_scores = np.where(problem.val_y == 0, problem.val_x[:, 1], problem.val_x[:, 2]).astype(float)
    train_scores = np.where(problem.train_y == 0, problem.train_x[:, 1], problem.train_x[:, 2]).astype(float)
    stage = run_tuning((problem.weight, problem.bias), problem.train, train_scores, problem.val, val_scores,
                       TuningConfig(baselines=["afr"]), GapConfig(), seed=0, spurious=problem.spurious)
    erm = planted_worst_group(problem.weight, problem.bias, problem.test_x, problem.test_y, problem.test_cues)
    afr = planted_worst_group(*stage.heads["afr"], problem.test_x, problem.test_y, problem.test_cues)
    assert afr >= erm + 0.3, (erm, afr)
    assert stage.results["afr"].after["afr_gamma"] is not None and stage.results["afr"].after["grouping"] == "afr"
    with pytest.raises(ConfigError, match="afr"):
        load_config(**{"tuning.mode": "select", "tuning.baselines": ["random", "afr"]})


def test_training_rows_pick_each_spurious_class_low_tail_and_are_validated():
    from auditor.config import load_config

    labels = np.array([0, 0, 0, 0, 1, 1, -1])
    scores = np.array([0.0, 0.1, 5.0, 5.2, np.nan, np.nan, 0.0])
    assert training_rows("none", labels, scores).tolist() == []
    assert training_rows("low_spuriosity", labels, scores).tolist() == [0, 1]  # class 1 has no spurious feature
    assert training_rows("when_skewed", labels, scores).tolist() == [0, 1]
    assert training_rows("all", labels, scores).tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ConfigError, match="training_images"):
        training_rows("some", labels, scores)
    with pytest.raises(ConfigError, match="training_images"):
        load_config(**{"tuning.training_images": "some"})
    assert load_config(**{"tuning.training_images": "when_skewed"}).tuning.training_images == "when_skewed"


def test_low_spuriosity_training_images_lift_the_worst_group_when_a_small_validation_split_is_skewed():
    gains = []
    for seed in (0, 1, 2):
        problem = planted_problem(0.95, seed=seed, n_val=60)
        alone, alone_worst = tuned_with(problem, "none")
        joined, joined_worst = tuned_with(problem, "when_skewed", baselines=["error"])
        after = joined.results["low_spuriosity"].after
        assert after["validation_skew"]["skewed"] and after["fitted_on"]["train"] > 0
        assert "train" not in alone.results["low_spuriosity"].after["fitted_on"]
        assert "train" not in joined.results["error"].after["fitted_on"]  # the baselines stay on validation
        gains.append(joined_worst - alone_worst)
    # a handful of cue-free validation images per class cannot balance a head; training's low tail holds ~20 each
    assert min(gains) > 0 and np.mean(gains) > 0.1


def test_when_skewed_leaves_a_balanced_validation_split_alone():
    problem = planted_problem(0.5, seed=0)
    stage, _ = tuned_with(problem, "when_skewed")
    after = stage.results["low_spuriosity"].after
    assert not after["validation_skew"]["skewed"] and "train" not in after["fitted_on"]
    forced, _ = tuned_with(problem, "low_spuriosity")
    fitted = forced.results["low_spuriosity"].after["fitted_on"]
    assert not fitted or fitted["train"] > 0


def test_five_folds_judge_every_validation_image_once_by_a_head_not_fitted_on_it():
    from auditor.evaluation import head_predictions
    from auditor.tuning import fit_weighted_logistic, group_balanced_weights, stratified_folds

    p = planted_problem(0.5, seed=5, n_val=60)
    config = TuningConfig(baselines=["random"], folds=5)
    stage = run_tuning((p.weight, p.bias), p.train, p.train_scores, p.val, p.val_scores, config, GapConfig(), seed=0,
                       spurious=p.spurious)
    for method in ("low_spuriosity", "random"):
        result = stage.results[method]
        assert result.before["n_evaluated"] == 120
        assert result.before["evaluated_on"] == "val, all 5 folds, each judged by heads fitted on the others"
        assert result.after["worst_group_accuracy"] >= result.before["worst_group_accuracy"]
    after = stage.results["random"].after
    assert after["inverse_l2"] is not None and "all but one of 5 folds" in after["refit_on"]
    # the reported accuracy is that of the five fold heads, each predicting its own fold (rows in fold order)
    rows = np.concatenate(split_validation(p.val_y, 0.5, np.random.default_rng([0, 1])))
    dealt = stratified_folds(p.val_y[rows], 5, np.random.default_rng([0, 2]))
    assert all(np.bincount(dealt[p.val_y[rows] == c]).tolist() == [12] * 5 for c in (0, 1))
    correct = []
    for k in range(5):
        fitted, judged = rows[dealt != k], rows[dealt == k]
        w, b = fit_weighted_logistic(p.val_x[fitted], p.val_y[fitted], group_balanced_weights(p.val_y[fitted], p.val_y[fitted]),
                                     2, after["inverse_l2"])
        correct.append(head_predictions(p.val_x[judged], w, b) == p.val_y[judged])
    assert after["accuracy"] == pytest.approx(float(np.concatenate(correct).mean()))
    # two folds are the two halves of cross-fitting, unchanged
    halves = run_tuning((p.weight, p.bias), p.train, p.train_scores, p.val, p.val_scores,
                        TuningConfig(baselines=["random"], folds=2), GapConfig(), seed=0, spurious=p.spurious)
    assert halves.results["random"].before["evaluated_on"] == "val, both halves, each judged by heads fitted on the other"


def test_folds_are_validated():
    from auditor.config import load_config

    assert load_config(**{"tuning.folds": 5}).tuning.folds == 5
    with pytest.raises(ConfigError, match="tuning.folds"):
        load_config(**{"tuning.folds": 1})
    with pytest.raises(ConfigError, match="folds"):
        load_config(**{"tuning.folds": "five"})
