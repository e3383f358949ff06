"""Cue discovery from images with no class object.

A model that labels an image with no class object as class ``c`` is using a cue. From a
pool of unrelated images (a folder the user gives, or by default the audit's own images
with the class object painted out using its object masks), the images the model
assigns to each class with high confidence are collected, embedded (CLIP image
embeddings when a CLIP backend is present, otherwise a small VAE trained on the pool),
and clustered per predicted class with k-means (k chosen by silhouette). Each cluster is
described by its size, its exemplar images, its closest concepts (CLIP only), and how
strongly it activates the features the main audit judged spurious for that class.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from auditor.config import DiscoveryConfig
from auditor.counterfactuals import dilate_masks
from auditor.errors import ConfigError, InvalidInputError
from auditor.noise import thumbnail_uri

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def remove_objects(images: torch.Tensor, masks: np.ndarray | torch.Tensor, dilate: int = 1) -> torch.Tensor:
    """Paint each image's object out with the mean colour of its background.

    Args:
        images: float ``(N, 3, H, W)`` in [0, 1].
        masks: bool ``(N, H, W)`` object masks.
        dilate: grow each mask by this many pixels first (removes anti-aliased edges).

    Returns:
        float ``(N, 3, H, W)``; images with an empty mask are returned unchanged.

    Raises:
        InvalidInputError: masks whose shape does not match the images.

    Example:
        >>> x = torch.zeros(1, 3, 4, 4); x[0, :, 1, 1] = 1.0
        >>> m = np.zeros((1, 4, 4), bool); m[0, 1, 1] = True
        >>> float(remove_objects(x, m, dilate=0).max())
        0.0
    """
    masks = torch.as_tensor(np.asarray(masks, bool))
    if masks.shape != (images.shape[0], *images.shape[-2:]):
        raise InvalidInputError(f"masks have shape {tuple(masks.shape)}; expected {(images.shape[0], *images.shape[-2:])}")
    m = dilate_masks(masks, dilate)[:, None].float()
    background = 1 - m
    count = background.sum((2, 3), keepdim=True).clamp(min=1)
    mean = (images * background).sum((2, 3), keepdim=True) / count
    return images * background + mean * m


def collect_confident(probabilities: np.ndarray, min_confidence: float) -> dict[int, np.ndarray]:
    """Per predicted class, the images predicted with at least ``min_confidence``.

    Args:
        probabilities: float ``(N, K)`` softmax outputs.
        min_confidence: threshold on the top probability.

    Returns:
        class -> int64 indices into the N images (classes with none are absent).

    Example:
        >>> collect_confident(np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]]), 0.7)
        {0: array([0]), 1: array([2])}
    """
    probabilities = np.asarray(probabilities)
    top = probabilities.argmax(1)
    confident = probabilities.max(1) >= min_confidence
    return {int(c): np.flatnonzero(confident & (top == c)) for c in np.unique(top[confident])}


def cluster_embeddings(
    embeddings: np.ndarray,
    max_clusters: int,
    *,
    seed: int = 0,
    min_silhouette: float = 0.1,
    min_cluster_size: int = 3,
) -> np.ndarray:
    """k-means clusters of embeddings, k in 1..max_clusters chosen by silhouette.

    Args:
        embeddings: float ``(n, E)``.
        max_clusters: largest k tried.
        seed: k-means seed.
        min_silhouette: below this best silhouette, one cluster is returned.
        min_cluster_size: a k whose smallest cluster is smaller is not considered.

    Returns:
        int64 ``(n,)`` cluster ids, 0 = largest cluster.

    Example:
        >>> x = np.r_[np.zeros((10, 2)), np.ones((10, 2)) * 5] + np.random.default_rng(0).normal(0, .1, (20, 2))
        >>> np.bincount(cluster_embeddings(x, 3)).tolist()
        [10, 10]
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    embeddings = np.asarray(embeddings, np.float64)
    n = len(embeddings)
    best, best_score = np.zeros(n, np.int64), min_silhouette
    for k in range(2, min(max_clusters, n - 1) + 1):
        labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(embeddings)
        if np.bincount(labels).min() < min_cluster_size:
            continue
        score = silhouette_score(embeddings, labels)
        if score > best_score:
            best, best_score = labels, score
    order = np.argsort(-np.bincount(best), kind="stable")
    remap = np.empty_like(order)
    remap[order] = np.arange(len(order))
    return remap[best].astype(np.int64)


def cluster_purity(members: Sequence[int], flags: np.ndarray) -> float:
    """Share of a cluster's images whose ground-truth flag is set (for evaluation on a known world).

    Example:
        >>> cluster_purity([0, 1, 2, 3], np.array([True, True, True, False, False]))
        0.75
    """
    members = np.asarray(members, np.int64)
    return float(np.asarray(flags, bool)[members].mean()) if len(members) else float("nan")


def load_folder_images(folder: str | Path, size: tuple[int, int]) -> tuple[torch.Tensor, list[str]]:
    """Every image file of ``folder`` (sorted, not recursive) as RGB float ``(N, 3, H, W)`` in [0, 1].

    Args:
        folder: the pool folder.
        size: ``(H, W)`` to resize to (the model's input size).

    Returns:
        ``(images, file names)``; unreadable files are skipped and logged.

    Raises:
        InvalidInputError: the folder is missing or holds no readable image.
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInputError(f"discovery pool folder {str(folder)!r} does not exist; set `discovery.pool_dir` to a folder of images")
    images, names = [], []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            with Image.open(path) as picture:
                picture = picture.convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
                array = np.asarray(picture, np.float32) / 255.0
        except (OSError, UnidentifiedImageError) as error:
            logger.warning("discovery: skipping unreadable image %s (%s)", path, error)
            continue
        images.append(torch.from_numpy(array).permute(2, 0, 1))
        names.append(path.name)
    if not images:
        raise InvalidInputError(f"discovery pool folder {str(folder)!r} holds no readable image ({', '.join(IMAGE_SUFFIXES)})")
    return torch.stack(images), names


def _to_model_space(source, unit: torch.Tensor) -> torch.Tensor:
    if source.mean is not None:
        unit = (unit - source.mean) / source.std
    if source.image_shape[0] == 1:
        unit = unit.mean(1, keepdim=True)
    return unit


def _default_pool(source, mask_provider, seed: int, progress: bool, max_images: int) -> tuple[torch.Tensor, list[int]]:
    chosen = np.arange(len(source))
    if len(chosen) > max_images:
        chosen = np.sort(np.random.default_rng(seed).choice(chosen, max_images, replace=False))
    pool, indices = [], []
    for batch_indices, images, labels, masks in tqdm(source.batches(chosen), desc="discovery pool", disable=not progress):
        unit = source.unit_images(images)
        if masks is None:
            if mask_provider is None:
                raise InvalidInputError(
                    "discovery needs object masks to remove the class objects, or a folder of unrelated images: "
                    "set `discovery.pool_dir` or use a mask provider"
                )
            masks = torch.as_tensor(np.asarray(mask_provider.masks(unit, labels.tolist(), list(map(int, batch_indices))), bool))
        pool.append(remove_objects(unit, masks))
        indices.extend(int(i) for i in batch_indices)
    return torch.cat(pool), indices


def _embed(encoder, unit: torch.Tensor, method: str, seed: int, progress: bool) -> tuple[np.ndarray, str]:
    if method == "auto":
        method = "clip" if encoder is not None else "vae"
    if method == "clip":
        if encoder is None:
            raise ConfigError(
                "`discovery.embedding` is 'clip' but no CLIP backend is loaded; enable `concepts` with local weights "
                "or use `discovery.embedding: vae`"
            )
        out = [encoder.encode_images(unit[s : s + 64]) for s in range(0, len(unit), 64)]
        return np.concatenate(out).astype(np.float32), "clip"
    if method != "vae":
        raise ConfigError(f"`discovery.embedding` must be one of ['auto', 'clip', 'vae']; got {method!r}")
    from auditor.vae import train_vae

    vae = train_vae(unit, seed=seed, progress=progress)
    return vae.embed(unit), "vae"


@dataclass(frozen=True)
class DiscoveryResult:
    """Output of :func:`run_discovery`: the JSON-ready ``discovery`` section."""

    section: dict


def run_discovery(
    adapter,
    source,
    split: str,
    mask_provider,
    encoder,
    verdicts: Sequence[Any],
    class_names: Sequence[str],
    concept_config: Any,
    config: DiscoveryConfig,
    seed: int,
    progress: bool = False,
) -> DiscoveryResult:
    """The discovery stage: clusters of confidently classified object-free images, per class.

    The pool is held in memory at the model's input size; at most ``max_pool_images``
    (5000, a random subset chosen with ``seed``) are used.

    Args:
        adapter: the audited model's :class:`~auditor.model.ModelAdapter`.
        source: the ImageSource of the evaluation split (the default pool, objects removed).
        split: its name.
        mask_provider: object-mask backend (for the default pool without dataset masks), or None.
        encoder: a CLIP ConceptEncoder, or None (a small VAE embeds the pool then).
        verdicts: the audit's verdicts (spurious features and their concept names).
        class_names: one per class.
        concept_config: the ConceptConfig (prompt files, extra concepts, names per cluster).
        config: discovery settings.
        seed: seed of the pool sample, the VAE and k-means.
        progress: show progress bars.

    Returns:
        A :class:`DiscoveryResult`: pool description, embedding used, and per class the number
        of collected images and its clusters (size, members, exemplars with thumbnails, concept
        names when CLIP is present, mean z-scored activation of the audit's spurious features
        for the class, and whether that agrees with the audit).

    Raises:
        InvalidInputError: no pool folder and no masks to remove the objects.
        ConfigError: ``embedding: clip`` without a CLIP backend.
    """
    cfg = config
    max_images = cfg.max_pool_images
    if cfg.pool_dir:
        unit, names = load_folder_images(cfg.pool_dir, source.image_shape[-2:])
        if len(names) > max_images:
            keep = np.sort(np.random.default_rng(seed).choice(len(names), max_images, replace=False))
            unit, names = unit[torch.from_numpy(keep)], [names[i] for i in keep]
        pool_ids: list = names
        pool_desc = {"kind": "folder", "path": str(cfg.pool_dir), "n_images": len(names)}
    else:
        unit, pool_ids = _default_pool(source, mask_provider, seed, progress, max_images)
        pool_desc = {"kind": "objects_removed", "split": split, "n_images": len(pool_ids)}
    logits, features = [], []
    for start in range(0, len(unit), source.batch_size):
        out = adapter.forward(_to_model_space(source, unit[start : start + source.batch_size]))
        logits.append(out.logits.float().cpu())
        features.append(out.features.float().cpu().numpy())
    probabilities = torch.softmax(torch.cat(logits), 1).numpy()
    activations = np.concatenate(features)
    z = (activations - activations.mean(0)) / np.where(activations.std(0) > 0, activations.std(0), 1.0)
    collected = collect_confident(probabilities, cfg.min_confidence)
    embeddings, method = (None, None)
    if collected:
        embeddings, method = _embed(encoder, unit, cfg.embedding, seed, progress)
    concept_table = None
    if method == "clip":
        from auditor.concepts.prompts import load_concepts
        from auditor.concepts.stage import concept_directions

        concepts = load_concepts(concept_config.prompt_files or None, extra=concept_config.concepts)
        concept_table = (concepts, concept_directions(encoder, concepts))
    threshold = cfg.agreement_z
    classes = {}
    for c, name in enumerate(class_names):
        members = collected.get(c, np.zeros(0, np.int64))
        spurious = [v.feature for v in verdicts if v.class_index == c and v.label == "spurious"]
        entry = {"class_name": name, "n_collected": len(members), "spurious_features": spurious, "clusters": []}
        if len(members) == 0:
            classes[c] = entry
            continue
        labels = cluster_embeddings(embeddings[members], cfg.max_clusters, seed=seed)
        for k in range(int(labels.max()) + 1):
            chosen = members[labels == k]
            centre = embeddings[chosen].mean(0)
            nearest = chosen[np.argsort(np.linalg.norm(embeddings[chosen] - centre, axis=1))[:6]]
            lift = float(z[np.ix_(chosen, spurious)].mean()) if spurious else None
            cluster = {
                "cluster": k,
                "size": len(chosen),
                "members": [pool_ids[i] for i in chosen],
                "mean_confidence": float(probabilities[chosen, c].mean()),
                "exemplars": [{"id": pool_ids[i], "image": thumbnail_uri(unit[i])} for i in nearest],
                "spurious_activation": lift,
                "agrees_with_audit": bool(lift is not None and lift > threshold),
            }
            if concept_table is not None:
                cluster["concepts"] = _nearest_concepts(concept_table, embeddings[chosen], concept_config.n_names)
                audit_names = {n for v in verdicts if v.class_index == c and v.label == "spurious" for n in v.concept_names}
                cluster["shared_concepts"] = sorted(audit_names & set(cluster["concepts"]))
            entry["clusters"].append(cluster)
        classes[c] = entry
        logger.info("discovery: class %s: %d images without the object, %d clusters", name, len(members), len(entry["clusters"]))
    return DiscoveryResult(section={
        "pool": pool_desc,
        "embedding": method,
        "min_confidence": cfg.min_confidence,
        "max_clusters": cfg.max_clusters,
        "agreement_z": threshold,
        "classes": classes,
    })


def _nearest_concepts(table: tuple[list, np.ndarray], embeddings: np.ndarray, n_names: int) -> list[str]:
    concepts, directions = table
    centre = embeddings.mean(0)
    centre = centre / max(np.linalg.norm(centre), 1e-12)
    order = np.argsort(-(directions @ centre))[:n_names]
    return [concepts[i].name for i in order]
