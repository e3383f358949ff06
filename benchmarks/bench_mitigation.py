"""One table of mitigation methods on the generated world, averaged over training seeds.

For each seed a SmallCNN is trained by ERM on the default 64 px world (cached), audited
once, and its head is repaired by every method on the same cached features:

* ``erm``: the model as trained;
* ``random`` / ``error`` / ``low_spuriosity``: head tuning on 100 training images per
  class chosen at random, misclassified first, or least spurious first (``auditor.tuning``);
* ``neurontune``: biased dimensions suppressed, head retrained class-balanced (``auditor.neurontune``);
* ``group_balanced``: the head retrained on training features resampled so every
  group (class x own cue present; controls: class x any cue) counts equally, with the
  checkpoint of best validation worst-group accuracy: an upper reference that needs
  the true cue labels, which real users do not have.

Metrics are on the test split: average accuracy, worst-group accuracy, mean spurious
gap (the audit's rankings recomputed on test features), and tuning time. The same run
also scores cue discovery (purity of the purest cluster per cue class against the
ground-truth cue flags) on the validation images with their objects removed.

Usage::

    python benchmarks/bench_mitigation.py --seeds 0 1 2 [--json out.json]
    python benchmarks/bench_mitigation.py --noise-preset noisy_square   # cropping check only
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from auditor.api import _gap_values, audit
from auditor.data import ImageSource
from auditor.features import extract_features
from auditor.gaps import class_gaps
from auditor.labeling import spurious_by_class
from auditor.neurontune import neurontune_head
from auditor.ranking import spuriosity_scores
from auditor.tuning import fit_head, tune_head
from auditor.demo.world.dataset import WorldDataset
from auditor.demo.world.generator import WorldSpec
from auditor.demo.world.train import TrainSpec, load_or_train_model, load_split

METHODS = ("erm", "random", "error", "low_spuriosity", "neurontune", "group_balanced")


def groups(split, spec: WorldSpec) -> np.ndarray:
    """Group id per image: 2 * class + (own cue present; for controls: any cue present)."""
    out = np.zeros(len(split.labels), np.int64)
    for c, cls in enumerate(spec.classes):
        members = split.labels == c
        flag = split.cue_flag(cls.cue) if cls.cue else split.cues.any(1)
        out[members] = 2 * c + flag[members]
    return out


def evaluate_head(weight, bias, cache, group_ids, scores, gap_config) -> dict:
    """Accuracy, worst-group accuracy and mean spurious gap of a head on cached features."""
    predictions = (np.asarray(cache.activations, np.float64) @ np.asarray(weight, np.float64).T + bias).argmax(1)
    correct = predictions == cache.labels
    group_acc = [correct[group_ids == g].mean() for g in np.unique(group_ids)]
    gaps = class_gaps(scores, cache.labels, correct, gap_config, np.random.default_rng(0))
    finite = [g.gap for g in gaps.values() if np.isfinite(g.gap)]
    return {
        "accuracy": float(correct.mean()),
        "worst_group_accuracy": float(min(group_acc)),
        "mean_gap": float(np.mean(finite)) if finite else float("nan"),
    }


def group_balanced_head(ctx, train_groups, val_groups, epochs, lr, weight_decay, seed):
    """Upper reference: group-balanced resampling of training features, checkpoint by validation WGA."""
    rng = np.random.default_rng(seed)
    per_group = int(np.bincount(train_groups).max())
    chosen = np.concatenate([rng.choice(np.flatnonzero(train_groups == g), per_group, replace=True) for g in np.unique(train_groups)])
    weight, bias = ctx.adapter.head_weight().numpy(), ctx.adapter.head_bias().numpy()
    val_acts, val_labels = np.asarray(ctx.val_cache.activations, np.float64), ctx.val_cache.labels

    def wga(w, b):
        correct = (val_acts @ w.T + b).argmax(1) == val_labels
        return min(correct[val_groups == g].mean() for g in np.unique(val_groups))

    best = {"w": weight, "b": bias, "score": wga(weight, bias)}

    def should_stop(epoch, w, b):
        score = wga(w, b)
        if score > best["score"]:
            best.update(w=w, b=b, score=score)
        return False

    fit_head(ctx.train_cache.activations[chosen], ctx.train_cache.labels[chosen], weight, bias,
             epochs=epochs, lr=lr, weight_decay=weight_decay, should_stop=should_stop)
    return best["w"], best["b"]


def discovery_purity(report, spec: WorldSpec, val) -> dict[str, float]:
    """Per cue class: purity (share carrying the class's cue) of its purest cluster of >= 5 images."""
    section = report.sections["discovery"]
    out = {}
    for c, cls in enumerate(spec.classes):
        if cls.cue is None:
            continue
        clusters = [cl for cl in section["classes"][c]["clusters"] if cl["size"] >= 5]
        flags = val.cue_flag(cls.cue)
        out[cls.shape] = max((float(flags[cl["members"]].mean()) for cl in clusters), default=float("nan"))
    return out


def run_seed(seed: int, spec: WorldSpec, work: Path) -> tuple[dict, dict]:
    """Train (or load) one model, audit it, run every method; (method -> metrics, discovery purity)."""
    model = load_or_train_model(spec, TrainSpec(seed=seed), progress=False)
    train, val, test = (load_split(spec, s) for s in ("train", "val", "test"))
    config = {
        "seed": seed,
        "progress": False,
        "features": {"cache_dir": str(work / f"seed{seed}")},
        "tuning": {"enabled": False},
        "discovery": {"enabled": True},
    }
    report = audit(model, WorldDataset(train), WorldDataset(val), class_names=spec.class_names, config=config)
    ctx = report._context
    test_cache = extract_features(ctx.adapter, ImageSource(WorldDataset(test), name="test"), work / f"seed{seed}" / "test", progress=False)
    spurious = spurious_by_class(ctx.verdicts)
    test_scores = spuriosity_scores(test_cache.activations, test_cache.labels, spurious)
    test_groups = groups(test, spec)
    weight, bias = ctx.adapter.head_weight().numpy(), ctx.adapter.head_bias().numpy()
    tuning = ctx.config.tuning
    gap_fn = _gap_values(ctx, "val", ctx.spuriosity["val"])
    rows = {"erm": {**evaluate_head(weight, bias, test_cache, test_groups, test_scores, ctx.config.gaps), "seconds": 0.0}}
    for method in ("random", "error", "low_spuriosity"):
        start = time.perf_counter()
        _, w, b = tune_head(method, weight, bias, ctx.train_cache, ctx.spuriosity["train"], ctx.val_cache,
                            ctx.spuriosity["val"], gap_fn, tuning, np.random.default_rng(seed))
        rows[method] = {**evaluate_head(w, b, test_cache, test_groups, test_scores, ctx.config.gaps), "seconds": time.perf_counter() - start}
    nt = ctx.config.neurontune
    start = time.perf_counter()
    result = neurontune_head(ctx.train_cache.activations, ctx.train_cache.labels, ctx.val_cache.activations,
                             ctx.val_cache.labels, ctx.val_cache.predictions, weight, bias,
                             threshold=nt.threshold, combine=nt.combine, epochs=nt.epochs, lr=nt.lr,
                             weight_decay=tuning.weight_decay)
    rows["neurontune"] = {**evaluate_head(result["weight"], result["bias"], test_cache, test_groups, test_scores, ctx.config.gaps),
                          "seconds": time.perf_counter() - start, "n_suppressed": len(result["suppressed"])}
    start = time.perf_counter()
    w, b = group_balanced_head(ctx, groups(train, spec), groups(val, spec), nt.epochs, nt.lr, tuning.weight_decay, seed)
    rows["group_balanced"] = {**evaluate_head(w, b, test_cache, test_groups, test_scores, ctx.config.gaps), "seconds": time.perf_counter() - start}
    return rows, discovery_purity(report, spec, val)


def noise_check(preset: str, n_flagged: int) -> None:
    """Cropping on a preset world's last class (the noisy/colliding one), whatever the sign of its gap.

    Prints the class's gap, then for its ``n_flagged`` highest-spuriosity validation images and
    for all its misclassified validation images: how many are misclassified and how many
    return to the label when cropped to the object mask (+20%, square).
    """
    from auditor.noise import crop_and_predict, flag_images
    from auditor.demo.world.presets import load_or_train_preset_model, load_preset_split, world_preset

    spec = world_preset(preset)
    model = load_or_train_preset_model(preset)
    train, val = load_preset_split(preset, "train"), load_preset_split(preset, "val")
    report = audit(model, WorldDataset(train), WorldDataset(val), class_names=spec.class_names,
                   config={"progress": False, "tuning": {"enabled": False}})
    ctx = report._context
    c = len(spec.classes) - 1
    estimate = report.gaps.get(c)
    print(f"noise check on preset {preset!r}, class {spec.class_names[c]!r}: val gap "
          f"{estimate.gap:+.3f} [{estimate.ci_low:+.3f}, {estimate.ci_high:+.3f}]" if estimate else "no gap")
    wrong = np.flatnonzero((ctx.val_cache.labels == c) & ~ctx.val_cache.correct)
    for (name, indices), mode in itertools.product(
        (("top-spuriosity", flag_images(ctx.spuriosity["val"], ctx.val_cache.labels, c, n_flagged)), ("all misclassified", wrong)),
        ("resize", "in_place"),
    ):
        name = f"{name}, {mode}"
        records = crop_and_predict(ctx, "val", indices, c, 0.2, thumbnails=False, mode=mode)
        missed = [r for r in records if r["prediction"] != r["label"]]
        fixed = sum(r["fixed"] for r in missed)
        tree = val.cue_flag("tree")[[r["index"] for r in missed]] if missed else np.zeros(0, bool)
        fixed_tree = sum(r["fixed"] for r, t in zip(missed, tree) if t)
        print(f"  {name:<28} {len(records):4d} images, {len(missed):4d} misclassified, {fixed:4d} fixed by cropping "
              f"({fixed / max(len(missed), 1):.0%}); with the tree cue: {int(tree.sum())} misclassified, {fixed_tree} fixed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--n-train", type=int, default=WorldSpec().n_train, help="training images per class (default: the demo world's)")
    parser.add_argument("--json", type=str, default=None, help="also write the per-seed numbers here")
    parser.add_argument("--noise-preset", type=str, default=None, help="only run the cropping check on this world preset")
    parser.add_argument("--n-flagged", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.ERROR)
    if args.noise_preset:
        noise_check(args.noise_preset, args.n_flagged)
        return
    spec = dataclasses.replace(WorldSpec(), image_size=args.image_size, n_train=args.n_train)
    per_seed, purity = {}, {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-mitigation-") as tmp:
        for seed in args.seeds:
            per_seed[seed], purity[seed] = run_seed(seed, spec, Path(tmp))
    metrics = ("accuracy", "worst_group_accuracy", "mean_gap", "seconds")
    print(f"world: image_size={spec.image_size} n_train={spec.n_train}/class; seeds {args.seeds}; test split; mean ± std over seeds")
    print(f"{'method':<16}{'avg acc':>16}{'worst-group acc':>18}{'mean gap':>16}{'tuning s':>12}")
    for method in METHODS:
        cells = []
        for metric in metrics:
            values = np.array([per_seed[s][method][metric] for s in args.seeds], np.float64)
            cells.append(f"{values.mean():.3f} ± {values.std():.3f}" if metric != "seconds" else f"{values.mean():.2f}")
        print(f"{method:<16}{cells[0]:>16}{cells[1]:>18}{cells[2]:>16}{cells[3]:>12}")
    print("neurontune dimensions suppressed:", [per_seed[s]["neurontune"]["n_suppressed"] for s in args.seeds])
    print("discovery, purest cluster per cue class (share with the class's cue):")
    for name in next(iter(purity.values())):
        values = [purity[s][name] for s in args.seeds]
        print(f"  {name:<10} " + "  ".join(f"{v:.2f}" for v in values) + f"   mean {np.nanmean(values):.2f}")
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"per_seed": per_seed, "purity": purity}, indent=2))


if __name__ == "__main__":
    main()
