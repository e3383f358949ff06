"""Vision-language benchmark (issue 4): dataset masks vs tiny-SAM masks, and tiny-CLIP concepts.

On the project's generated world (64 px, default spec), the demo CNN is audited twice with
the concept stage on: once with the dataset's object masks, once with a dataset that has no
masks (``masks.provider: sam`` with the tiny SAM, candidates chosen by the tiny CLIP).
Printed side by side:

* precision / recall of "spurious" verdicts against the known cues: an important
  (class, feature) is truly spurious when it belongs to a cue class and its activation on
  the class's validation images separates images with and without the class's cue
  (ROC AUC >= 0.75); control classes have no truly spurious feature;
* mean IoU of the masks used for the verdicts against the true object masks;
* concept findings: per class, the kept (spurious) concepts; concept precision / recall
  against the cue's own concepts; and the tiny CLIP's zero-shot retrieval quality.

Run: ``HF_HUB_OFFLINE=1 python benchmarks/bench_vision_language.py`` (trains and caches the
tiny models on first use; ~5-15 min on 2 shared CPU cores when cached models exist).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import report_adapter, split_cache
from auditor.api import audit
from auditor.demo.world.dataset import WorldDataset
from auditor.demo.world.generator import WorldSpec
from auditor.demo.world.train import TrainSpec, load_or_train_model, load_split
from auditor.demo.zoo.tiny_clip import (
    TinyClipSpec,
    evaluate_tiny_clip,
    load_or_train_tiny_clip,
)
from auditor.demo.zoo.tiny_sam import load_or_train_tiny_sam

CUE_CONCEPTS = {
    "stripes": {"striped background", "stripes", "a striped pattern"},
    "tree": {"a tree", "a small tree"},
    "warm": {"warm orange light", "warm light", "orange colour"},
}


def truly_spurious(report, val, spec: WorldSpec, val_cache, threshold: float = 0.75) -> dict[tuple[int, int], bool]:
    """Ground truth per important (class, feature): does the feature track the class's own cue?"""
    acts = np.asarray(val_cache.activations)
    truth = {}
    for c, features in report.important_features.items():
        cue = spec.cue_of_class.get(c)
        for f in features:
            if cue is None:
                truth[(c, f)] = False
                continue
            members = val.true_labels == c
            auc = roc_auc_score(val.cue_flag(cue)[members], acts[members, f])
            truth[(c, f)] = bool(auc >= threshold)
    return truth


def verdict_scores(report, truth) -> dict[str, float]:
    predicted = {(v.class_index, v.feature): v.label == "spurious" for v in report.verdicts}
    tp = sum(predicted[k] and truth[k] for k in truth)
    fp = sum(predicted[k] and not truth[k] for k in truth)
    fn = sum(truth[k] and not predicted[k] for k in truth)
    return {
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "n_spurious_verdicts": tp + fp,
        "n_truly_spurious": tp + fn,
    }


def mask_provider_of(report, train_source, work: str):
    """The audit's mask backend, rebuilt from its config (``masks.provider: auto`` resolved as the audit does)."""
    from auditor.masks import MASK_PROVIDERS

    config = report.config
    name = config.masks.provider
    if name == "auto":
        name = "dataset" if train_source.has_masks else "sam"
    encoder = None
    if config.concepts.enabled:
        from auditor.concepts.stage import create_encoder

        encoder = create_encoder(config.concepts, "cpu")
    return MASK_PROVIDERS.build(name, source=train_source, config=config.masks, class_names=report.class_names,
                                cache_dir=Path(config.masks.cache_dir) if config.masks.cache_dir else Path(work) / "masks",
                                concept_encoder=encoder, device="cpu")


def mask_iou(report, train, train_source, provider) -> float:
    """Mean IoU, against the true object masks, of the masks the audit's backend gives the verdict images."""
    indices = sorted({i for v in report.verdicts for i in v.image_indices})
    images, labels, _ = train_source.load(indices)
    masks = provider.masks(train_source.unit_images(images), labels.numpy(), np.asarray(indices))
    truth = train.masks[indices]
    inter = (masks & truth).sum((1, 2))
    union = (masks | truth).sum((1, 2))
    return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))


def concept_scores(report, spec: WorldSpec) -> dict[str, object]:
    section = report.sections.get("concepts", {})
    classes = section.get("classes", {})
    kept_total, kept_right, found = 0, 0, 0
    per_class = {}
    for c, name in enumerate(spec.class_names):
        kept = classes.get(name, {}).get("spurious", [])
        cue = spec.cue_of_class.get(c)
        right = [k for k in kept if cue and k in CUE_CONCEPTS[cue]]
        kept_total += len(kept)
        kept_right += len(right)
        found += bool(right)
        per_class[name] = kept[:4]
    n_cue = len(spec.cue_of_class)
    return {
        "concept_precision": kept_right / kept_total if kept_total else float("nan"),
        "concept_recall": found / n_cue,
        "controls_clean": all(not classes.get(spec.class_names[c], {}).get("spurious") for c in range(len(spec.classes)) if c not in spec.cue_of_class),
        "kept": per_class,
    }


def naming_accuracy(report, truth, spec: WorldSpec) -> float:
    """Fraction of truly spurious features whose top CLIP names include one of the class cue's concepts."""
    hits = [bool(set(v.concept_names) & CUE_CONCEPTS[spec.cue_of_class[v.class_index]])
            for v in report.verdicts if truth[(v.class_index, v.feature)]]
    return float(np.mean(hits)) if hits else float("nan")


def feature_names(report, truth) -> dict[str, list[str]]:
    return {f"{report.class_names[v.class_index]}:{v.feature}{'*' if truth[(v.class_index, v.feature)] else ''}": v.concept_names
            for v in report.verdicts if v.label == "spurious"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points-per-side", type=int, default=8)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)

    spec = WorldSpec()
    t0 = time.perf_counter()
    model = load_or_train_model(spec, TrainSpec(), progress=False)
    clip_name, clip_path = load_or_train_tiny_clip(TinyClipSpec())
    sam_path = load_or_train_tiny_sam()
    setup_s = time.perf_counter() - t0
    train, val, test = (load_split(spec, s) for s in ("train", "val", "test"))

    base = {
        "progress": False,
        "tuning": {"enabled": False},
        "concepts": {"enabled": True, "backend": "open_clip", "model_name": clip_name, "pretrained": str(clip_path)},
    }
    runs = {}
    for label, with_masks, masks_cfg in [
        ("dataset masks", True, {"provider": "dataset"}),
        ("SAM masks", False, {"provider": "auto", "sam_model_type": "tiny", "sam_checkpoint": str(sam_path),
                              "points_per_side": args.points_per_side}),
    ]:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="bench-vl-") as work:
            config = {**base, "masks": masks_cfg, "features": {"cache_dir": work}}
            report = audit(model, WorldDataset(train, with_masks=with_masks), WorldDataset(val, with_masks=False),
                           class_names=spec.class_names, config=config)
            seconds = time.perf_counter() - start
            adapter = report_adapter(report)
            train_source, _ = split_cache(adapter, WorldDataset(train, with_masks=with_masks), "train", work)
            _, val_cache = split_cache(adapter, WorldDataset(val, with_masks=False), "val", work)
            truth = truly_spurious(report, val, spec, val_cache)
            iou = mask_iou(report, train, train_source, mask_provider_of(report, train_source, work))
        runs[label] = {
            **verdict_scores(report, truth),
            "mask_iou": iou,
            **concept_scores(report, spec),
            "spurious_features": {spec.class_names[c]: report.spurious_features(c) for c in range(len(spec.classes))},
            "feature_names": feature_names(report, truth),
            "naming_accuracy": naming_accuracy(report, truth, spec),
            "provider": report.meta["mask_provider"],
            "seconds": round(seconds, 1),
        }

    from auditor.concepts.open_clip_backend import OpenClipEncoder

    encoder = OpenClipEncoder(clip_name, str(clip_path))
    retrieval = evaluate_tiny_clip(encoder.model, encoder.tokenizer, test)

    rows = [("precision (spurious verdicts)", "precision"), ("recall (spurious verdicts)", "recall"),
            ("# spurious verdicts / # truly spurious", None), ("mean mask IoU vs true masks", "mask_iou"),
            ("concept precision", "concept_precision"), ("concept recall (cue classes)", "concept_recall"),
            ("control classes clean (concepts)", "controls_clean"),
            ("truly spurious features named by their cue", "naming_accuracy"), ("audit seconds", "seconds")]
    names = list(runs)
    print(f"{'metric':42s} " + " ".join(f"{n:>15s}" for n in names))
    for title, key in rows:
        if key is None:
            values = [f"{r['n_spurious_verdicts']} / {r['n_truly_spurious']}" for r in runs.values()]
        else:
            values = [f"{r[key]:.3f}" if isinstance(r[key], float) else str(r[key]) for r in runs.values()]
        print(f"{title:42s} " + " ".join(f"{v:>15s}" for v in values))
    for n, r in runs.items():
        print(f"\n[{n}] spurious features: {r['spurious_features']}")
        print(f"[{n}] kept concepts: {r['kept']}")
        print(f"[{n}] names of spurious features (* = truly spurious): {r['feature_names']}")
    print("\ntiny CLIP zero-shot retrieval on the audited world's test split (1500 images):")
    for k, v in retrieval.items():
        print(f"  {k:28s} {v:.3f}")
    print(f"\nsetup (model/tiny-model load or training): {setup_s:.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"runs": runs, "retrieval": retrieval}, fh, indent=2, default=str)


if __name__ == "__main__":
    main()
