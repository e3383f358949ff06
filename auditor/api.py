"""``audit(model, dataset)``: the one call that wires every stage together.

Each stage is a function over plain data (``run_<stage>(inputs..., config, rng)``
returning a frozen result); this module builds the inputs from its own locals and
collects the results into an :class:`~auditor.report.audit_report.AuditReport`.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from torch.utils.data import Dataset

from auditor.config import AuditConfig, load_config
from auditor.data import ImageSource
from auditor.errors import ConfigError, InvalidInputError
from auditor.evaluation import head_predictions
from auditor.features import FeatureCache, run_features
from auditor.gaps import run_gaps
from auditor.labeling import ranking_directions, run_verdicts, spurious_by_class
from auditor.masks import MASK_PROVIDERS
from auditor.model import ModelAdapter, resolve_device
from auditor.ranking import run_ranking
from auditor.report.audit_report import AuditReport, environment_meta
from auditor.tuning import run_tuning

logger = logging.getLogger(__name__)

COARSE_GRID = 4
"""A heatmap grid with a side below this many cells cannot tell an object from its surroundings."""


def _class_names(dataset: Dataset, class_names: Sequence[str] | None, adapter: ModelAdapter) -> list[str]:
    if class_names is None:
        class_names = getattr(dataset, "classes", None) or [f"class_{i}" for i in range(adapter.n_classes)]
    class_names = [str(n) for n in class_names]
    adapter.check_class_names(class_names)
    return class_names


def _work_dir(config: AuditConfig) -> Path:
    if config.features.cache_dir:
        path = Path(config.features.cache_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path
    path = Path(tempfile.mkdtemp(prefix="auditor-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _mask_provider_name(config: AuditConfig, train: ImageSource) -> str:
    """The mask backend in use: ``masks.provider``, with "auto" resolved to "dataset" or "sam"."""
    name = config.masks.provider
    if name == "auto":
        name = "dataset" if train.has_masks else "sam"
    return name


def _verdict_config(config: AuditConfig, train: ImageSource) -> Any:
    """The verdict settings, with the swap threshold, background dilations, swap re-lighting, heat fallback and
    population checks for estimated masks when the masks are not the dataset's."""
    if _mask_provider_name(config, train) == "dataset":
        return config.verdicts
    return config.verdicts.for_estimated_masks()


def _mask_provider(config: AuditConfig, train: ImageSource, class_names: list[str], work_dir: Path, encoder: Any, device) -> Any:
    """The object-mask backend, built (and its weights loaded) before any forward pass."""
    name = _mask_provider_name(config, train)
    if config.masks.provider == "auto" and name == "sam":
        logger.info("the train dataset yields no object masks: using SAM (`masks.provider: sam`)")
    if name == "dataset" and not train.has_masks:
        raise InvalidInputError(
            "`masks.provider` is 'dataset' but the train dataset yields no masks (the verdicts are made on training "
            "images); return (image, label, mask) items from the train dataset, or use `masks.provider: sam`"
        )
    try:
        return MASK_PROVIDERS.build(
            name, source=train, config=config.masks, class_names=class_names,
            cache_dir=Path(config.masks.cache_dir) if config.masks.cache_dir else work_dir / "masks",
            concept_encoder=encoder, device=device,
        )
    except FileNotFoundError as error:
        if not train.has_masks:
            raise type(error)(f"the train dataset yields no object masks, so auditor needs SAM: {error}") from None
        raise


def _warnings(evaluation: FeatureCache, split: str, n_classes: int, grid: tuple[int, int] | None, verdicts) -> list[str]:
    """Caveats that make the verdicts less trustworthy, with what to do about them."""
    found = []
    labels = np.asarray(evaluation.labels)
    usable = labels >= 0
    if usable.any():
        accuracy = float(np.asarray(evaluation.correct)[usable].mean())
        chance = float(np.bincount(labels[usable], minlength=n_classes).max() / usable.sum())
        if accuracy < min(2 * chance, chance + 0.2):
            found.append(
                f"{split} accuracy is {accuracy:.2f}, near chance ({chance:.2f}): the model has learned little, so its "
                "features, verdicts and gaps describe noise. Train the model further (or check its weights and the "
                "input preprocessing) before auditing it."
            )
    if grid is not None:
        cells = grid[0] * grid[1]
        areas = [v.object_area for v in verdicts if np.isfinite(v.object_area) and v.object_area > 0]
        small = bool(areas) and float(np.median(areas)) < 1.0 / cells
        if min(grid) < COARSE_GRID or small:
            found.append(
                f"the heatmap layer's grid is {grid[0]}x{grid[1]}"
                + (f", coarser than the objects (median object area {np.median(areas):.3f} of the image)" if small else "")
                + ": heat cannot be placed inside or outside the object, so the heat evidence is weak. Set "
                "`model.feature_layer` to an earlier layer with a finer grid whose channels are the features, or use "
                "`verdicts.heatmap: gradient`."
            )
    return found


def _heatmap_grid(adapter: ModelAdapter, source: ImageSource, method: str) -> tuple[int, int] | None:
    if method != "cam":
        return None
    skipped = {item.index for item in source.skipped}
    first = next(i for i in range(len(source)) if i not in skipped)
    images, _, _ = source.load([first])
    if adapter.locate_spatial_layer(images) is None:
        return None
    spatial = adapter.forward(images, with_spatial=True).spatial
    return (int(spatial.shape[-2]), int(spatial.shape[-1])) if spatial is not None else None


def _skipped_images(caches: dict[str, FeatureCache]) -> list[dict[str, Any]]:
    records = []
    for split, cache in caches.items():
        records += [{"split": split, **item.to_dict()} for item in cache.skipped]
    return records


def audit(
    model: nn.Module,
    dataset: Dataset,
    val_dataset: Dataset | None = None,
    class_names: Sequence[str] | None = None,
    config: AuditConfig | dict | str | Path | None = None,
    annotations: str | Path | None = None,
) -> AuditReport:
    """Audit a classifier for spurious features, rank images by spuriosity, and repair its head.

    Args:
        model: a trained classifier whose last ``nn.Linear`` (or ``config.model.head``) is the head.
            It is never modified: hooks are removed and every module's training flag restored,
            also when the audit fails.
        dataset: map-style Dataset yielding ``(image, label)``, ``(image, label, mask)`` or dicts.
            Images go to the model exactly as yielded.
        val_dataset: optional validation data (recommended: gaps, early stopping and reported
            metrics use it; without it they use the training data).
        class_names: one per head output (default: ``dataset.classes`` or "class_i").
        config: AuditConfig, dict, YAML path or None for defaults.
        annotations: CSV of human core/spurious labels per (class, feature) (see
            :mod:`auditor.annotations`); annotated pairs take the human label for the rankings, gaps
            and tuning (sets ``report.human_annotations`` and ``report.annotations_as_labels``);
            the automated verdicts and the agreement are in ``sections["human_agreement"]``.

    Returns:
        An :class:`AuditReport`.

    Raises:
        ConfigError: invalid configuration.
        InvalidInputError: empty dataset, labels outside the head's range, masks of the wrong size,
            too many unreadable images.
        UnsupportedModelError: no linear head.
        NumericalError: NaN/inf activations.
        MissingWeightsError: SAM/CLIP weights required but absent (raised before any forward pass).

    Example:
        >>> report = audit(model, train_set, val_set)              # doctest: +SKIP
        >>> report.spurious_features(0), report.gaps[0].gap         # doctest: +SKIP
    """
    started = time.perf_counter()
    config = load_config(config)
    if annotations is not None:
        config = config.replace(**{"report.human_annotations": str(annotations), "report.annotations_as_labels": True})
    if config.ranking.source != "features" and not config.concepts.enabled:
        raise ConfigError(
            f"`ranking.source` is {config.ranking.source!r}, which needs the concept stage; "
            "set `concepts.enabled: true` (with local CLIP weights) or use `ranking.source: features`"
        )
    rng = np.random.default_rng(config.seed)
    progress = config.progress
    device = resolve_device(config.model.device)
    adapter = ModelAdapter(model, head=config.model.head, feature_layer=config.model.feature_layer, device=device)
    names = _class_names(dataset, class_names, adapter)
    data_kwargs = dict(batch_size=config.data.batch_size, num_workers=config.data.num_workers, mean=config.data.mean, std=config.data.std)
    sources = {"train": ImageSource(dataset, name="train", **data_kwargs)}
    if val_dataset is not None:
        sources["val"] = ImageSource(val_dataset, name="val", **data_kwargs)
    evaluation_split = "val" if "val" in sources else "train"
    work_dir = _work_dir(config)

    # Backends with weights load before the forward pass, so a missing file fails in seconds.
    encoder = None
    if config.concepts.enabled:
        from auditor.concepts.stage import create_encoder

        encoder = create_encoder(config.concepts, device)
    mask_provider = _mask_provider(config, sources["train"], names, work_dir, encoder, device)

    logger.info("stage features: one pass over %s", ", ".join(f"{len(s)} {n} images" for n, s in sources.items()))
    features = run_features(adapter, sources, names, config.features, work_dir, min_images=2 * config.gaps.min_k,
                            max_skipped_fraction=config.data.max_skipped_fraction, progress=progress,
                            engine=config.engine)
    caches, important, importance = features.caches, features.important_features, features.importance
    train_cache, evaluation = caches["train"], caches[evaluation_split]
    weight, bias = adapter.head_weight().numpy(), adapter.head_bias().numpy()

    logger.info("stage verdicts: %d (class, feature) pairs", sum(len(f) for f in important.values()))
    verdict_stage = run_verdicts(adapter, sources["train"], train_cache, important, importance, mask_provider,
                                 _verdict_config(config, sources["train"]), rng, progress=progress)
    verdicts = list(verdict_stage.verdicts)

    sections: dict[str, Any] = {}
    concept_scores = None
    if config.concepts.enabled:
        from auditor.concepts.stage import run_concepts

        logger.info("stage concepts")
        findings = run_concepts(encoder, sources, caches, important, names, config.concepts, config.gaps,
                                evaluation_split, work_dir / "clip", rng, progress=progress)
        sections["concepts"] = findings.section
        verdicts = [dataclasses.replace(v, concept_names=findings.feature_names.get((v.class_index, v.feature), []))
                    for v in verdicts]
        concept_scores = findings.scores

    spurious = spurious_by_class(verdicts)
    if config.report.human_annotations:
        from auditor.annotations import run_annotations

        logger.info("stage annotations%s", ": human labels decide the annotated pairs" if config.report.annotations_as_labels else "")
        human = run_annotations(config.report.human_annotations, verdicts, names, ties=config.report.annotation_ties,
                                use_as_labels=config.report.annotations_as_labels,
                                n_features=int(train_cache.activations.shape[1]))
        sections["human_agreement"] = human.section  # agreement with the automated verdicts, computed before any swap
        verdicts, spurious = human.verdicts, human.spurious

    logger.info("stage ranking and gaps")
    directions = ranking_directions(verdicts, verdict_stage.swap_means, config.ranking.direction_reference)
    ranking = run_ranking({s: c.activations for s, c in caches.items()}, {s: c.labels for s, c in caches.items()},
                          spurious, concept_scores, config.ranking, cue_directions=directions.directions,
                          direction_errors=directions.standard_errors)
    rankings = ranking.scores
    sections["ranking"] = ranking.section
    gaps = run_gaps(rankings[evaluation_split], evaluation.labels, evaluation.correct, config.gaps, rng).gaps

    tuning, tuned_heads = {}, {}
    if config.tuning.enabled:
        logger.info("stage tuning: low_spuriosity%s", "".join(f", {b}" for b in config.tuning.baselines))
        if evaluation_split == "train":
            logger.warning("no validation data: head tuning is fitted and reported on the training data, whose "
                           "features the model has memorised; give validation data for a held-out repair")
        tuned = run_tuning((weight, bias), train_cache, rankings["train"], evaluation, rankings[evaluation_split],
                           config.tuning, config.gaps, config.seed, has_validation=evaluation_split == "val",
                           spurious=spurious)
        tuning, tuned_heads = dict(tuned.results), dict(tuned.heads)

    if config.neurontune.enabled:
        from auditor.neurontune import run_neurontune

        identification_split = config.neurontune.identification_split
        if identification_split not in caches:
            logger.warning("neurontune: no validation split; identifying biased dimensions on the memorised training split")
            identification_split = "train"
        logger.info("stage neurontune (identification on %s)", identification_split)
        result = run_neurontune((weight, bias), train_cache, caches[identification_split], identification_split,
                                evaluation, evaluation_split, rankings[evaluation_split], verdicts,
                                config.neurontune, config.gaps, config.tuning.weight_decay, seed=config.seed)
        sections["neurontune"] = result.section
        tuned_heads["neurontune"] = (result.weight, result.bias)
    if config.discovery.enabled:
        from auditor.discovery import run_discovery

        logger.info("stage discovery")
        sections["discovery"] = run_discovery(adapter, sources[evaluation_split], evaluation_split, mask_provider, encoder,
                                              verdicts, names, config.concepts, config.discovery, config.seed,
                                              progress=progress).section
    if config.noise.enabled:
        from auditor.noise import run_noise

        logger.info("stage noise")
        sections["noise"] = run_noise(adapter, sources, caches, rankings, evaluation_split, gaps, verdicts, names,
                                      mask_provider, config.noise, config.gaps, config.verdicts.heatmap, rng).section

    grid = _heatmap_grid(adapter, sources["train"], config.verdicts.heatmap)
    warnings = _warnings(evaluation, evaluation_split, adapter.n_classes, grid, verdicts)
    for text in warnings:
        logger.warning(text)

    artifacts, evidence_dir = {}, None
    if config.report.html:
        from auditor.evidence import run_evidence

        logger.info("stage evidence: report images")
        evidence_dir = Path(config.report.output_dir) if config.report.output_dir else work_dir / "evidence"
        tuned_correct = None
        if "low_spuriosity" in tuned_heads:
            tuned_correct = head_predictions(evaluation.activations, *tuned_heads["low_spuriosity"]) == evaluation.labels
        disagreements = (sections.get("human_agreement") or {}).get("disagreements", [])
        evidence = run_evidence(adapter, sources["train"], sources[evaluation_split], evaluation_split,
                                np.asarray(evaluation.labels), np.asarray(evaluation.correct), rankings[evaluation_split],
                                tuned_correct, gaps, verdicts, mask_provider, config.verdicts.heatmap,
                                config.report.n_grid_images, evidence_dir,
                                extra_pairs={(d["class_index"], d["feature"]) for d in disagreements})
        artifacts = evidence.artifacts

    report = AuditReport(
        class_names=names,
        config=config,
        important_features=important,
        verdicts=verdicts,
        gaps=gaps,
        tuning=tuning,
        sections=sections,
        meta={
            "seed": config.seed,
            "device": str(device),
            "evaluation_split": evaluation_split,
            "n_train_images": len(sources["train"]),
            "n_val_images": len(sources["val"]) if "val" in sources else 0,
            "head": adapter.head_name,
            "spatial_layer": adapter.spatial_layer if grid is not None else None,
            "heatmap_grid": list(grid) if grid is not None else None,
            "mask_provider": type(mask_provider).__name__,
            "skipped_classes": features.skipped_classes,
            "seconds": round(time.perf_counter() - started, 2),
            "versions": environment_meta(),
        },
        tuned_heads=tuned_heads,
        rankings=rankings,
        labels={s: np.asarray(c.labels, np.int64) for s, c in caches.items()},
        predictions={s: np.asarray(c.predictions, np.int64) for s, c in caches.items()},
        skipped_images=_skipped_images(caches),
        warnings=warnings,
        artifacts=artifacts,
        evidence_dir=str(evidence_dir) if evidence_dir is not None else None,
        model=model,
    )
    if config.report.output_dir:
        write_outputs(report, config.report.output_dir)
    return report


def write_outputs(report: AuditReport, output_dir: str | Path, gate: dict | None = None) -> dict[str, Path]:
    """Write results.json, the rankings and tuned heads, and (when configured) report.html with its images.

    Args:
        report: the audit report.
        output_dir: destination folder (created if needed).
        gate: a gate verdict to store; when None and ``config.gate.fail_on`` is set, it is evaluated here.

    Returns:
        Paths written, by name ("results", "html", "spuriosity_train", "spuriosity_val").
    """
    from auditor.gate import gate_verdict

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if report.evidence_dir and report.artifacts and Path(report.evidence_dir).resolve() != out.resolve():
        shutil.copytree(Path(report.evidence_dir) / "artifacts", out / "artifacts", dirs_exist_ok=True)
    written: dict[str, Path] = {"results": report.save(out)}
    written.update({f"spuriosity_{split}": out / f"spuriosity_{split}.npy" for split in report.rankings})
    results = report.to_dict()
    if gate is None and report.config.gate.fail_on:
        gate = gate_verdict(results, report.config.gate.fail_on)
        if "error" in gate:
            logger.warning("%s", gate["reason"])
    if gate is not None:
        results["gate"] = gate
        written["results"].write_text(json.dumps(results, indent=2))
    if report.config.report.html:
        from auditor.report.html import render_html

        written["html"] = render_html(results, out, out / "report.html")
    return written
