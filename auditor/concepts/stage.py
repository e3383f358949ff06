"""The concept stage: CLIP concepts as candidate spurious cues, and CLIP names for neural features.

For each class, the class's images are ranked by CLIP similarity to each candidate
concept (mean text embedding of the concept's prompts; image embeddings computed once
and cached under ``work_dir/"clip"``). A concept is kept as *spurious* for the class when

1. its ranking opens a significant accuracy gap in the audited model on the evaluation
   split (the core pipeline's gap with its bootstrap CI, excluding zero on the positive
   side; the confidence level is Bonferroni-corrected by the number of concepts,
   ``1 - (1 - gaps.confidence) / n_concepts``), and
2. the concept co-occurs with the class in the training data: the ROC AUC of its
   similarity for the class's training images against all other training images is at
   least ``min_enrichment`` (0.9). A gap alone also appears when *other* classes' cues hurt
   the class (a control class whose images carry another class's cue); such concepts are
   reported as "gap_without_cooccurrence", not as the class's spurious concepts.

Kept concepts are ordered by co-occurrence; one whose similarity ranks the class's images
like an already kept concept (Spearman >= ``max_redundancy``, 0.5) is listed under
"same_direction" instead of as a separate finding (CLIP maps many prompts onto the same
image direction). Concepts that open no gap are reported as checked and harmless.
``min_enrichment`` / ``max_redundancy`` are read from the concept config when present.

Each important (class, feature) is named by the concepts whose similarity best tracks the
feature's activation over the class's images (Spearman rank correlation), on the
evaluation split, where the world's cues vary independently of the class.

Spuriosity rankings can come from neural features (default), concepts, or both
(``ranking.source``). The default stays "features": they are what the model actually
uses, while concepts only cover what the prompt files name and what CLIP can see; the
concept scores are a cross-check and a way to name findings. "both" averages the two
class-z-scored scores where both exist.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from auditor.concepts.base import CONCEPT_ENCODERS
from auditor.concepts.prompts import Concept, load_concepts
from auditor.config import ConceptConfig, GapConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConceptFindings:
    """Output of :func:`run_concepts`.

    Attributes:
        section: JSON-ready report section: per class, every concept checked with its gap and CI
            and whether it was kept (spurious) or is harmless; names of the important features.
        feature_names: ``(class, feature)`` -> top concept names, best first.
        scores: split -> float ``(N,)`` concept spuriosity (mean class-z-scored similarity to the
            class's kept concepts; NaN for classes with none).
        kept: class -> kept concept names, strongest training co-occurrence first.
        similarities: split -> float32 ``(N, C)`` image-concept cosine similarities.
        concepts: the candidate concepts, in column order of ``similarities``.
    """

    section: dict[str, Any]
    feature_names: dict[tuple[int, int], list[str]]
    scores: dict[str, np.ndarray]
    kept: dict[int, list[str]] = field(default_factory=dict)
    similarities: dict[str, np.ndarray] = field(default_factory=dict)
    concepts: list[Concept] = field(default_factory=list)


def create_encoder(config: Any, device: torch.device | str = "cpu"):
    """Build the concept encoder named by a ``ConceptConfig``.

    Args:
        config: ``ConceptConfig`` (backend, model_name, pretrained; ``resize_images`` read if present).
        device: torch device.

    Returns:
        A ConceptEncoder.

    Raises:
        ConfigError: unknown backend or model.
        MissingWeightsError: weights absent locally.
    """
    import auditor.concepts.hf_clip
    import auditor.concepts.open_clip_backend  # noqa: F401  (registers "open_clip")

    return CONCEPT_ENCODERS.create(
        config.backend,
        model_name=config.model_name,
        pretrained=config.pretrained,
        device=device,
        resize=config.resize_images,
    )


def concept_directions(encoder, concepts: list[Concept]) -> np.ndarray:
    """float32 ``(C, E)`` unit concept directions: mean text embedding of each concept's prompts."""
    prompts = [p for c in concepts for p in c.prompts]
    embedded = encoder.encode_text(prompts)
    out, start = [], 0
    for c in concepts:
        v = embedded[start : start + len(c.prompts)].mean(0)
        out.append(v / max(np.linalg.norm(v), 1e-12))
        start += len(c.prompts)
    return np.stack(out).astype(np.float32)


def _source_digest(source) -> str:
    skipped = {item.index for item in source.skipped}
    readable = [i for i in range(len(source)) if i not in skipped]
    first, _, _ = source.load([readable[0], readable[-1]])
    return hashlib.sha1(first.numpy().tobytes()).hexdigest()[:12]


def image_embeddings(encoder, source, cache_dir: Path | None, split: str, progress: bool = False) -> np.ndarray:
    """CLIP embeddings of every image of ``source`` (RGB in [0, 1]), cached on disk.

    Args:
        encoder: a ConceptEncoder.
        source: an ImageSource.
        cache_dir: folder for the ``.npy`` cache (None: no cache).
        split: name used in the cache file.
        progress: show a progress bar.

    Returns:
        float32 ``(N, E)`` in dataset order; zero rows for images that could not be read.
    """
    fingerprint = getattr(encoder, "fingerprint", type(encoder).__name__)
    key = hashlib.sha1(f"{fingerprint}|{len(source)}|{_source_digest(source)}".encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"{split}-{key}.npy" if cache_dir is not None else None
    if path is not None and path.exists():
        return np.load(path)
    embeddings = None
    for indices, images, _, _ in tqdm(source.batches(), desc=f"CLIP embeddings ({split})", disable=not progress):
        chunk = encoder.encode_images(source.unit_images(images))
        if embeddings is None:
            embeddings = np.zeros((len(source), chunk.shape[1]), np.float32)
        embeddings[indices] = chunk
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, embeddings)
        tmp.replace(path)
    return embeddings


def _ranks(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(values, axis=0)


def rank_correlations(activations: np.ndarray, similarities: np.ndarray) -> np.ndarray:
    """Spearman correlation of one feature's activations ``(n,)`` with each column of ``similarities (n, C)``.

    Returns:
        float64 ``(C,)``; 0 where either side is constant.
    """
    a = _ranks(np.asarray(activations, np.float64))
    s = _ranks(np.asarray(similarities, np.float64))
    a = a - a.mean()
    s = s - s.mean(0)
    denom = np.sqrt((a**2).sum() * (s**2).sum(0))
    return np.where(denom > 0, (a @ s) / np.where(denom > 0, denom, 1.0), 0.0)


def enrichment_aucs(similarities: np.ndarray, in_class: np.ndarray) -> np.ndarray:
    """ROC AUC, per concept, of similarity for the class's training images against all others.

    Args:
        similarities: float ``(N, C)`` on the training split.
        in_class: bool ``(N,)``.

    Returns:
        float64 ``(C,)``: 0.5 = the concept is as present in the class as elsewhere, 1 = only in the class
        (NaN when the class or the rest is empty).
    """
    n_pos, n_neg = int(in_class.sum()), int((~in_class).sum())
    if n_pos == 0 or n_neg == 0:
        return np.full(similarities.shape[1], np.nan)
    ranks = _ranks(np.asarray(similarities, np.float64))
    return (ranks[in_class].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def concept_scores(similarities: np.ndarray, labels: np.ndarray, kept: dict[int, list[int]]) -> np.ndarray:
    """Concept spuriosity: mean class-z-scored similarity to the class's kept concepts.

    Args:
        similarities: float ``(N, C)``.
        labels: int ``(N,)``.
        kept: class -> kept concept columns.

    Returns:
        float64 ``(N,)``; NaN for images of classes with no kept concept.
    """
    from auditor.ranking import spuriosity_scores

    return spuriosity_scores(similarities, labels, kept)


def run_concepts(
    encoder,
    sources: dict[str, Any],
    caches: dict[str, Any],
    important_features: dict[int, list[int]],
    class_names: list[str],
    config: ConceptConfig,
    gap_config: GapConfig,
    evaluation_split: str,
    cache_dir: Path | None,
    rng: np.random.Generator,
    progress: bool = False,
) -> ConceptFindings:
    """The concept stage: check every candidate concept for every class and name the important features.

    Args:
        encoder: a ConceptEncoder (see :func:`create_encoder`).
        sources: split -> ImageSource ("train", and "val" when given).
        caches: split -> FeatureCache of the same splits.
        important_features: class -> important features.
        class_names: one per class.
        config: concept settings.
        gap_config: k, bootstrap and confidence of the gaps (Bonferroni-corrected here).
        evaluation_split: the split whose gaps decide ("val" when given).
        cache_dir: folder caching CLIP image embeddings (None: no cache).
        rng: random generator of the bootstrap (a child stream is used).
        progress: show progress bars.

    Returns:
        :class:`ConceptFindings`.

    Raises:
        InvalidInputError: the encoder's image size does not fit the dataset (see the encoder).
    """
    from auditor.gaps import class_gaps

    cfg = config
    concepts = load_concepts(cfg.prompt_files or None, extra=cfg.concepts)
    directions = concept_directions(encoder, concepts)
    splits = list(sources)
    sims = {}
    for split in splits:
        emb = image_embeddings(encoder, sources[split], cache_dir, split, progress=progress)
        sims[split] = (emb @ directions.T).astype(np.float32)

    split = evaluation_split
    cache = caches[split]
    labels, correct = np.asarray(cache.labels), np.asarray(cache.correct)
    n = len(concepts)
    gap_cfg = dataclasses.replace(gap_config, confidence=1 - (1 - gap_config.confidence) / max(n, 1))
    rng = rng.spawn(1)[0]  # a child stream; the caller's stream is not advanced
    per_concept = []
    for j in tqdm(range(n), desc="concept gaps", disable=not progress):
        per_concept.append(class_gaps(sims[split][:, j].astype(np.float64), labels, correct, gap_cfg, rng))

    classes = sorted(important_features) if important_features else sorted(int(c) for c in np.unique(labels) if c >= 0)
    min_enrichment = cfg.min_enrichment
    max_redundancy = cfg.max_redundancy
    train_labels = np.asarray(caches["train"].labels)
    kept: dict[int, list[int]] = {}
    section_classes = {}
    for c in classes:
        enrichment = enrichment_aucs(sims["train"], train_labels == c)
        members = np.flatnonzero(labels == c)
        rows, candidates = [], []
        for j, concept in enumerate(concepts):
            est = per_concept[j].get(c)
            if est is None:
                continue
            opens_gap = bool(est.significant and np.isfinite(est.gap) and est.ci_low > 0)
            enriched = bool(enrichment[j] >= min_enrichment)
            rows.append({
                "concept": concept.name, "category": concept.category, "gap": est.gap, "ci_low": est.ci_low,
                "ci_high": est.ci_high, "k": est.k, "enrichment_auc": float(enrichment[j]), "opens_gap": opens_gap,
                "kept": False, "same_as": None, "note": est.note,
            })
            if opens_gap and enriched:
                candidates.append((j, len(rows) - 1))
        # Strongest co-occurrence first; a concept ranking the class's images like an already kept one is folded into it.
        candidates.sort(key=lambda item: (-enrichment[item[0]], -per_concept[item[0]][c].gap))
        primary: list[int] = []
        for j, row in candidates:
            twin = next((p for p in primary if len(members) > 2 and
                         rank_correlations(sims[split][members, p], sims[split][members, j : j + 1])[0] >= max_redundancy), None)
            if twin is None:
                primary.append(j)
                rows[row]["kept"] = True
            else:
                rows[row]["same_as"] = concepts[twin].name
        kept[c] = primary
        section_classes[class_names[c]] = {
            "spurious": [concepts[j].name for j in primary],
            "same_direction": {r["concept"]: r["same_as"] for r in rows if r["same_as"]},
            "gap_without_cooccurrence": [r["concept"] for r in rows if r["opens_gap"] and r["enrichment_auc"] < min_enrichment],
            "harmless": [r["concept"] for r in rows if not r["opens_gap"]],
            "checked": sorted(rows, key=lambda r: -(r["gap"] if r["gap"] is not None and np.isfinite(r["gap"]) else -np.inf)),
        }
    kept = {c: js for c, js in kept.items() if js}

    feature_names: dict[tuple[int, int], list[str]] = {}
    names_section = {}
    acts = np.asarray(cache.activations)
    for c, features in important_features.items():
        members = np.flatnonzero(labels == c)
        if len(members) < 3:
            continue
        for f in features:
            rho = rank_correlations(acts[members, f], sims[split][members])
            order = np.argsort(-rho)[: cfg.n_names]
            feature_names[(c, f)] = [concepts[j].name for j in order]
            names_section[f"{class_names[c]}:{f}"] = [{"concept": concepts[j].name, "rho": float(rho[j])} for j in order]

    scores = {}
    for s in splits:
        scores[s] = concept_scores(sims[s], np.asarray(caches[s].labels), kept)
    section = {
        "encoder": getattr(encoder, "fingerprint", type(encoder).__name__),
        "n_concepts": n,
        "evaluation_split": split,
        "confidence": gap_cfg.confidence,
        "correction": "bonferroni over concepts",
        "min_enrichment": min_enrichment,
        "max_redundancy": max_redundancy,
        "classes": section_classes,
        "feature_names": names_section,
    }
    return ConceptFindings(section=section, feature_names=feature_names, scores=scores,
                           kept={c: [concepts[j].name for j in js] for c, js in kept.items()},
                           similarities=sims, concepts=concepts)
