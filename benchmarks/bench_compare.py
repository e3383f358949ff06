"""Bias across models on the built-in world: differently seeded CNNs measured on one audit's rankings.

Audits the seed-0 demo CNN, then measures the CNNs trained with the other seeds on its
validation spuriosity ranking (``report.compare``), and prints the paper's cross-model
analyses: per model accuracy on low/high-spuriosity images and effective robustness, the mean
pairwise class-wise gap correlation, the variance ratio of gaps across classes vs across
models, and the classes whose gap averaged over the models is significantly negative.
The report with its "Bias across models" section is written to ``--output-dir``.

Usage:
    python benchmarks/bench_compare.py                 # the demo world (64 px), seeds 0, 1, 2
    python benchmarks/bench_compare.py --quick         # the 32 px quick world
    python benchmarks/bench_compare.py --quick --with-tuned   # plus the audited CNN with its tuned head
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from auditor import audit
from auditor.api import write_outputs
from auditor.demo.run import (
    DEMO_TRAINING,
    DEMO_WORLD,
    QUICK_CONFIG,
    QUICK_TRAINING,
    QUICK_WORLD,
)
from auditor.demo.world.dataset import WorldDataset
from auditor.demo.world.train import load_or_train_model, load_split


def fmt(value, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="use the small 32 px world")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds; the first model is audited")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output-dir", default=None, help="write results.json and report.html here")
    parser.add_argument("--with-tuned", action="store_true",
                        help="also compare the audited model with its low-spuriosity-tuned head (a model that does better on cue-free images)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    world, training = (QUICK_WORLD, QUICK_TRAINING) if args.quick else (DEMO_WORLD, DEMO_TRAINING)
    start = time.perf_counter()
    models = {seed: load_or_train_model(world, dataclasses.replace(training, seed=seed), progress=False) for seed in args.seeds}
    train, val = WorldDataset(load_split(world, "train")), WorldDataset(load_split(world, "val"))
    config = {"progress": False, **(QUICK_CONFIG if args.quick else {})}
    audited_seed, *others = args.seeds
    report = audit(models[audited_seed], train, val, class_names=world.class_names, config=config)
    compared = {f"seed {seed}": models[seed] for seed in others}
    if args.with_tuned:
        compared[f"seed {audited_seed}, low-spuriosity head"] = report.tuned_model
    section = report.compare(compared, val)
    seconds = time.perf_counter() - start
    if args.output_dir:
        written = write_outputs(report, args.output_dir)
        print(f"report: {written.get('html', written['results'])}")

    print(f"world: {'quick (32 px)' if args.quick else 'demo (64 px)'}; audited: seed {audited_seed}; "
          f"compared: {', '.join(compared)}; {seconds:.0f} s\n")
    print("| model | accuracy | low-spuriosity acc. | high-spuriosity acc. | mean gap | effective robustness |")
    print("|---|---|---|---|---|---|")
    for model in section["models"]:
        name = f"seed {audited_seed} (audited)" if model["name"] == "audited model" else model["name"]
        print(f"| {name} | {fmt(model['accuracy'])} | {fmt(model['low_accuracy'])} | {fmt(model['high_accuracy'])} | "
              f"{fmt(model['mean_gap'], True)} | {fmt(model['effective_robustness'], True)} |")
    er, vr = section["effective_robustness"], section["variance_ratio"]
    print(f"\nline fitted across models: low = {fmt(er['slope'])} x high {fmt(er['intercept'], True)}")
    print(f"mean pairwise class-wise gap correlation r = {fmt(section['mean_correlation'])} over {len(section['classes'])} classes")
    print(f"variance of gaps across classes / across models = {fmt(vr['ratio'])} "
          f"(class variance {vr['class_variance']:.4f}, model variance {vr['model_variance']:.4f}; "
          f"{vr['n_models']} models x {vr['n_classes']} classes)" if vr["ratio"] is not None else f"variance ratio: n/a ({vr})")
    names = world.class_names
    print("\n| class | gap averaged over models [95% CI] | significant |")
    print("|---|---|---|")
    for c, gap in section["averaged_gaps"].items():
        print(f"| {names[int(c)]} | {fmt(gap['gap'], True)} [{fmt(gap['ci_low'], True)}, {fmt(gap['ci_high'], True)}] | "
              f"{'yes' if gap['significant'] else 'no'} |")
    negative = [names[c] for c in section["negative_gap_classes"]]
    print(f"\nclasses with a significantly negative averaged gap (label-noise candidates): {', '.join(negative) or 'none'}")


if __name__ == "__main__":
    main()
