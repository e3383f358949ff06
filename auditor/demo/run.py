"""``auditor demo``: audit a CNN trained on the generated world, and score the audit against the truth."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from auditor.api import audit, write_outputs
from auditor.config import load_config
from auditor.data import ImageSource
from auditor.demo.world.dataset import WorldDataset
from auditor.demo.world.evaluate import cue_aurocs, group_accuracies
from auditor.demo.world.generator import WorldSpec, WorldSplit
from auditor.demo.world.train import TrainSpec, load_or_train_model, load_split
from auditor.evaluation import head_predictions
from auditor.features import extract_features
from auditor.model import ModelAdapter
from auditor.report.audit_report import AuditReport

logger = logging.getLogger(__name__)

DEMO_WORLD = WorldSpec()
DEMO_TRAINING = TrainSpec()
# The quick world is for tests and smoke runs: 32 px, fewer images, and a 90% cue rate in
# training so that each cue class still has ~60 cue-free training images to tune on.
QUICK_WORLD = WorldSpec(image_size=32, n_train=600, n_val=120, n_test=150, cue_rate_train=0.9, object_scale=(0.18, 0.28))
QUICK_TRAINING = TrainSpec(epochs=12, width=16)
QUICK_CONFIG = {"verdicts": {"n_images": 12}, "gaps": {"n_bootstrap": 500}}


@dataclass
class DemoResult:
    """What the demo found and how it scores against the world's ground truth.

    Attributes:
        report: the audit report.
        world: the world's spec.
        truth: per class, the planted cue (or None) and whether the audit flagged a spurious feature.
        auroc: per cue class, AUROC of validation spuriosity against the cue flag.
        test: average and worst-group test accuracy of the original and each tuned head.
        written: paths of the files written.
    """

    report: AuditReport
    world: WorldSpec
    truth: dict[str, dict[str, Any]]
    auroc: dict[str, float]
    test: dict[str, dict[str, float]]
    written: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        """A readable summary for the terminal."""
        lines = ["Findings per class (validation gaps):", self.report.summary(), "", "Against the world's ground truth:"]
        for name, row in self.truth.items():
            cue = row["cue"] or "none (control)"
            verdict = "spurious feature found" if row["flagged"] else "no spurious feature"
            ok = "OK " if row["flagged"] == (row["cue"] is not None) else "MISS"
            lines.append(f"  [{ok}] {name:<10} planted cue: {cue:<16} audit: {verdict}")
        lines.append("  spuriosity AUROC vs cue flags (val): " + ", ".join(f"{k} {v:.3f}" for k, v in self.auroc.items()))
        lines.append("")
        lines.append(f"{'test set':<18}{'accuracy':>10}{'worst group':>13}")
        for name, row in self.test.items():
            lines.append(f"{name:<18}{row['accuracy']:>10.3f}{row['worst_group']:>13.3f}")
        for name, path in self.written.items():
            lines.append(f"wrote {name}: {path}")
        return "\n".join(lines)


def score_on_test(report: AuditReport, test: WorldSplit, world: WorldSpec) -> dict[str, dict[str, float]]:
    """Average and worst-group test accuracy of the original head and every tuned head (NeuronTune included)."""
    adapter = ModelAdapter(report.model, head=report.meta.get("head"))
    source = ImageSource(WorldDataset(test, with_masks=False), name="test")
    with tempfile.TemporaryDirectory() as tmp:
        cache = extract_features(adapter, source, Path(tmp) / "original", progress=False)
        activations = np.asarray(cache.activations)
    heads = {"original (ERM)": (adapter.head_weight().numpy(), adapter.head_bias().numpy()), **report.tuned_heads}
    scores = {}
    for name, (weight, bias) in heads.items():
        s = group_accuracies(head_predictions(activations, weight, bias), test, world)
        scores[name] = {"accuracy": s["accuracy"], "worst_group": s["worst_group"]}
    return scores


def run_demo(
    output_dir: str | Path | None = "auditor-demo",
    quick: bool = False,
    progress: bool = True,
    config: dict | None = None,
    concepts: bool = False,
) -> DemoResult:
    """Train (or load from cache) the demo CNN on the generated world, audit it, score the audit.

    Args:
        output_dir: where results.json / report.html go (None: write nothing).
        quick: use a small 32-pixel world with matching settings (:data:`QUICK_CONFIG`), for tests and smoke runs.
        progress: show progress bars.
        config: audit configuration overrides (dict form of :class:`AuditConfig`), merged per section.
        concepts: also run the concept stage with the project's tiny CLIP (trained on first use, cached).

    Returns:
        A :class:`DemoResult`.
    """
    world, training = (QUICK_WORLD, QUICK_TRAINING) if quick else (DEMO_WORLD, DEMO_TRAINING)
    model = load_or_train_model(world, training, progress=progress)
    splits = {name: load_split(world, name) for name in ("train", "val", "test")}
    settings = load_config(QUICK_CONFIG if quick else None).to_dict()
    if concepts:
        settings["concepts"].update(enabled=True, model_name="tiny-test" if quick else "tiny")
    for section, values in (config or {}).items():
        settings[section] = {**settings[section], **values} if isinstance(values, dict) else values
    settings["progress"] = progress
    report = audit(model, WorldDataset(splits["train"]), WorldDataset(splits["val"]), class_names=world.class_names, config=settings)

    truth = {
        name: {"cue": spec.cue, "flagged": bool(report.spurious_features(c))}
        for c, (name, spec) in enumerate(zip(world.class_names, world.classes))
    }
    auroc = cue_aurocs(report.spuriosity("val"), splits["val"], world)
    test = score_on_test(report, splits["test"], world)
    report.sections["demo_ground_truth"] = {"truth": truth, "auroc": auroc, "test": test}
    written = write_outputs(report, output_dir) if output_dir is not None else {}
    return DemoResult(report, world, truth, auroc, test, written)
