"""Proving ground: audit ERM models on a family of generated worlds and score every verdict against the truth.

For each (world, model, mask source, seed) chosen by the flags, the model is trained by
ERM (or loaded from the cache, ``auditor.demo.worlds.train``), audited with the public
``auditor.audit`` and scored on data the audit never saw. Worlds
(``auditor.demo.worlds.catalog``) cover real-photo texture backgrounds, a co-occurring
real object, colour casts, a corner tag, a thin border, the built-in cues, small and
large objects, weak cues (mixed features) and a world with no cue at all.

Ground truth, per audited (class c, feature f) pair: **truly spurious** when c has a cue
and the AUROC of feature f's activation over c's *validation* images, with vs without c's
own cue (present in 50% of them, independent of the class), is >= 0.75 (one-sided: the
feature fires more with the cue). Features of control classes (no cue) are never truly
spurious. Only the pairs the audit examined (its important features) are scored, so
recall is "of the audited features that the cue drives, the share flagged".

Columns of the table (one row per world x model x mask source, averaged over seeds):

* ``val acc``: the model's validation accuracy (cues independent of class there);
* ``P`` / ``R``: precision and recall of the "spurious" verdicts against that truth
  (n/a when nothing is flagged / nothing is truly spurious), ``TP/flag/true`` the counts;
* ``ctrl``: control classes with at least one spurious verdict / control classes;
* ``AUROC``: per cue class, validation spuriosity ranking vs the class's own cue flag
  (n/a: the class has no spurious feature, so no ranking);
* ERM and every mitigation (tuned heads ``low_spuriosity``, ``random``, ``error``;
  ``neurontune``) and the ``oracle`` (head retrained group-balanced with the true cue
  labels, checkpoint by validation worst-group accuracy): average / worst-group accuracy on
  the test split, groups = class x own cue present (controls: class x any cue present);
* ``s``: audit seconds (training excluded; ``train s``: seconds the cached model took to train, on shared CPUs).

Every verdict's evidence (every numeric field of ``report.verdicts[*]``) with its truth is
written to ``--evidence-json``; a second table calibrates the verdict thresholds
leave-one-world-out (``auditor.demo.worlds.calibration.calibrate_lowo``): each world is
scored with thresholds chosen on the other worlds only.

Usage::

    python benchmarks/bench_proving_ground.py --quick                       # 3 worlds, cnn16, dataset masks
    python benchmarks/bench_proving_ground.py --worlds all --models cnn16 --masks dataset \
        --evidence-json proving_evidence.json
    python benchmarks/bench_proving_ground.py --worlds corner-tag --models cnn16 vit --masks dataset sam
    python benchmarks/bench_proving_ground.py --worlds held-out --seeds 0 1 2   # worlds no default was chosen on
    python benchmarks/bench_proving_ground.py --calibrate-only proving_evidence.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from _common import (
    blended_scores,
    denoised_direction,
    eigen_denoised_weights,
    load_records,
    oracle_dfr,
    sam_mask_dir,
    skewed_val_spec,
)
from auditor.api import audit
from auditor.config import load_config
from auditor.data import ImageSource
from auditor.demo.world.dataset import WorldDataset
from auditor.demo.worlds.calibration import (
    CURRENT_DEFAULT,
    CURRENT_GRID,
    calibrate_lowo,
    current_rule,
    field_rule,
    record_number,
)
from auditor.demo.worlds.catalog import (
    HELD_OUT_WORLDS,
    PROMOTED_WORLDS,
    RISK_WORLDS,
    WORLDS,
    get_world,
)
from auditor.demo.worlds.generator import ProvingSplit, ProvingWorld
from auditor.demo.worlds.train import MODELS, load_or_train, load_split, model_spec
from auditor.features import FeatureCache, extract_features
from auditor.model import ModelAdapter

QUICK_WORLDS = ("corner-tag", "photo-texture", "no-cue")
TRUTH_AUROC = 0.75
METHODS = ("ERM", "low_spuriosity", "random", "error", "afr", "neurontune", "oracle")


def group_ids(split: ProvingSplit, world: ProvingWorld) -> np.ndarray:
    """int64 ``(N,)``: 2 * class + flag; flag = own cue present (controls: any of the world's cues present)."""
    flags = split.own_cue.copy()
    any_cue = split.cues.any(1) if split.cues.shape[1] else np.zeros(len(split), bool)
    for c in world.control_classes:
        members = split.labels == c
        flags[members] = any_cue[members]
    return 2 * split.labels + flags


def accuracies(predictions: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Average and worst-group accuracy."""
    correct = predictions == labels
    return {"accuracy": float(correct.mean()), "worst_group": float(min(correct[groups == g].mean() for g in np.unique(groups)))}


def truth_of(report, val_cache: FeatureCache, val: ProvingSplit, world: ProvingWorld) -> dict[tuple[int, int], float]:
    """(class, feature) -> AUROC of the feature's validation activation, own cue present vs absent (NaN for controls)."""
    acts = np.asarray(val_cache.activations, np.float64)
    labels = np.asarray(val_cache.labels)
    cue_of = world.cue_of_class
    out = {}
    for v in report.verdicts:
        c, f = v.class_index, v.feature
        members = labels == c
        flags = val.own_cue[members]
        if c not in cue_of or flags.all() or not flags.any():
            out[(c, f)] = math.nan
            continue
        out[(c, f)] = float(roc_auc_score(flags, acts[members, f]))
    return out


def sam_settings() -> dict:
    """Mask and concept config for the project's tiny SAM with candidates chosen by the tiny CLIP."""
    from auditor.demo.zoo.tiny_clip import TinyClipSpec, load_or_train_tiny_clip
    from auditor.demo.zoo.tiny_sam import load_or_train_tiny_sam

    clip_name, clip_path = load_or_train_tiny_clip(TinyClipSpec())
    sam_path = load_or_train_tiny_sam()
    return {
        "masks": {"provider": "sam", "sam_model_type": "tiny", "sam_checkpoint": str(sam_path), "points_per_side": 8},
        # the tiny CLIP is trained at 64 px; the proving worlds are 32 px
        "concepts": {"enabled": True, "backend": "open_clip", "model_name": clip_name, "pretrained": str(clip_path),
                     "resize_images": True},
    }


@dataclasses.dataclass(frozen=True)
class _Inputs:
    """What the oracle and the test scoring read from an audit: its model adapter, cached features and config."""

    adapter: ModelAdapter
    train_cache: FeatureCache
    val_cache: FeatureCache
    config: object


def _audit_inputs(report, train, val, work: Path) -> _Inputs:
    """Rebuild the audit's inputs from the report (public data) and the feature cache it left in ``work``."""
    adapter = ModelAdapter(report.model, head=report.meta["head"])
    caches = {name: extract_features(adapter, ImageSource(WorldDataset(split, with_masks=False), name=name),
                                     work / "features" / name, progress=False)
              for name, split in (("train", train), ("val", val))}
    return _Inputs(adapter, caches["train"], caches["val"], report.config)


TUNING_CANDIDATES = {
    "select": {"mode": "select", "selection": "worst_decile"},
    "reweight": {"mode": "reweight", "refit_on_validation": False, "groups": "spuriosity"},
    "reweight+refit": {"mode": "reweight", "refit_on_validation": True, "groups": "spuriosity"},
    "reweight+refit, auto groups": {"mode": "reweight", "refit_on_validation": True, "groups": "auto",
                                    "skewed_validation_share": 0.0},
    "reweight+refit, auto groups, skew check": {"mode": "reweight", "refit_on_validation": True, "groups": "auto",
                                                "skewed_validation_share": 0.5},
}
"""Tuning designs compared (and chosen leave-one-world-out) on the proving ground: the paper-literal rule
(fine-tune on the least spurious images), DFR-style group reweighting of the spuriosity groups without and
with a final refit, the same with heads balancing the model's mistakes as further candidates, and those
preferred when validation looks as skewed as training (``tuning.skewed_validation_share``)."""

SKEW_SHARES = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0)
"""Candidate ``tuning.skewed_validation_share`` values, chosen leave-one-world-out (0: never prefer the mistakes;
1: always, once a spurious feature is found)."""

SKEWED_JUDGES = ("both", "mistakes", "guarded")
"""Candidate ``tuning.skewed_judge`` rules (how the mistakes-balanced heads are judged on a skewed split), compared
leave-one-world-out like the skew share; the shipped "mistakes" sits in the middle, where a three-way tie goes."""

CONTROL_GROUPS = ("other_cues", "none")
"""Candidate ``tuning.control_groups`` rules, compared leave-one-world-out like the skew share (a tie goes to the shipped
"none", the second of two)."""

TRAINING_IMAGES = ("none", "when_skewed", "low_spuriosity", "all")
"""Candidate ``tuning.training_images`` sets (training images added to the fitting half), compared leave-one-world-out
like the skew share."""

LOW_SPURIOSITY_GROUPINGS = ("spuriosity", "auto", "all")
"""Candidate ``tuning.groups`` sets (which label-free groupings low-spuriosity heads balance), compared
leave-one-world-out like the skew share; the shipped "auto" sits in the middle, where a three-way tie goes."""

CROSS_FIT = (False, True)
"""Candidate ``tuning.cross_fit`` settings (candidates judged on the held-out half, or on both halves out of fold),
compared leave-one-world-out like the skew share (a tie goes to the second of two, the shipped on)."""

FOLDS = (5, 2)
"""Candidate ``tuning.folds`` (with ``cross_fit`` on: the two halves, or five class-stratified folds), compared
leave-one-world-out like the skew share (a tie goes to the second of two, the shipped 2)."""

FLOOR_LEVELS = (0.02, 0.05, 0.1, 1.0)
"""Candidate ``tuning.max_accuracy_drop`` values (the floor on the spuriosity groups' mean accuracy that a retrained
head must keep on the held-out half), compared leave-one-world-out (1: no floor)."""

TUNING_KEY_LEVELS = {
    "skewed_validation_share": ("skew share", SKEW_SHARES),
    "max_accuracy_drop": ("floor", FLOOR_LEVELS),
    "skewed_judge": ("skewed judge", SKEWED_JUDGES),
    "control_groups": ("control groups", CONTROL_GROUPS),
    "training_images": ("training images", TRAINING_IMAGES),
    "groups": ("groups", LOW_SPURIOSITY_GROUPINGS),
    "cross_fit": ("cross fit", CROSS_FIT),
    "folds": ("folds", FOLDS),
}
"""``tuning`` keys whose levels :func:`candidate_heads` fits as candidate heads (named ``"<prefix> <level>"``, see
:func:`_candidate_name`) and :func:`print_tuning_key_calibrations` chooses leave-one-world-out."""

MID_CUE_RATE, MID_OTHER_RATE = 0.75, 0.15
"""The intermediate validation split of ``--skewed-val``: each class's own cue at 75%, another class's at 15%."""


def skewed_val(world: ProvingWorld) -> ProvingSplit:
    """A validation split as skewed as training: fresh images drawn at the training cue rates, ``n_val`` per class."""
    return load_split(skewed_val_spec(world), "train")


DIRECTION_SHRINKAGE_LEVELS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
"""Candidate ``ranking.direction_shrinkage`` values scored in every audit (``cue_auroc_by_score``)."""

EIGEN_DENOISED_LEVELS = (0.0, 0.01, 0.1, 1.0)
"""Ridges at which the eigenbasis-filtered direction (:func:`_common.eigen_denoised_weights`, gains of power 1 and 2)
and the blends with the mean score (:func:`_common.blended_scores`) are also scored (those among the levels scored)."""


def score_variants(report, train_acts: np.ndarray, train_labels: np.ndarray, val_acts: np.ndarray,
                   val_labels: np.ndarray, levels: tuple[float, ...] = DIRECTION_SHRINKAGE_LEVELS) -> dict[str, np.ndarray]:
    """Every ``ranking.feature_score`` of the images ``val_acts`` from one audit's recorded results (no cue flag used):
    "mean" and "cue_direction@<shrinkage>" for each of ``levels``, with the cue directions of the report's "ranking"
    section, whitened on the training split, and "cue_direction_denoised@<shrinkage>" where the section has their
    standard errors (:func:`_common.denoised_direction`); at each of :data:`EIGEN_DENOISED_LEVELS` also
    "cue_direction_eig<power>@<shrinkage>" (:func:`_common.eigen_denoised_weights`, power 1 and 2) and the blends
    "mean+<score>" of the mean score with the plain and filtered directions (:func:`_common.blended_scores`). Float64
    ``(N,)`` each; where a class is not ranked by a direction, the mean score. No direction entry when no class has a
    direction."""
    from auditor.labeling import spurious_by_class
    from auditor.ranking import direction_scores, pooled_covariance, projection_scores, spuriosity_scores

    spurious = spurious_by_class(report.verdicts)
    mean = spuriosity_scores(val_acts, val_labels, spurious)
    out = {"mean": mean}
    section = report.sections.get("ranking") or {}
    stored, errors = section.get("cue_directions") or {}, section.get("direction_errors") or {}
    directions = {int(c): np.asarray(d, np.float64) for c, d in stored.items() if spurious.get(int(c))}
    variants = {"cue_direction": directions}
    if errors:
        variants["cue_direction_denoised"] = {c: denoised_direction(d, np.asarray(errors[str(c)], np.float64))
                                              if str(c) in errors else d for c, d in directions.items()}
    if directions:
        covariance = pooled_covariance(train_acts, train_labels)
        plain_by_level = {}
        for name, chosen in variants.items():
            for level in levels:
                scores = direction_scores(val_acts, val_labels, chosen, covariance, level)
                out[f"{name}@{level:g}"] = np.where(np.isfinite(scores), scores, mean)
                if name == "cue_direction":
                    plain_by_level[level] = scores
        standard_errors = {int(c): np.asarray(e, np.float64) for c, e in errors.items()}
        for level in (level for level in EIGEN_DENOISED_LEVELS if level in plain_by_level):
            plain = plain_by_level[level]
            out[f"mean+cue_direction@{level:g}"] = np.where(np.isfinite(plain), blended_scores(mean, plain, val_labels), mean)
            if not errors:
                continue
            for power in (1, 2):
                weights = eigen_denoised_weights(directions, standard_errors, covariance, level, power)
                scores = projection_scores(val_acts, val_labels, weights)
                filtered = np.where(np.isfinite(scores), scores, mean)
                out[f"cue_direction_eig{power}@{level:g}"] = filtered
                out[f"mean+cue_direction_eig{power}@{level:g}"] = np.where(np.isfinite(scores), blended_scores(mean, filtered, val_labels), mean)
    return out


DIRECTION_TUNING_LEVELS = (0.0, 0.01, 0.1, 1.0)
"""``ranking.direction_shrinkage`` levels whose rankings also drive a candidate tuning head (``--tuning-keys
feature_score``: "cue direction <level>", beside "mean score", the head that ``feature_score: mean`` gives)."""


def probe_ceiling(acts: np.ndarray, labels: np.ndarray, flags: np.ndarray, c: int) -> float:
    """Supervised bound on any ranking from these features: 5-fold cross-validated AUROC of a logistic probe
    fitted with the true cue flags on class c's validation images (NaN when a fold would lack a side)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    members = labels == c
    y = flags[members]
    if min(y.sum(), (~y).sum()) < 5:
        return math.nan
    x = np.asarray(acts[members], np.float64)
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    scores = cross_val_predict(LogisticRegression(max_iter=2000), x, y, cv=5, method="decision_function")
    return float(roc_auc_score(y, scores))


def mid_val(world: ProvingWorld) -> ProvingSplit:
    """A validation split between balanced and training-skewed: fresh images, each class's own cue at
    :data:`MID_CUE_RATE` and another class's at :data:`MID_OTHER_RATE`, ``n_val`` per class."""
    classes = tuple(dataclasses.replace(c, cue_rate=MID_CUE_RATE) if c.cue is not None else c for c in world.classes)
    spec = dataclasses.replace(skewed_val_spec(world, seed_offset=4243), classes=classes, cue_rate_other_train=MID_OTHER_RATE)
    return load_split(spec, "train")


def _level_text(level: float | str | bool) -> str:
    if isinstance(level, bool):
        return "on" if level else "off"
    return level if isinstance(level, str) else f"{level:g}"


def _candidate_name(key: str, level: float | str) -> str:
    """The name :func:`candidate_heads` gives the design with ``tuning.<key> = level`` (e.g. "skew share 0.5")."""
    return f"{TUNING_KEY_LEVELS[key][0]} {_level_text(level)}"


def _spurious_of(report, n_classes: int) -> dict[int, list[int]]:
    return {c: [int(f) for f in report.spurious_features(c)] for c in range(n_classes)}


def candidate_heads(report, ctx: _Inputs, seed: int, val_cache: FeatureCache | None = None,
                    val_scores: np.ndarray | None = None,
                    tuning_keys: tuple[str, ...] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The low-spuriosity head of every design in :data:`TUNING_CANDIDATES` and of every level of every key in
    :data:`TUNING_KEY_LEVELS` (named ``"<prefix> <level>"``, e.g. ``skew share 0.5``, ``training images when_skewed``),
    fitted on this audit's caches and rankings, or on ``val_cache`` with its spuriosity ``val_scores`` in place of the
    audit's validation split. ``tuning_keys``: only the levels of these keys (no design of :data:`TUNING_CANDIDATES`)."""
    from auditor.config import GapConfig, TuningConfig
    from auditor.tuning import run_tuning

    head = (ctx.adapter.head_weight().numpy(), ctx.adapter.head_bias().numpy())
    val_cache = ctx.val_cache if val_cache is None else val_cache
    val_scores = report.spuriosity("val") if val_scores is None else val_scores
    spurious = _spurious_of(report, head[0].shape[0])
    designs = {**({} if tuning_keys else TUNING_CANDIDATES),
               **{_candidate_name(key, level): {key: level} for key, (_, levels) in TUNING_KEY_LEVELS.items()
                  for level in levels if not tuning_keys or key in tuning_keys}}
    out, fitted = {}, {}
    for name, overrides in designs.items():
        config = dataclasses.replace(TuningConfig(), baselines=[], **overrides)
        if repr(config) not in fitted:  # e.g. "skew share 0.5" is the shipped "auto groups, skew check" design
            stage = run_tuning(head, ctx.train_cache, report.spuriosity("train"), val_cache, val_scores, config, GapConfig(),
                               seed, spurious=spurious)
            fitted[repr(config)] = stage.heads["low_spuriosity"]
        out[name] = fitted[repr(config)]
    if tuning_keys and "feature_score" in tuning_keys:
        train_acts, train_labels = np.asarray(ctx.train_cache.activations), np.asarray(ctx.train_cache.labels)
        on_train = score_variants(report, train_acts, train_labels, train_acts, train_labels, DIRECTION_TUNING_LEVELS)
        on_val = score_variants(report, train_acts, train_labels, np.asarray(val_cache.activations),
                                np.asarray(val_cache.labels), DIRECTION_TUNING_LEVELS)
        for name, label in [("mean", "mean score"), *((f"cue_direction@{level:g}", f"cue direction {level:g}")
                                                       for level in DIRECTION_TUNING_LEVELS)]:
            if name in on_train:
                stage = run_tuning(head, ctx.train_cache, on_train[name], val_cache, on_val[name],
                                   dataclasses.replace(TuningConfig(), baselines=[]), GapConfig(), seed, spurious=spurious)
                out[label] = stage.heads["low_spuriosity"]
    return out


def mid_row(report, ctx: _Inputs, world: ProvingWorld, seed: int, work: Path, score, erm: tuple,
            tuning_keys: tuple[str, ...] | None = None) -> dict:
    """ERM (the model's head ``erm``), the oracle and every tuning design on the intermediate validation split
    (:func:`mid_val`); the verdicts and spurious features are the balanced audit's, the spuriosity is recomputed
    from them on the new split."""
    from auditor.ranking import spuriosity_scores

    mid = mid_val(world)
    cache = extract_features(ctx.adapter, ImageSource(WorldDataset(mid, with_masks=False), name="mid"), work / "mid", progress=False)
    acts, labels = np.asarray(cache.activations), np.asarray(cache.labels)
    scores = spuriosity_scores(acts, labels, _spurious_of(report, len(world.class_names)))
    oracle = oracle_dfr(acts, labels, group_ids(mid, world), seed=seed)
    return {"methods": score({"ERM": erm, "oracle": oracle}), "candidates": score(candidate_heads(report, ctx, seed, cache, scores, tuning_keys))}


NEURONTUNE_CONFIDENCE_LEVELS = (0.0, 0.5, 0.8, 0.9, 0.95, 0.99)
"""Candidate ``neurontune.min_gain_confidence`` values, chosen leave-one-world-out (0: the unchecked held-out winner)."""


def neurontune_unchecked(report, ctx, seed: int) -> tuple[float | None, tuple[np.ndarray, np.ndarray] | None]:
    """NeuronTune's held-out winner before the confidence check: ``(gain_confidence, head)``; ``(None, None)``
    when the original head itself won on the held-out images (every level then keeps it)."""
    from auditor.config import AuditConfig
    from auditor.neurontune import run_neurontune

    config = AuditConfig()
    nt_config = dataclasses.replace(config.neurontune, enabled=True, min_gain_confidence=0.0)
    head = (ctx.adapter.head_weight().numpy(), ctx.adapter.head_bias().numpy())
    result = run_neurontune(head, ctx.train_cache, ctx.val_cache, "val", ctx.val_cache, "val", None, report.verdicts,
                            nt_config, config.gaps, config.tuning.weight_decay, seed=seed)
    if result.section["fallback"]:
        return None, None
    return result.section["gain_confidence"], (result.weight, result.bias)


def _neurontune_guard_scores(score, erm_scores: dict, report, ctx, seed: int) -> dict:
    """Test scores of the unchecked NeuronTune winner, its held-out gain confidence and ERM's, for the LOWO table."""
    confidence, head = neurontune_unchecked(report, ctx, seed)
    return {"confidence": confidence, "candidate": score({"nt": head})["nt"] if head is not None else erm_scores,
            "erm": erm_scores}


def score_mitigations(report, ctx, model, world: ProvingWorld, train, val, test, masks: str, config, work: Path,
                      seed: int, skewed: bool, tuning_keys: tuple[str, ...] | None = None) -> tuple[dict, dict, dict, dict | None]:
    """Every mitigation's test accuracy and worst group for one audit: (methods, candidate designs, NeuronTune
    guard, the same with a skewed validation split or None); see :func:`run_one`."""
    test_groups = group_ids(test, world)
    val_acts = np.asarray(ctx.val_cache.activations)
    skewed_row = None
    with tempfile.TemporaryDirectory() as tmp:
        source = ImageSource(WorldDataset(test, with_masks=False), name="test")
        cache = extract_features(ctx.adapter, source, Path(tmp) / "test", progress=False)
        acts = np.asarray(cache.activations, np.float64)

        def score(heads: dict) -> dict:
            return {name: accuracies((acts @ np.asarray(w, np.float64).T + b).argmax(1), test.labels, test_groups)
                    for name, (w, b) in heads.items()}

        erm = (ctx.adapter.head_weight().numpy(), ctx.adapter.head_bias().numpy())
        # the bar: DFR on the validation features with the true group labels (benchmarks/_common.py)
        oracle = oracle_dfr(val_acts, np.asarray(ctx.val_cache.labels), group_ids(val, world), seed=seed)
        methods = score({"ERM": erm, **report.tuned_heads, "oracle": oracle})
        candidates = score(candidate_heads(report, ctx, seed, tuning_keys=tuning_keys))
        nt_guard = _neurontune_guard_scores(score, methods["ERM"], report, ctx, seed)
        if skewed:
            skew = skewed_val(world)
            skew_work = work.parent / (work.name + "-skewed")
            skew_report = audit(model, WorldDataset(train, with_masks=masks == "dataset"), WorldDataset(skew, with_masks=False),
                                class_names=world.class_names, config=config.replace(**{"features.cache_dir": str(skew_work)}))
            skew_ctx = _audit_inputs(skew_report, train, skew, skew_work)
            skew_oracle = oracle_dfr(np.asarray(skew_ctx.val_cache.activations), np.asarray(skew_ctx.val_cache.labels),
                                     group_ids(skew, world), seed=seed)
            skewed_row = {"methods": score({"ERM": erm, **skew_report.tuned_heads, "oracle": skew_oracle}),
                          "candidates": score(candidate_heads(skew_report, skew_ctx, seed, tuning_keys=tuning_keys)),
                          "neurontune_guard": _neurontune_guard_scores(score, methods["ERM"], skew_report, skew_ctx, seed)}
            skewed_row["mid"] = mid_row(report, ctx, world, seed, work, score, erm, tuning_keys)
    return methods, candidates, nt_guard, skewed_row


def run_one(world: ProvingWorld, arch: str, masks: str, seed: int, work: Path, quick: bool,
            skewed: bool = False, overrides: dict[str, object] | None = None,
            verdicts_only: bool = False, tuning_keys: tuple[str, ...] | None = None) -> tuple[dict, list[dict]]:
    """Train/load, audit and score one (world, model, mask source, seed); (table row, evidence records).

    With ``skewed``, the world is audited a second time with a validation split as skewed as
    training, and every mitigation is scored again (``row["skewed"]``). ``overrides``: dotted
    audit-config keys set on top of the benchmark's settings (``--set``). ``verdicts_only``: no head tuning and no
    NeuronTune (the verdicts and their evidence are unchanged: the later stages draw on their own generators), and
    no mitigation is scored (the row's ``methods`` and ``candidates`` are empty).
    """
    model, info = load_or_train(world, model_spec(arch, seed))
    train, val, test = (load_split(world, s) for s in ("train", "val", "test"))
    config: dict = {
        "seed": seed,
        "progress": False,
        "features": {"cache_dir": str(work)},
        "neurontune": {"enabled": not verdicts_only},
        "gaps": {"n_bootstrap": 500 if quick else 1000},
    }
    if verdicts_only:
        config["tuning"] = {"enabled": False}
    if arch == "vit":
        config["verdicts"] = {"heatmap": "gradient"}
    if masks == "sam":
        config.update(sam_settings())
        # SAM masks are slow on CPU: keep them (keyed by image content) across runs
        config["masks"]["cache_dir"] = str(sam_mask_dir(world))
    else:
        config["masks"] = {"provider": "dataset"}
    config = load_config(config, **(overrides or {}))
    start = time.perf_counter()
    report = audit(model, WorldDataset(train, with_masks=masks == "dataset"), WorldDataset(val, with_masks=False),
                   class_names=world.class_names, config=config)
    seconds = time.perf_counter() - start
    ctx = _audit_inputs(report, train, val, work)

    truth_auroc = truth_of(report, ctx.val_cache, val, world)
    train_acts, train_labels = np.asarray(ctx.train_cache.activations), np.asarray(ctx.train_cache.labels)
    n_examined = report.config.verdicts.n_images
    records, tp, flagged, positives = [], 0, 0, 0
    for v in report.verdicts:
        class_acts = train_acts[train_labels == v.class_index, v.feature]
        # the feature's spread over its class's training images, to put the verdict's effects on a scale of their own
        spread = {"class_activation_mean": float(class_acts.mean()), "class_activation_std": float(class_acts.std()),
                  "examined_activation_mean": float(np.sort(class_acts)[-n_examined:].mean())}
        auroc = truth_auroc[(v.class_index, v.feature)]
        truth = bool(np.isfinite(auroc) and auroc >= TRUTH_AUROC)
        spurious = v.label == "spurious"
        tp, flagged, positives = tp + (truth and spurious), flagged + spurious, positives + truth
        evidence = {k: (float(x) if isinstance(x, (int, float, np.floating, np.integer)) and not isinstance(x, bool) else x)
                    for k, x in dataclasses.asdict(v).items()
                    if isinstance(x, (bool, int, float, str, np.floating, np.integer)) or x is None}
        records.append({**evidence, "world": world.name, "model": arch, "masks": masks, "seed": seed,
                        "class_name": world.class_names[v.class_index], "cue": world.classes[v.class_index].cue,
                        "control": world.classes[v.class_index].cue is None,
                        **spread, "truth_auroc": auroc, "truth": truth})
    flagged_controls = sum(bool(report.spurious_features(c)) for c in world.control_classes)

    spuriosity = report.spuriosity("val")
    val_acts = np.asarray(ctx.val_cache.activations)
    by_score = score_variants(report, train_acts, train_labels, val_acts, val.labels)
    cue_auroc, ceiling = {}, {}
    cue_auroc_by_score: dict[str, dict[str, float]] = {name: {} for name in by_score}
    for c in world.cue_of_class:
        members = val.labels == c
        name = world.class_names[c]
        for score_name, values in [("shipped", spuriosity), *by_score.items()]:
            values = values[members]
            auroc = float(roc_auc_score(val.own_cue[members], values)) if np.isfinite(values).all() else math.nan
            if score_name == "shipped":
                cue_auroc[name] = auroc
            else:
                cue_auroc_by_score[score_name][name] = auroc
        ceiling[name] = probe_ceiling(val_acts, val.labels, val.own_cue, c)

    methods: dict = {}
    candidates: dict = {}
    nt_guard = skewed_row = None
    if not verdicts_only:
        methods, candidates, nt_guard, skewed_row = score_mitigations(
            report, ctx, model, world, train, val, test, masks, config, work, seed, skewed, tuning_keys)

    row = {
        "world": world.name, "model": arch, "masks": masks, "seed": seed,
        "val_accuracy": info["val_accuracy"], "train_seconds": info.get("trained_seconds", info.get("train_seconds", 0.0)),
        "tp": tp, "flagged": flagged, "positives": positives,
        "precision": tp / flagged if flagged else math.nan,
        "recall": tp / positives if positives else math.nan,
        "controls_flagged": flagged_controls, "n_controls": len(world.control_classes),
        "cue_auroc": cue_auroc, "cue_auroc_by_score": cue_auroc_by_score,
        "direction_reference": (report.sections.get("ranking") or {}).get("direction_reference", "other_classes"),
        "probe_ceiling": ceiling, "methods": methods, "candidates": candidates,
        "neurontune_guard": nt_guard,
        "skewed": skewed_row, "seconds": seconds,
        "mask_provider": report.meta.get("mask_provider"),
    }
    return row, records


def _f(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _mean_std(values: list[float]) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "n/a"
    return f"{np.mean(values):.2f}" + (f"±{np.std(values):.2f}" if len(values) > 1 else "")


def _method_cell(results: list[dict]) -> str:
    """``avg/wg`` means over seeds, with the worst-group spread."""
    if not results:
        return "-"
    return f"{_f(np.mean([v['accuracy'] for v in results]))}/{_mean_std([v['worst_group'] for v in results])}"


def _keys(rows: list[dict]) -> list[tuple]:
    return list(dict.fromkeys((r["world"], r["model"], r["masks"]) for r in rows))


def print_table(rows: list[dict]) -> None:
    """One markdown table, one line per (world, model, masks), numbers averaged over seeds (± std over seeds)."""
    header = ["world", "model", "masks", "seeds", "val acc", "P", "R", "TP/flag/true", "ctrl flagged",
              "spuriosity AUROC (probe ceiling)", *[f"{m} avg/wg" for m in METHODS], "s (train s)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for key in _keys(rows):
        group = [r for r in rows if (r["world"], r["model"], r["masks"]) == key]
        tp, fl, po = (sum(r[k] for r in group) for k in ("tp", "flagged", "positives"))
        ctrl = sum(r["controls_flagged"] for r in group)
        n_ctrl = sum(r["n_controls"] for r in group)
        aurocs = ", ".join(
            f"{name} {_f(np.nanmean([r['cue_auroc'][name] for r in group]) if any(np.isfinite(r['cue_auroc'][name]) for r in group) else math.nan)}"
            + (f" ({_f(np.nanmean([r['probe_ceiling'][name] for r in group]))})" if "probe_ceiling" in group[0] else "")
            for name in group[0]["cue_auroc"]) or "-"
        cells = [*key, str(len(group)), _f(np.mean([r["val_accuracy"] for r in group])),
                 _f(tp / fl if fl else math.nan), _f(tp / po if po else math.nan), f"{tp}/{fl}/{po}", f"{ctrl}/{n_ctrl}", aurocs]
        cells += [_method_cell([r["methods"][m] for r in group if m in r["methods"]]) for m in METHODS]
        cells.append(f"{np.mean([r['seconds'] for r in group]):.0f} ({np.mean([r['train_seconds'] for r in group]):.0f})")
        print("| " + " | ".join(cells) + " |")


def print_skewed_table(rows: list[dict]) -> None:
    """Every mitigation again, with the world audited on a validation split as skewed as training."""
    rows = [r for r in rows if r.get("skewed")]
    if not rows:
        return
    print("\nValidation as skewed as training (test avg/wg, mean over seeds ± worst-group std):\n")
    header = ["world", "model", "masks", "seeds", *[f"{m} avg/wg" for m in METHODS]]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for key in _keys(rows):
        group = [r for r in rows if (r["world"], r["model"], r["masks"]) == key]
        cells = [*key, str(len(group))]
        cells += [_method_cell([r["skewed"]["methods"][m] for r in group if m in r["skewed"]["methods"]]) for m in METHODS]
        print("| " + " | ".join(cells) + " |")


CLASS_ONLY = "reweight+refit, class groups only"
"""The default design without spuriosity: the audit's own "random" head (plain class-balanced retraining)."""


def _part(row: dict, which: str) -> dict:
    """The part of a row scored with one validation split: "balanced" (the row), "skewed" or "mid" (75% cue)."""
    if which == "balanced":
        return row
    skewed = row.get("skewed") or {}
    return skewed if which == "skewed" else skewed.get("mid") or {}


def _wg(rows: list[dict], candidate: str, which: str) -> list[float]:
    """Test worst-group accuracies of one tuning design over rows (``which``: "balanced", "skewed" or "mid")."""
    key, source = ("candidates", candidate) if candidate != CLASS_ONLY else ("methods", "random")
    parts = [_part(r, which).get(key) for r in rows]
    return [p[source]["worst_group"] for p in parts if p and source in p]


def print_tuning_calibration(rows: list[dict]) -> dict[str, str]:
    """Leave-one-world-out choice of the tuning design; returns world -> design chosen without it.

    For each world, the design with the best mean test worst-group accuracy over the *other*
    worlds (balanced and skewed validation, every seed and model) is chosen, and the world is
    scored with it.
    """
    rows = [r for r in rows if r.get("candidates")]
    worlds = list(dict.fromkeys(r["world"] for r in rows))
    if len(worlds) < 2:
        return {}
    names = [n for n in TUNING_CANDIDATES if any(n in r["candidates"] for r in rows)] + [CLASS_ONLY]
    if len(names) < 2:  # a --tuning-keys run fits no design
        return {}
    print("\nLeave-one-world-out choice of the tuning design (test worst-group accuracy of the low-spuriosity head, "
          "mean over seeds; balanced / skewed validation):\n")
    print("| world | chosen on other worlds | held-out wg balanced | held-out wg skewed | "
          + " | ".join(f"{n} (bal / skew)" for n in names) + " |")
    print("|" + "---|" * (4 + len(names)))
    chosen = {}
    for world in worlds:
        others = [r for r in rows if r["world"] != world]
        mine = [r for r in rows if r["world"] == world]
        score = {n: np.mean(_wg(others, n, "balanced") + _wg(others, n, "skewed")) for n in names}
        pick = max(names, key=lambda n: score[n])
        chosen[world] = pick
        cells = [world, pick, _mean_std(_wg(mine, pick, "balanced")), _mean_std(_wg(mine, pick, "skewed"))]
        cells += [f"{_mean_std(_wg(mine, n, 'balanced'))} / {_mean_std(_wg(mine, n, 'skewed'))}" for n in names]
        print("| " + " | ".join(cells) + " |")
    overall = {n: (np.mean(_wg(rows, n, "balanced") or [math.nan]), np.mean(_wg(rows, n, "skewed") or [math.nan])) for n in names}
    print("| **all worlds** | - | - | - | " + " | ".join(f"{_f(b)} / {_f(k)}" for b, k in overall.values()) + " |")
    return chosen


def print_tuning_key_calibrations(rows: list[dict]) -> dict[str, dict]:
    """Leave-one-world-out choice of every key of :data:`TUNING_KEY_LEVELS`; returns key -> world -> level chosen
    without that world.

    Each cue world is scored with the level whose mean test worst-group accuracy over the other cue
    worlds is highest, averaged over balanced, intermediate (:data:`MID_CUE_RATE`) and training-skewed
    validation; ties go to the middle of the tied levels. The cue-free world is listed, not used:
    without a spurious verdict the skew check never runs.
    """
    fitted = {name for r in rows for name in (r.get("candidates") or {})}
    return {key: _print_level_calibration(rows, f"`tuning.{key}`", levels, lambda level, key=key: _candidate_name(key, level))
            for key, (_, levels) in TUNING_KEY_LEVELS.items() if all(_candidate_name(key, lv) in fitted for lv in levels)}


def _print_level_calibration(rows: list[dict], title: str, levels: tuple, name) -> dict:
    """The table and choice of :func:`print_tuning_key_calibrations` for one tuning key's ``levels``."""
    rows = [r for r in rows if (r.get("skewed") or {}).get("mid")]
    worlds = [w for w in dict.fromkeys(r["world"] for r in rows) if get_world(w).cue_of_class]
    if len(worlds) < 2:
        return {}

    def mean_wg(level, among: list[str]) -> float:
        picked = [r for r in rows if r["world"] in among]
        return float(np.mean([np.mean(_wg(picked, name(level), part)) for part in ("balanced", "mid", "skewed")]))

    print(f"\nLeave-one-world-out choice of {title} (test worst-group accuracy of the low-spuriosity "
          "head, mean over seeds; balanced / 75% cue / skewed validation):\n")
    print("| world | chosen on other worlds | " + " | ".join(_level_text(lv) for lv in levels) + " |")
    print("|" + "---|" * (2 + len(levels)))
    chosen = {}
    for world in dict.fromkeys(r["world"] for r in rows):
        others = [w for w in worlds if w != world]
        scores = {lv: round(mean_wg(lv, others), 6) for lv in levels}
        tied = [lv for lv in levels if scores[lv] == max(scores.values())]
        pick = tied[len(tied) // 2]
        chosen[world] = pick
        mine = [r for r in rows if r["world"] == world]
        cells = [world, _level_text(pick)] + [" / ".join(_f(np.mean(_wg(mine, name(lv), part)), 3)
                                                   for part in ("balanced", "mid", "skewed")) for lv in levels]
        print("| " + " | ".join(cells) + " |")
    held = {part: [np.mean(_wg([r for r in rows if r["world"] == w], name(chosen[w]), part)) for w in worlds]
            for part in ("balanced", "mid", "skewed")}
    means = [" / ".join(_f(np.mean(_wg([r for r in rows if r["world"] in worlds], name(lv), part)), 3)
                        for part in ("balanced", "mid", "skewed")) for lv in levels]
    print("| **cue worlds, mean** | held out: " + " / ".join(_f(float(np.mean(v)), 3) for v in held.values()) + " | "
          + " | ".join(means) + " |")
    return chosen


def print_neurontune_calibration(rows: list[dict]) -> dict[str, float]:
    """Leave-one-world-out choice of ``neurontune.min_gain_confidence``; returns world -> level chosen without it.

    A level keeps NeuronTune's held-out winner when its gain confidence reaches the level, else
    ERM's head. Each world is scored with the level whose *worst* per-world mean test
    worst-group gain over ERM (balanced and skewed validation) is highest on the other worlds,
    ties broken by the mean gain: the bar is "never below ERM on any world".
    """
    rows = [r for r in rows if r.get("neurontune_guard")]
    worlds = list(dict.fromkeys(r["world"] for r in rows))
    if len(worlds) < 2:
        return {}

    def gain(guard: dict, level: float) -> float:
        kept = guard["confidence"] is not None and guard["confidence"] >= level
        return (guard["candidate"]["worst_group"] - guard["erm"]["worst_group"]) if kept else 0.0

    def world_gain(world: str, level: float, part: str) -> float:
        guards = [r["neurontune_guard"] if part == "balanced" else (r.get("skewed") or {}).get("neurontune_guard")
                  for r in rows if r["world"] == world]
        guards = [g for g in guards if g]
        return float(np.mean([gain(g, level) for g in guards])) if guards else math.nan

    def criterion(level: float, among: list[str]) -> tuple[float, float]:
        gains = [world_gain(w, level, part) for w in among for part in ("balanced", "skewed")]
        gains = [g for g in gains if math.isfinite(g)]
        return (min(gains), float(np.mean(gains))) if gains else (-math.inf, -math.inf)

    levels = NEURONTUNE_CONFIDENCE_LEVELS
    print("\nLeave-one-world-out choice of `neurontune.min_gain_confidence` (test worst-group gain of NeuronTune over "
          "ERM, mean over seeds; balanced / skewed validation):\n")
    print("| world | chosen on other worlds | " + " | ".join(f"{lv:g} (bal / skew)" for lv in levels) + " |")
    print("|" + "---|" * (2 + len(levels)))
    chosen = {}
    for world in worlds:
        pick = max(levels, key=lambda lv: criterion(lv, [w for w in worlds if w != world]))
        chosen[world] = pick
        cells = [world, f"{pick:g}"] + [f"{world_gain(world, lv, 'balanced'):+.3f} / {world_gain(world, lv, 'skewed'):+.3f}"
                                        for lv in levels]
        print("| " + " | ".join(cells) + " |")
    worst = [f"{criterion(lv, worlds)[0]:+.3f}" for lv in levels]
    print("| **worst world** | - | " + " | ".join(worst) + " |")
    return chosen


def print_repair_bar(rows: list[dict]) -> None:
    """The issue's repair bar per cue world: low-spuriosity tuning vs ERM and vs the oracle, balanced and skewed."""
    print("\nRepair bar (library defaults; test, means over seeds): worst-group gain over ERM (>= +0.08), "
          "average-accuracy change (>= -0.02), distance to the oracle's worst group (<= 0.03):\n")
    print("| world | model | masks | gain bal | avg change bal | below oracle bal | gain skew | avg change skew | below oracle skew |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key in _keys(rows):
        group = [r for r in rows if (r["world"], r["model"], r["masks"]) == key]
        if not any(r["positives"] or r["cue_auroc"] for r in group) or key[0] == "no-cue":
            continue
        cells = list(key)
        for part in ("balanced", "skewed"):
            methods = [r["methods"] if part == "balanced" else (r.get("skewed") or {}).get("methods") for r in group]
            methods = [m for m in methods if m and "low_spuriosity" in m]
            if not methods:
                cells += ["-", "-", "-"]
                continue
            mean = {(name, field): float(np.mean([m[name][field] for m in methods]))
                    for name in ("ERM", "low_spuriosity", "oracle") for field in ("worst_group", "accuracy")}
            cells += [f"{mean['low_spuriosity', 'worst_group'] - mean['ERM', 'worst_group']:+.2f}",
                      f"{mean['low_spuriosity', 'accuracy'] - mean['ERM', 'accuracy']:+.2f}",
                      f"{mean['oracle', 'worst_group'] - mean['low_spuriosity', 'worst_group']:+.2f}"]
        print("| " + " | ".join(cells) + " |")


RULES = {
    "current (density_threshold, min_activation_drop)": (current_rule, CURRENT_GRID, CURRENT_DEFAULT),
    "density_ratio < t": (field_rule("density_ratio", "<"), [{"t": t} for t in (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)], {"t": 1.0}),
    "background_drop - object_drop > t": (
        lambda r, p: float(r.get("background_drop", math.nan)) - float(r.get("object_drop", math.nan)) > p["t"],
        [{"t": t} for t in (-0.5, -0.4, -0.3, -0.2, -0.1, 0.0, 0.05, 0.1, 0.2, 0.4)], {"t": 0.0}),
}


def swap_rule(record: dict, params: dict) -> bool:
    """The shipped verdict rule (``auditor.labeling.decide_verdict``) replayed on recorded evidence with other settings."""
    from auditor.config import VerdictConfig
    from auditor.labeling import decide_verdict, population_auroc

    if not math.isfinite(float(record.get("background_reliance", math.nan) or math.nan)):
        return bool(record.get("label") == "spurious")  # no swap was possible: the legacy rule decided
    config = VerdictConfig(reliance_threshold=params["reliance"], swap_threshold=params["swap"],
                           swap_reference=params.get("reference", "donors"),
                           class_swap_statistic=params.get("statistic", VerdictConfig().class_swap_statistic),
                           swap_margin=params.get("margin", VerdictConfig().swap_margin),
                           swap_min_background_drop=params.get("drop", VerdictConfig().swap_min_background_drop),
                           swap_background_check=params.get("check", VerdictConfig().swap_background_check),
                           separation_threshold=params.get("separation", VerdictConfig().separation_threshold),
                           heat_fallback=params.get("fallback", VerdictConfig().heat_fallback),
                           population_threshold=params.get("population", VerdictConfig().population_threshold),
                           population_flag_threshold=params.get("population_flag",
                                                                VerdictConfig().population_flag_threshold),
                           population_reference=params.get("population_reference", VerdictConfig().population_reference))
    value = lambda key: record_number(record, key)
    density = value("density_ratio")
    swap = (value("swap_reliance"), value("swap_ci_low"), value("swap_ci_high"))
    prefix = "class_median_swap" if config.class_swap_statistic == "median" else "class_swap"
    if prefix == "class_median_swap" and "class_median_swap_reliance" not in record:
        raise ValueError("this evidence was recorded before class_median_swap_reliance existed; audit it again")
    if config.swap_reference == "classes" and math.isfinite(value(f"{prefix}_reliance")):
        swap = (value(f"{prefix}_reliance"), value(f"{prefix}_ci_low"), value(f"{prefix}_ci_high"))
    spurious, *_ = decide_verdict(
        config, (value("background_reliance"), value("reliance_ci_low"), value("reliance_ci_high")), swap,
        value("object_reliance"), value("object_ci_high"), bool(density < config.density_threshold), density,
        value("object_drop"), value("background_drop"), separation=value("swap_auroc"),
        population=population_auroc(config, value("population_swap_auroc"), value("population_clean_swap_auroc")))
    return bool(spurious)


def _shipped_verdict_defaults(shipped=None) -> dict:
    """The replayable verdict settings of ``shipped`` (a ``VerdictConfig``; the library's defaults if None)."""
    from auditor.config import VerdictConfig

    shipped = shipped or VerdictConfig()
    return {"reliance": shipped.reliance_threshold, "swap": shipped.swap_threshold, "reference": shipped.swap_reference,
            "statistic": shipped.class_swap_statistic,
            "margin": shipped.swap_margin, "drop": shipped.swap_min_background_drop,
            "check": shipped.swap_background_check, "separation": shipped.separation_threshold,
            "fallback": shipped.heat_fallback, "population": shipped.population_threshold,
            "population_flag": shipped.population_flag_threshold, "population_reference": shipped.population_reference}


def shipped_default(records: list[dict]) -> dict:
    """The shipped verdict settings for ``records``: with estimated masks only (SAM), their own swap threshold, heat
    fallback and population checks."""
    if all(r.get("masks") == "sam" for r in records):
        from auditor.config import VerdictConfig

        return _shipped_verdict_defaults(VerdictConfig().for_estimated_masks())
    return dict(SWAP_DEFAULT)


SWAP_GRID = [{"reliance": r, "swap": w, "reference": ref, "margin": m} for ref in ("donors", "classes")
             for r in (0.05, 0.1, 0.15, 0.2, 0.3) for w in (0.1, 0.125, 0.15, 0.2, 0.3) for m in (0.0, 0.05, 0.1)]
SWAP_DEFAULT = _shipped_verdict_defaults()


def threshold_grid(default: dict) -> list[dict]:
    """:data:`SWAP_GRID` with the neutral-drop gate, the background check, the separation path, the class swap
    statistic, the heat fallback and the population checks at ``default``'s values."""
    return [{**p, "drop": default["drop"], "check": default["check"], "separation": default["separation"],
             "statistic": default["statistic"], "fallback": default["fallback"], "population": default["population"],
             "population_flag": default["population_flag"], "population_reference": default["population_reference"]}
            for p in SWAP_GRID]
SWAP_DROP_LEVELS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25)
"""Candidate ``verdicts.swap_min_background_drop`` values, calibrated with the other thresholds at their shipped values."""
SWAP_BACKGROUND_CHECKS = ("point", "interval")
"""Candidate ``verdicts.swap_background_check`` values ("point", the rule before stop 18, first: ties keep it)."""


def print_calibration(records: list[dict]) -> dict:
    """Per rule, leave-one-world-out thresholds and each world's held-out precision/recall; returns the results."""
    out = {}
    if len({r["world"] for r in records}) < 2:
        print("\n(leave-one-world-out calibration needs records from at least two worlds)")
        return out
    extra = sorted({k for r in records for k, v in r.items() if k in ("background_reliance",) and isinstance(v, float)})
    rules = dict(RULES)
    if extra:
        default = shipped_default(records)
        rules["shipped (reliance_threshold, swap_threshold, swap_reference, swap_margin)"] = (
            swap_rule, threshold_grid(default), default)
        rules["swap_min_background_drop, the rest shipped"] = (
            swap_rule, [{**default, "drop": level} for level in SWAP_DROP_LEVELS], default)
        rules["swap_background_check, the rest shipped"] = (
            swap_rule, [{**default, "check": check} for check in SWAP_BACKGROUND_CHECKS], default)
        for reference in ("donors", "classes"):
            grid = [p for p in SWAP_GRID if p["reference"] == reference]
            rules[f"shipped rule, swap_reference {reference} only"] = (swap_rule, grid, {**default, "reference": reference})
    for field in extra:
        rules[f"{field} > t"] = (field_rule(field, ">"), [{"t": t} for t in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)], None)
    for name, (rule, grid, default) in rules.items():
        out[name] = calibrate_lowo(records, rule, grid, default)
        _print_lowo(name, out[name])
    return out


def _print_lowo(name: str, result: dict) -> None:
    """One leave-one-world-out table: each world's setting chosen on the others, its held-out and default scores."""
    print(f"\nLeave-one-world-out calibration of `{name}` (held-out world scored with thresholds chosen on the others):\n")
    print("| world | chosen on other worlds | held-out P | held-out R | held-out TP+FP / true | default P | default R |")
    print("|---|---|---|---|---|---|---|")
    for world, r in result.items():
        held, dflt = r["held_out"], r.get("default", {})
        params = ", ".join((f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}") for k, v in r["params"].items())
        print(f"| {world} | {params} | {_f(held['precision'])} | {_f(held['recall'])} | {held['flagged']} / {held['positives']} "
              f"| {_f(dflt.get('precision', math.nan))} | {_f(dflt.get('recall', math.nan))} |")
    pooled = {}
    for which in ("held_out", "default"):
        parts = [r[which] for r in result.values() if which in r]
        flagged = sum(p["flagged"] for p in parts)
        tp = flagged - sum(p["false_positives"] for p in parts)
        positives = sum(p["positives"] for p in parts)
        pooled[which] = (tp / flagged if flagged else math.nan, tp / positives if positives else math.nan, flagged, positives)
    held, dflt = pooled["held_out"], pooled["default"]
    print(f"| **all worlds (pooled)** | - | {_f(held[0])} | {_f(held[1])} | {held[2]} / {held[3]} | {_f(dflt[0])} | {_f(dflt[1])} |")


PAIR_KEY = ("world", "model", "masks", "seed", "class_index", "feature")


def calibrate_selection(evidence: dict[str, list[dict]]) -> dict:
    """Leave-one-world-out choice of ``verdicts.image_selection``, with the swap thresholds chosen jointly.

    A selection changes the evidence itself, so each candidate has its own evidence files (audits of the same
    cached models with ``--set verdicts.image_selection=...``). Only the (world, model, masks, seed, class,
    feature) pairs present for every candidate are scored; the truth does not depend on the selection.

    Args:
        evidence: candidate selection -> its evidence records.

    Returns:
        rule name -> :func:`calibrate_lowo`'s result (each printed as a table).
    """
    keyed = {name: {tuple(r[k] for k in PAIR_KEY): r for r in records} for name, records in evidence.items()}
    shared = set.intersection(*(set(k) for k in keyed.values()))
    first = next(iter(evidence))
    merged = [{"world": keyed[first][key]["world"], "truth": keyed[first][key]["truth"],
               "by_selection": {name: keyed[name][key] for name in evidence}} for key in sorted(shared, key=str)]
    for name in evidence:
        dropped = len(keyed[name]) - len(shared)
        if dropped:
            print(f"({name}: {dropped} pairs without evidence for every selection are left out)")
    default = shipped_default([r["by_selection"][first] for r in merged])
    shipped_selection = _shipped_selection()

    def rule(record: dict, params: dict) -> bool:
        return swap_rule(record["by_selection"][params["selection"]], params)

    ordered = [shipped_selection] + [name for name in evidence if name != shipped_selection]
    rules = {
        "image_selection, the rest shipped": [{**default, "selection": name} for name in ordered],
        "image_selection with reliance and swap thresholds": [
            {**default, "selection": name, "reliance": r, "swap": w}
            for name in ordered for r in (0.1, 0.15, 0.2, 0.3, 0.4) for w in (0.1, 0.125, 0.15, 0.2, 0.3)],
    }
    out = {}
    for name, grid in rules.items():
        out[name] = calibrate_lowo(merged, rule, grid, {**default, "selection": shipped_selection})
        _print_lowo(name, out[name])
    return out


def _shipped_selection() -> str:
    from auditor.config import VerdictConfig

    return VerdictConfig().image_selection


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", nargs="+", default=None,
                        help=f"world names, 'all' (the calibration worlds: {', '.join(WORLDS)}), 'promoted' (held out at "
                             f"first, calibration evidence since: {', '.join(PROMOTED_WORLDS)}), 'risk' (built to expose one risk "
                             f"of a candidate change: {', '.join(RISK_WORLDS)}) or 'held-out' (never used to "
                             f"choose a default: {', '.join(HELD_OUT_WORLDS)})")
    parser.add_argument("--models", nargs="+", default=["cnn16"], choices=MODELS)
    parser.add_argument("--masks", nargs="+", default=["dataset"], choices=("dataset", "sam"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--quick", action="store_true", help=f"worlds {', '.join(QUICK_WORLDS)} unless --worlds is given")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skewed-val", action="store_true",
                        help="also audit each world with a validation split as skewed as training and score every mitigation again")
    parser.add_argument("--verdicts-only", action="store_true",
                        help="audit the verdicts only: no head tuning, NeuronTune or mitigation scoring (the evidence is "
                             "the same; about a third of the time)")
    parser.add_argument("--evidence-json", default=None, help="write per-(class, feature) evidence and truth here")
    parser.add_argument("--rows-json", default=None, help="write the table's rows here")
    parser.add_argument("--calibrate-only", nargs="+", default=None, help="skip auditing; calibrate on these evidence JSONs (merged)")
    parser.add_argument("--calibrate-selection", nargs="+", default=None, metavar="SELECTION=FILE[,FILE...]",
                        help="skip auditing; choose verdicts.image_selection leave-one-world-out on each selection's evidence")
    parser.add_argument("--table-only", nargs="+", default=None, help="skip auditing; print the table of these --rows-json files")
    parser.add_argument("--tuning-keys", nargs="+", default=None, choices=[*TUNING_KEY_LEVELS, "feature_score"],
                        help="fit the candidate heads of these tuning keys' levels only (no tuning design), for a faster "
                             "run; their leave-one-world-out tables are printed as usual")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="audit-config overrides for an experiment, e.g. features.top_k=10 (values parsed as YAML)")
    args = parser.parse_args(argv)
    import yaml

    if args.verdicts_only and args.skewed_val:
        parser.error("--skewed-val scores the mitigations again, which --verdicts-only skips; give one of them")
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(value)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    if args.table_only:
        rows = [r for path in args.table_only for r in json.loads(Path(path).read_text())]
        print_table(rows)
        print_skewed_table(rows)
        print_repair_bar(rows)
        print_tuning_calibration(rows)
        print_tuning_key_calibrations(rows)
        print_neurontune_calibration(rows)
        return
    if args.calibrate_selection:
        evidence = {}
        for item in args.calibrate_selection:
            name, sep, files = item.partition("=")
            if not sep:
                parser.error(f"--calibrate-selection expects SELECTION=FILE[,FILE...], got {item!r}")
            evidence[name] = load_records(files.split(","))
        calibrate_selection(evidence)
        return
    if args.calibrate_only:
        print_calibration(load_records(args.calibrate_only))
        return
    if args.worlds in (None, ["all"]):
        names = list(QUICK_WORLDS) if args.quick and args.worlds is None else list(WORLDS)
    elif args.worlds == ["held-out"]:
        names = list(HELD_OUT_WORLDS)
    elif args.worlds == ["promoted"]:
        names = list(PROMOTED_WORLDS)
    elif args.worlds == ["risk"]:
        names = list(RISK_WORLDS)
    else:
        names = args.worlds
    rows, records = [], []
    with tempfile.TemporaryDirectory(prefix="proving-") as tmp:
        for name in names:
            world = get_world(name)
            for arch in args.models:
                for masks in args.masks:
                    for seed in args.seeds:
                        row, recs = run_one(world, arch, masks, seed, Path(tmp) / f"{name}-{arch}-{masks}-{seed}",
                                            args.quick, skewed=args.skewed_val, overrides=overrides,
                                            verdicts_only=args.verdicts_only,
                                            tuning_keys=tuple(args.tuning_keys) if args.tuning_keys else None)
                        rows.append(row)
                        records.extend(recs)
                        logging.getLogger("proving").warning(
                            "%s/%s/%s/seed %d: P %s R %s, %.0f s", name, arch, masks, seed, _f(row["precision"]),
                            _f(row["recall"]), row["seconds"])
                        if args.evidence_json:
                            Path(args.evidence_json).write_text(json.dumps({"truth_auroc": TRUTH_AUROC, "records": records}, indent=1))
                        if args.rows_json:
                            Path(args.rows_json).write_text(json.dumps(rows, indent=1))
    print(f"worlds: {', '.join(names)}; models: {', '.join(args.models)}; masks: {', '.join(args.masks)}; "
          f"seeds: {', '.join(map(str, args.seeds))}; truth: feature AUROC (own cue vs not, val) >= {TRUTH_AUROC}"
          + (f"; overrides: {overrides}" if overrides else "") + "\n")
    print_table(rows)
    if not args.verdicts_only:
        print_skewed_table(rows)
        print_repair_bar(rows)
        print_tuning_calibration(rows)
        print_tuning_key_calibrations(rows)
        print_neurontune_calibration(rows)
    print_calibration(records)


if __name__ == "__main__":
    main()
