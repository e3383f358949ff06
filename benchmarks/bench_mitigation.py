"""One table of mitigation methods on the generated world, mean ± std over training seeds.

For each seed a SmallCNN is trained by ERM (cached), audited once with head tuning (and
its baselines) and NeuronTune on, and every head is scored on the untouched test split:

* ``erm``: the model as trained;
* ``random`` / ``error`` / ``low_spuriosity``: the audit's head tuning (``auditor.tuning``)
  with images chosen at random, misclassified first, or least spurious first; with
  validation data, ``low_spuriosity`` also fits on half of validation (label-free) and
  selects on the other half;
* ``neurontune``: the audit's NeuronTune head (``auditor.neurontune``);
* ``oracle_dfr``: Deep Feature Reweighting with the *true* group labels on validation
  (Kirichenko et al., 2023; ``_common.oracle_dfr``): the bar, which real users cannot run.

Groups: class x own cue present (control classes: class x any cue present). Metrics:
average accuracy, worst-group accuracy, mean spurious gap (the audit's spurious features
scored on test features), seconds of the audit's tuning stage per method.

``--skewed-val`` draws validation at the *training* cue rates (as real validation data
usually is) instead of the balanced evaluation rates.

Usage::

    python benchmarks/bench_mitigation.py --seeds 0 1 2                 # quick 32 px world
    python benchmarks/bench_mitigation.py --seeds 0 1 2 --skewed-val
    python benchmarks/bench_mitigation.py --world demo --seeds 0 1 2    # the 64 px demo world (slow)
    python benchmarks/bench_mitigation.py --noise-preset noisy_square   # cropping check only
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    group_accuracy,
    head_of,
    oracle_dfr,
    report_adapter,
    skewed_val_spec,
    split_cache,
)
from auditor.api import audit
from auditor.config import load_config
from auditor.demo.run import (
    DEMO_TRAINING,
    DEMO_WORLD,
    QUICK_CONFIG,
    QUICK_TRAINING,
    QUICK_WORLD,
)
from auditor.demo.world.dataset import WorldDataset
from auditor.demo.world.evaluate import group_ids
from auditor.demo.world.generator import WorldSpec
from auditor.demo.world.train import load_or_train_model, load_split
from auditor.evaluation import gap_values, head_predictions
from auditor.labeling import spurious_by_class
from auditor.ranking import spuriosity_scores

METHODS = ("erm", "random", "error", "low_spuriosity", "neurontune", "oracle_dfr")


def evaluate_head(weight, bias, activations, labels, groups, scores, gap_config) -> dict:
    """Average accuracy, worst-group accuracy and mean spurious gap of a head on cached features."""
    predictions = head_predictions(activations, weight, bias)
    accuracy, worst = group_accuracy(predictions, labels, groups)
    gaps = [g for g in gap_values(scores, labels, predictions == labels, gap_config).values() if np.isfinite(g)]
    return {"accuracy": accuracy, "worst_group_accuracy": worst, "mean_gap": float(np.mean(gaps)) if gaps else float("nan")}


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


def run_seed(seed: int, world: WorldSpec, training, base_config: dict, work: Path, skewed_val: bool,
             discovery: bool, overrides: dict) -> tuple[dict, dict, dict]:
    """Train (or load) one model, audit it, score every head; (method -> metrics, discovery purity, tuning info)."""
    model = load_or_train_model(world, dataclasses.replace(training, seed=seed), progress=False)
    train, test = load_split(world, "train"), load_split(world, "test")
    val = load_split(skewed_val_spec(world), "train") if skewed_val else load_split(world, "val")
    config = load_config(base_config).to_dict()
    config.update(seed=seed, progress=False)
    config["features"] = {**config["features"], "cache_dir": str(work)}
    config["tuning"] = {**config["tuning"], "enabled": True, "baselines": ["random", "error"]}
    config["neurontune"] = {**config["neurontune"], "enabled": True}
    config["discovery"] = {**config["discovery"], "enabled": discovery}
    for section, values in overrides.items():
        config[section] = {**config[section], **values}
    report = audit(model, WorldDataset(train), WorldDataset(val), class_names=world.class_names, config=config)
    adapter = report_adapter(report)
    _, val_cache = split_cache(adapter, WorldDataset(val), "val", work)
    _, test_cache = split_cache(adapter, WorldDataset(test, with_masks=False), "test", work)
    test_acts, test_labels = np.asarray(test_cache.activations), np.asarray(test_cache.labels)
    test_groups = group_ids(test, world)
    test_scores = spuriosity_scores(test_acts, test_labels, spurious_by_class(report.verdicts))
    gap_config = report.config.gaps

    def score(weight, bias):
        return evaluate_head(weight, bias, test_acts, test_labels, test_groups, test_scores, gap_config)

    rows = {"erm": {**score(*head_of(adapter)), "seconds": 0.0}}
    for method in ("random", "error", "low_spuriosity"):
        rows[method] = {**score(*report.tuned_heads[method]), "seconds": report.tuning[method].seconds}
    neurontune = report.sections["neurontune"]
    rows["neurontune"] = {**score(*report.tuned_heads["neurontune"]), "seconds": neurontune["seconds"],
                          "n_suppressed": neurontune["n_suppressed"]}
    start = time.perf_counter()
    weight, bias = oracle_dfr(np.asarray(val_cache.activations), np.asarray(val_cache.labels), group_ids(val, world), seed=seed)
    rows["oracle_dfr"] = {**score(weight, bias), "seconds": time.perf_counter() - start}
    info = {"low_spuriosity": {k: v for k, v in report.tuning["low_spuriosity"].after.items() if k in ("fitted_on", "evaluated_on", "grouping", "inverse_l2")},
            "neurontune": {k: neurontune.get(k) for k in ("n_suppressed", "n_over_threshold", "fallback") if k in neurontune},
            "spurious_features": {report.class_names[c]: report.spurious_features(c) for c in range(len(report.class_names))}}
    purity = discovery_purity(report, world, val) if discovery else {}
    return rows, purity, info


def noise_check(preset: str, n_flagged: int) -> None:
    """Cropping on a preset world's last class (the noisy/colliding one), whatever the sign of its gap.

    Prints the class's gap, then for its ``n_flagged`` highest-spuriosity validation images and
    for all its misclassified validation images: how many are misclassified and how many
    return to the label when cropped to the object mask (+20%, square).
    """
    from auditor.demo.world.presets import (
        load_or_train_preset_model,
        load_preset_split,
        world_preset,
    )
    from auditor.noise import crop_and_predict, flag_images

    spec = world_preset(preset)
    model = load_or_train_preset_model(preset)
    train, val = load_preset_split(preset, "train"), load_preset_split(preset, "val")
    work = tempfile.mkdtemp(prefix="bench-noise-")
    report = audit(model, WorldDataset(train), WorldDataset(val), class_names=spec.class_names,
                   config={"progress": False, "tuning": {"enabled": False}, "features": {"cache_dir": work}})
    adapter = report_adapter(report)
    val_source, val_cache = split_cache(adapter, WorldDataset(val), "val", work)
    c = len(spec.classes) - 1
    estimate = report.gaps.get(c)
    print(f"noise check on preset {preset!r}, class {spec.class_names[c]!r}: val gap "
          f"{estimate.gap:+.3f} [{estimate.ci_low:+.3f}, {estimate.ci_high:+.3f}]" if estimate else "no gap")
    wrong = np.flatnonzero((val_cache.labels == c) & ~val_cache.correct)
    for (name, indices), mode in itertools.product(
        (("top-spuriosity", flag_images(report.rankings["val"], val_cache.labels, c, n_flagged)), ("all misclassified", wrong)),
        ("resize", "in_place"),
    ):
        name = f"{name}, {mode}"
        records = crop_and_predict(adapter, val_source, indices, c, report.core_features(c), None,
                                   expand=0.2, thumbnails=False, mode=mode)
        missed = [r for r in records if r["prediction"] != r["label"]]
        fixed = sum(r["fixed"] for r in missed)
        tree = val.cue_flag("tree")[[r["index"] for r in missed]] if missed else np.zeros(0, bool)
        fixed_tree = sum(r["fixed"] for r, t in zip(missed, tree) if t)
        print(f"  {name:<28} {len(records):4d} images, {len(missed):4d} misclassified, {fixed:4d} fixed by cropping "
              f"({fixed / max(len(missed), 1):.0%}); with the tree cue: {int(tree.sum())} misclassified, {fixed_tree} fixed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--world", choices=("quick", "demo"), default="quick",
                        help="quick: the 32 px test world (default); demo: the 64 px demo world")
    parser.add_argument("--skewed-val", action="store_true", help="validation drawn at the training cue rates")
    parser.add_argument("--discovery", action="store_true", help="also score cue discovery (slower)")
    parser.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=JSON",
                        help="audit config overrides, e.g. tuning.validation_fraction=0.5")
    parser.add_argument("--work-dir", default=None, help="keep the feature caches here (reruns reuse them)")
    parser.add_argument("--json", type=str, default=None, help="also write the per-seed numbers here")
    parser.add_argument("--noise-preset", type=str, default=None, help="only run the cropping check on this world preset")
    parser.add_argument("--n-flagged", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.ERROR)
    if args.noise_preset:
        noise_check(args.noise_preset, args.n_flagged)
        return
    world, training, base = (QUICK_WORLD, QUICK_TRAINING, QUICK_CONFIG) if args.world == "quick" else (DEMO_WORLD, DEMO_TRAINING, None)
    # the quick demo config halves tuning.n_per_class for speed in tests; the benchmark measures the library's defaults
    base = {section: values for section, values in (base or {}).items() if section != "tuning"}
    overrides: dict = {}
    for item in args.set:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        overrides.setdefault(section, {})[name] = json.loads(value)
    per_seed, purity, info = {}, {}, {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-mitigation-") as tmp:
        root = Path(args.work_dir) if args.work_dir else Path(tmp)
        for seed in args.seeds:
            work = root / f"{args.world}-{'skewed' if args.skewed_val else 'balanced'}-seed{seed}"
            per_seed[seed], purity[seed], info[seed] = run_seed(seed, world, training, base, work, args.skewed_val,
                                                                args.discovery, overrides)
    metrics = ("accuracy", "worst_group_accuracy", "mean_gap", "seconds")
    print(f"world: {args.world} (image_size={world.image_size}, n_train={world.n_train}/class, cue rate {world.cue_rate_train}); "
          f"validation: {'skewed (training cue rates)' if args.skewed_val else 'balanced'}; seeds {args.seeds}; "
          f"overrides {overrides or 'none'}; test split; mean ± std over seeds")
    print("| method | avg acc | worst-group acc | mean gap | seconds |\n|---|---|---|---|---|")
    for method in METHODS:
        cells = []
        for metric in metrics:
            values = np.array([per_seed[s][method][metric] for s in args.seeds], np.float64)
            cells.append(f"{values.mean():.3f} ± {values.std():.3f}" if metric != "seconds" else f"{values.mean():.2f}")
        print(f"| {method} | " + " | ".join(cells) + " |")
    for seed in args.seeds:
        print(f"seed {seed}: {info[seed]}")
    if args.discovery:
        print("discovery, purest cluster per cue class (share with the class's cue):")
        for name in next(iter(purity.values())):
            values = [purity[s][name] for s in args.seeds]
            print(f"  {name:<10} " + "  ".join(f"{v:.2f}" for v in values) + f"   mean {np.nanmean(values):.2f}")
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"per_seed": per_seed, "purity": purity, "info": info}, indent=2, default=str))


if __name__ == "__main__":
    main()
