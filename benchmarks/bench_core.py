"""Core audit quality on the generated world: verdicts, spuriosity AUROC, tuning vs baselines.

Trains (or loads from cache) the demo CNN, runs ``auditor.audit`` with default settings,
and prints, side by side from one run:

* per class: the planted cue, whether a spurious feature was found, validation AUROC of
  spuriosity against the cue flags, and the validation gap with its CI;
* on the held-out test set: average and worst-group accuracy (groups = class x own cue
  present; for controls class x any cue) of the ERM head and of each tuned head.

Usage:
    python benchmarks/bench_core.py            # the demo world (64 px, 2,000 train images per class)
    python benchmarks/bench_core.py --quick    # the 32 px test world
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from auditor.demo import run_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="use the small 32 px world")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    result = run_demo(output_dir=None, quick=args.quick, progress=False)
    seconds = time.perf_counter() - start
    report = result.report

    print(f"world: {'quick (32 px)' if args.quick else 'demo (64 px)'}; audit + training/loading: {seconds:.0f} s\n")
    print("| class | planted cue | spurious features found | val AUROC vs cue | val gap [95% CI] |")
    print("|---|---|---|---|---|")
    for c, name in enumerate(result.world.class_names):
        truth = result.truth[name]
        gap = report.gaps.get(c)
        gap_text = "n/a" if gap is None or math.isnan(gap.gap) else f"{gap.gap:+.3f} [{gap.ci_low:+.3f}, {gap.ci_high:+.3f}]"
        auroc = result.auroc.get(name)
        auroc_text = "n/a" if auroc is None else f"{auroc:.3f}"
        print(f"| {name} | {truth['cue'] or 'none (control)'} | {report.spurious_features(c) or 'none'} | {auroc_text} | {gap_text} |")

    print("\n| head (test set) | average accuracy | worst-group accuracy | change in worst group | change in average |")
    print("|---|---|---|---|---|")
    base = result.test["original (ERM)"]
    for name, row in result.test.items():
        print(
            f"| {name} | {row['accuracy']:.3f} | {row['worst_group']:.3f} | "
            f"{100 * (row['worst_group'] - base['worst_group']):+.1f} pts | {100 * (row['accuracy'] - base['accuracy']):+.1f} pts |"
        )
    print("\n| tuning method | images | epochs kept | early-stopped | val max gap before -> after | seconds |")
    print("|---|---|---|---|---|---|")
    for name, tuning in report.tuning.items():
        print(
            f"| {name} | {tuning.n_train_images} | {tuning.epochs} | {tuning.stopped_early} | "
            f"{tuning.before['max_gap']:.3f} -> {tuning.after['max_gap']:.3f} | {tuning.seconds:.1f} |"
        )


if __name__ == "__main__":
    main()
