"""``audit(model, dataset)``: the one call that wires every stage together."""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from auditor.config import AuditConfig, load_config
from auditor.context import AuditContext
from auditor.data import ImageSource
from auditor.errors import ConfigError, InvalidInputError
from auditor.features import class_feature_importance, extract_features, top_features
from auditor.gaps import class_gaps
from auditor.labeling import label_features, spurious_by_class
from auditor.masks import MASK_PROVIDERS
from auditor.model import ModelAdapter, resolve_device
from auditor.ranking import spuriosity_scores
from auditor.report.audit_report import AuditReport, environment_meta
from auditor.tuning import tune_head

logger = logging.getLogger(__name__)


def _class_names(dataset: Dataset, class_names: Sequence[str] | None, n_classes: int) -> list[str]:
    if class_names is None:
        class_names = getattr(dataset, "classes", None) or [f"class_{i}" for i in range(n_classes)]
    class_names = [str(n) for n in class_names]
    if len(class_names) != n_classes:
        raise InvalidInputError(f"{len(class_names)} class names given but the model's head has {n_classes} outputs")
    return class_names


def _work_dir(config: AuditConfig) -> Path:
    if config.features.cache_dir:
        path = Path(config.features.cache_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path
    path = Path(tempfile.mkdtemp(prefix="auditor-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _head_name(model: nn.Module, config: AuditConfig) -> str | None:
    if config.model.head is not None:
        return config.model.head
    try:
        from auditor.adapters.models import guess_head_name
    except ImportError:
        return None
    return guess_head_name(model)


def _usable_classes(cache, n_classes: int, min_images: int, class_names: list[str]) -> tuple[list[int], dict[str, str]]:
    counts = np.bincount(cache.labels, minlength=n_classes)
    usable, skipped = [], {}
    for c in range(n_classes):
        if counts[c] < min_images:
            reason = f"{counts[c]} training images; at least {min_images} are needed (2 x gaps.min_k)"
            logger.warning("skipping class %r: %s", class_names[c], reason)
            skipped[class_names[c]] = reason
        else:
            usable.append(c)
    return usable, skipped


def _mask_provider(ctx: AuditContext):
    name = ctx.config.masks.provider
    if name == "auto":
        name = "dataset" if ctx.train.has_masks else "sam"
    return MASK_PROVIDERS.create(
        name,
        source=ctx.train,
        config=ctx.config.masks,
        class_names=ctx.class_names,
        cache_dir=ctx.work_dir / "masks",
        concept_encoder=ctx.concept_encoder,
        device=ctx.adapter.device,
    )


def _gap_values(ctx: AuditContext, split: str, scores: np.ndarray):
    labels = ctx.cache(split).labels
    config = dataclasses.replace(ctx.config.gaps, n_bootstrap=1)

    def gap_fn(correct: np.ndarray) -> dict[int, float]:
        gaps = class_gaps(scores, labels, correct, config, np.random.default_rng(0))
        return {c: g.gap for c, g in gaps.items()}

    return gap_fn


def audit(
    model: nn.Module,
    dataset: Dataset,
    val_dataset: Dataset | None = None,
    class_names: Sequence[str] | None = None,
    config: AuditConfig | dict | str | Path | None = None,
) -> AuditReport:
    """Audit a classifier for spurious features, rank images by spuriosity, and repair its head.

    Args:
        model: a trained classifier whose last ``nn.Linear`` (or ``config.model.head``) is the head.
            It is never modified: hooks are removed and its mode restored.
        dataset: map-style Dataset yielding ``(image, label)``, ``(image, label, mask)`` or dicts.
            Images go to the model exactly as yielded.
        val_dataset: optional validation data (recommended: gaps, early stopping and reported
            metrics use it; without it they use the training data).
        class_names: one per head output (default: ``dataset.classes`` or "class_i").
        config: AuditConfig, dict, YAML path or None for defaults.

    Returns:
        An :class:`AuditReport`.

    Raises:
        ConfigError: invalid configuration.
        InvalidInputError: empty dataset, labels outside the head's range, masks of the wrong size.
        UnsupportedModelError: no linear head.
        NumericalError: NaN/inf activations.
        MissingWeightsError: SAM/CLIP weights required but absent.

    Example:
        >>> report = audit(model, train_set, val_set)              # doctest: +SKIP
        >>> report.spurious_features(0), report.gaps[0].gap         # doctest: +SKIP
    """
    started = time.perf_counter()
    config = load_config(config)
    if config.ranking.source != "features" and not config.concepts.enabled:
        raise ConfigError(
            f"`ranking.source` is {config.ranking.source!r}, which needs the concept stage; "
            "set `concepts.enabled: true` (with local CLIP weights) or use `ranking.source: features`"
        )
    rng = np.random.default_rng(config.seed)
    device = resolve_device(config.model.device)
    adapter = ModelAdapter(model, head=_head_name(model, config), feature_layer=config.model.feature_layer, device=device)
    names = _class_names(dataset, class_names, adapter.n_classes)
    data_kwargs = dict(batch_size=config.data.batch_size, num_workers=config.data.num_workers, mean=config.data.mean, std=config.data.std)
    train = ImageSource(dataset, name="train", **data_kwargs)
    val = ImageSource(val_dataset, name="val", **data_kwargs) if val_dataset is not None else None
    work_dir = _work_dir(config)
    progress = config.progress

    train_cache = extract_features(adapter, train, work_dir / "features" / "train", progress=progress)
    val_cache = extract_features(adapter, val, work_dir / "features" / "val", progress=progress) if val is not None else None
    ctx = AuditContext(config, adapter, train, val, train_cache, val_cache, names, work_dir, rng)

    ctx.importance = class_feature_importance(train_cache.activations, train_cache.labels, adapter.head_weight().numpy())
    usable, skipped = _usable_classes(train_cache, adapter.n_classes, 2 * config.gaps.min_k, names)
    ranked = top_features(ctx.importance, config.features.top_k)
    ctx.important_features = {c: ranked[c] for c in usable}

    if config.concepts.enabled:
        from auditor.concepts.stage import create_encoder

        ctx.concept_encoder = create_encoder(config.concepts, device)
    ctx.mask_provider = _mask_provider(ctx)
    ctx.verdicts = label_features(adapter, train, train_cache, ctx.important_features, ctx.importance,
                                  ctx.mask_provider, config.verdicts, rng, progress=progress)
    spurious = spurious_by_class(ctx.verdicts)
    for split in ("train", "val") if val is not None else ("train",):
        cache = ctx.cache(split)
        ctx.spuriosity[split] = spuriosity_scores(cache.activations, cache.labels, spurious)

    if config.concepts.enabled:
        from auditor.concepts.stage import apply_concepts

        apply_concepts(ctx)

    split = ctx.eval_split
    eval_cache = ctx.cache(split)
    ctx.gaps = class_gaps(ctx.spuriosity[split], eval_cache.labels, eval_cache.correct, config.gaps, rng)

    tuning, tuned_heads, tuned_model = {}, {}, None
    if config.tuning.enabled:
        if val is None:
            logger.warning("no validation data: head tuning is early-stopped and reported on the training data")
        weight, bias = adapter.head_weight().numpy(), adapter.head_bias().numpy()
        gap_fn = _gap_values(ctx, split, ctx.spuriosity[split])
        for method in ["low_spuriosity", *config.tuning.baselines]:
            result, w, b = tune_head(method, weight, bias, train_cache, ctx.spuriosity["train"], eval_cache,
                                     ctx.spuriosity[split], gap_fn, config.tuning, np.random.default_rng(config.seed))
            tuning[method] = result
            tuned_heads[method] = (w, b)
            if method == "low_spuriosity":
                tuned_model = adapter.copy_with_head(torch.from_numpy(w), torch.from_numpy(b))

    extra_models = _run_optional_stages(ctx)
    report = AuditReport(
        class_names=names,
        config=config,
        important_features=ctx.important_features,
        verdicts=ctx.verdicts,
        gaps=ctx.gaps,
        tuning=tuning,
        tuned_model=tuned_model,
        sections=ctx.sections,
        meta={
            "seed": config.seed,
            "device": str(device),
            "evaluation_split": split,
            "n_train_images": len(train),
            "n_val_images": len(val) if val is not None else 0,
            "head": adapter.head_name,
            "spatial_layer": adapter._spatial_name or None,
            "mask_provider": type(ctx.mask_provider).__name__,
            "skipped_classes": skipped,
            "seconds": round(time.perf_counter() - started, 2),
            "versions": environment_meta(),
        },
        extra_models=extra_models,
        tuned_heads=tuned_heads,
        _spuriosity=ctx.spuriosity,
        _context=ctx,
    )
    if config.report.output_dir:
        write_outputs(report, config.report.output_dir)
    return report


def _run_optional_stages(ctx: AuditContext) -> dict[str, nn.Module]:
    models: dict[str, nn.Module] = {}
    if ctx.config.neurontune.enabled:
        from auditor.neurontune import run_neurontune

        ctx.sections["neurontune"], models["neurontune"] = run_neurontune(ctx)
    if ctx.config.discovery.enabled:
        from auditor.discovery import run_discovery

        ctx.sections["discovery"] = run_discovery(ctx)
    if ctx.config.noise.enabled:
        from auditor.noise import run_noise

        ctx.sections["noise"] = run_noise(ctx)
    if ctx.config.report.human_annotations:
        from auditor.annotations import human_annotations_section

        ctx.sections["human_agreement"] = human_annotations_section(ctx)
    return models


def write_outputs(report: AuditReport, output_dir: str | Path, gate: dict | None = None) -> dict[str, Path]:
    """Write results.json, the spuriosity arrays and (when configured) report.html with its images.

    Args:
        report: the audit report.
        output_dir: destination folder (created if needed).
        gate: a gate verdict to store; when None and ``config.gate.fail_on`` is set, it is evaluated here.

    Returns:
        Paths written, by name ("results", "html", "spuriosity_train", "spuriosity_val").
    """
    from auditor.gate import evaluate_gate

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = report.to_dict()
    if gate is None and report.config.gate.fail_on:
        passed, reason = evaluate_gate(results, report.config.gate.fail_on)
        gate = {"conditions": list(report.config.gate.fail_on), "passed": passed, "reason": reason}
    if gate is not None:
        results["gate"] = gate
    written: dict[str, Path] = {"results": out / "results.json"}
    for split, scores in report._spuriosity.items():
        written[f"spuriosity_{split}"] = out / f"spuriosity_{split}.npy"
        np.save(written[f"spuriosity_{split}"], scores)
    if report.config.report.html:
        from auditor.report.artifacts import write_artifacts
        from auditor.report.html import render_html

        results["artifacts"] = write_artifacts(report._context, report, out)
        written["html"] = render_html(results, out, out / "report.html")
    written["results"].write_text(json.dumps(results, indent=2))
    return written
