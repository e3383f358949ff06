"""The concept stage on the tiny CLIP, with a model whose errors are known by construction."""

import numpy as np
import pytest

from auditor.concepts.stage import ConceptFindings, rank_correlations, run_concepts
from auditor.config import RankingConfig, load_config
from auditor.data import ImageSource
from auditor.demo.world.dataset import WorldDataset
from auditor.demo.world.train import load_split
from auditor.features import FeatureCache
from auditor.ranking import run_ranking

STRIPES = {"striped background", "stripes", "a striped pattern"}
WARM = {"warm orange light", "warm light", "orange colour"}


def _cache(split, seed):
    """circle is right only with stripes, triangle only with warm light; other classes always right.

    Feature 0 tracks stripes, feature 1 warm light, features 2-3 are noise.
    """
    rng = np.random.default_rng(seed)
    labels = split.labels
    stripes, warm = split.cue_flag("stripes"), split.cue_flag("warm")
    predictions = labels.copy()
    predictions[(labels == 0) & ~stripes] = 1
    predictions[(labels == 2) & ~warm] = 3
    logits = np.eye(5)[predictions]
    activations = np.stack([stripes + 0.3 * rng.normal(size=len(labels)), warm + 0.3 * rng.normal(size=len(labels)),
                            rng.normal(size=len(labels)), rng.normal(size=len(labels))], 1)
    return FeatureCache.from_arrays(activations, logits, labels)


def _run(world, encoder, work_dir, **config):
    """run_concepts on the world. Training split: cues tied to their classes (95%); validation: independent (50%)."""
    spec, val = world
    train = load_split(spec, "train")
    cfg = load_config({"progress": False, "gaps": {"n_bootstrap": 200}, "concepts": {"enabled": True}, **config})
    sources = {n: ImageSource(WorldDataset(s, with_masks=False), batch_size=64, name=n) for s, n in [(train, "train"), (val, "val")]}
    caches = {"train": _cache(train, 0), "val": _cache(val, 1)}
    important = {0: [0, 2], 1: [3], 2: [1], 3: [2], 4: [3]}
    findings = run_concepts(encoder, sources, caches, important, list(val.class_names), cfg.concepts, cfg.gaps,
                            "val", work_dir / "clip", np.random.default_rng(0))
    return findings, caches, cfg


def test_keeps_the_cue_concepts_and_leaves_clean_classes_clean(world32, clip_encoder, tmp_path):
    _, split = world32
    findings, _, _ = _run(world32, clip_encoder, tmp_path)
    assert isinstance(findings, ConceptFindings)
    classes = findings.section["classes"]
    assert len(classes["circle"]["spurious"]) == 1 and classes["circle"]["spurious"][0] in STRIPES
    assert len(classes["triangle"]["spurious"]) == 1 and classes["triangle"]["spurious"][0] in WARM
    # the other stripe prompts point the same way and are folded into the kept one
    assert set(classes["circle"]["same_direction"]) & STRIPES
    for clean in ("square", "plus", "ring"):
        assert classes[clean]["spurious"] == []
        assert len(classes[clean]["harmless"]) == findings.section["n_concepts"]
    row = classes["circle"]["checked"][0]
    assert row["kept"] and row["ci_low"] > 0 and row["gap"] >= row["ci_low"]
    # feature names follow the feature's activation
    assert findings.feature_names[(0, 0)][0] in STRIPES
    assert set(findings.feature_names[(2, 1)][:2]) & WARM
    # concept spuriosity: NaN for classes without kept concepts, ranks cue images first otherwise
    scores = findings.scores["val"]
    assert np.isnan(scores[split.labels == 3]).all() and np.isfinite(scores[split.labels == 0]).all()
    circle = split.labels == 0
    assert scores[circle & split.cue_flag("stripes")].mean() > scores[circle & ~split.cue_flag("stripes")].mean()


def test_embeddings_are_cached_and_concept_scores_rank(world32, clip_encoder, tmp_path, monkeypatch):
    _run(world32, clip_encoder, tmp_path)
    assert list((tmp_path / "clip").glob("train-*.npy"))

    def fail(*_):
        raise AssertionError("image embeddings were recomputed")

    monkeypatch.setattr(clip_encoder, "encode_images", fail)
    findings, caches, _ = _run(world32, clip_encoder, tmp_path)
    acts = {s: c.activations for s, c in caches.items()}
    labels = {s: c.labels for s, c in caches.items()}
    ranked = run_ranking(acts, labels, {0: [0]}, findings.scores, RankingConfig(source="concepts")).scores
    np.testing.assert_array_equal(ranked["val"], findings.scores["val"])


def test_both_sources_average_where_available(world32, clip_encoder, tmp_path):
    _, split = world32
    findings, caches, _ = _run(world32, clip_encoder, tmp_path)
    acts = {"val": np.where((split.labels == 4)[:, None], 1.0, 0.0) * np.arange(1, 5)[None] + np.eye(len(split.labels), 4)}
    combined = run_ranking(acts, {"val": caches["val"].labels}, {4: [0]}, {"val": findings.scores["val"]},
                           RankingConfig(source="both")).scores["val"]
    features_only = run_ranking(acts, {"val": caches["val"].labels}, {4: [0]}, None, RankingConfig()).scores["val"]
    np.testing.assert_allclose(combined[split.labels == 4], features_only[split.labels == 4])  # only the feature score exists there
    np.testing.assert_allclose(combined[split.labels == 0], findings.scores["val"][split.labels == 0])
    assert np.isnan(combined[split.labels == 3]).all()


def test_user_concepts_only(world32, clip_encoder, tmp_path):
    _ = world32
    path = tmp_path / "mine.yaml"
    path.write_text("concepts:\n  mine: [striped background, a car]\n")
    findings, _, _ = _run(world32, clip_encoder, tmp_path, concepts={"enabled": True, "prompt_files": [str(path)]})
    assert findings.section["n_concepts"] == 2
    assert findings.section["classes"]["circle"]["spurious"] == ["striped background"]


def test_rank_correlation_matches_scipy():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(1)
    a, s = rng.normal(size=50), rng.normal(size=(50, 3))
    s[:, 0] = a ** 3
    rho = rank_correlations(a, s)
    assert rho[0] == pytest.approx(1.0)
    for j in range(3):
        assert rho[j] == pytest.approx(spearmanr(a, s[:, j]).statistic)
