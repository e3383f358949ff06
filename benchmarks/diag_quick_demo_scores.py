"""The quick demo world's cue classes ranked three ways, over audit seeds: the mean score, the cue direction, and both.

``ranking.feature_score: cue_direction`` beats the mean score on 42 of 43 proving worlds but not on the test suite's
quick demo world, whose ``square`` carries a small tree (``benchmarks/RESULTS.md``, "The cue direction against the
clean classes"). This audits that world with ``feature_score: cue_direction`` for each ``seed`` (which draws other
donors), recomputes the mean score from the same verdicts, and prints each cue class's validation AUROC for the mean
score, the cue direction (ridge 0.01) and the sum of the two, each z-scored within the class.

Usage (from ``benchmarks/``; the quick demo model is trained on first use and cached)::

    python diag_quick_demo_scores.py --seeds 0 1 2
"""
from __future__ import annotations

import argparse

import numpy as np
from sklearn.metrics import roc_auc_score

from _common import split_activations
from auditor.demo.run import QUICK_TRAINING, QUICK_WORLD, run_demo
from auditor.demo.world.train import load_or_train_model, load_split
from auditor.labeling import spurious_by_class
from auditor.ranking import direction_scores, pooled_covariance, spuriosity_scores

RIDGE = 0.01


def zscored(values: np.ndarray) -> np.ndarray:
    """``values`` float ``(N,)`` centred and scaled to unit spread."""
    return (values - values.mean()) / values.std()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="audit seeds (the donors drawn)")
    args = parser.parse_args(argv)
    model = load_or_train_model(QUICK_WORLD, QUICK_TRAINING, progress=False)
    train, val = load_split(QUICK_WORLD, "train"), load_split(QUICK_WORLD, "val")
    train_acts, val_acts = split_activations(model, train), split_activations(model, val)
    covariance = pooled_covariance(train_acts, train.labels)
    print("| seed | class | mean score | cue direction | sum of both |")
    print("|---|---|---|---|---|")
    for seed in args.seeds:
        report = run_demo(output_dir=None, quick=True, progress=False,
                          config={"seed": seed, "ranking": {"feature_score": "cue_direction"}}).report
        directions = {int(c): np.asarray(d) for c, d in report.sections["ranking"]["cue_directions"].items()}
        mean = spuriosity_scores(val_acts, val.labels, spurious_by_class(report.verdicts))
        direction = direction_scores(val_acts, val.labels, directions, covariance, RIDGE)
        for c, spec in enumerate(QUICK_WORLD.classes):
            if spec.cue is None or c not in directions:
                continue
            members = val.labels == c
            flags = val.cue_flag(spec.cue)[members]
            both = zscored(mean[members]) + zscored(direction[members])
            cells = [roc_auc_score(flags, x) for x in (mean[members], direction[members], both)]
            print(f"| {seed} | {QUICK_WORLD.class_names[c]} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")


if __name__ == "__main__":
    main()
