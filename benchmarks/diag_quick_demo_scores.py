"""The quick demo world's cue classes ranked by the mean score, the cue direction and their filtered and blended forms.

``ranking.feature_score: cue_direction`` beats the mean score on 42 of 43 proving worlds but not on the test suite's
quick demo world, whose ``square`` carries a small tree (``benchmarks/RESULTS.md``, "The cue direction against the
clean classes"). This audits that world with ``feature_score: cue_direction`` for each ``seed`` (which draws other
donors), recomputes the mean score from the same verdicts, and prints each cue class's validation AUROC for the mean
score, the cue direction (ridge 0.01), the sum of the two (each z-scored within the class), the direction filtered in
the eigenbasis of the covariance (``_common.eigen_denoised_weights``, gain power 2) and its sum with the mean score; and,
as a bound that uses the truth, the direction measured with the true cue flags (the mean features of the class's
training images with the cue minus those without, whitened the same way).

``--explain`` also prints, per seed and cue class, why a direction ranks as it does: its cosine with the direction from
the true flags, the features that the whitened weights lean on most (their separation of the training images by the
cue, in standard deviations, and of the validation images, as AUROC), and the eigen-components that dominate the
weights (eigenvalue, the measured and the true direction's component, and the validation AUROC along each).

Usage (from ``benchmarks/``; the quick demo model is trained on first use and cached)::

    python diag_quick_demo_scores.py --seeds 0 1 2 [--explain]
"""
from __future__ import annotations

import argparse

import numpy as np
from sklearn.metrics import roc_auc_score

from _common import blended_scores, eigen_denoised_weights, split_activations
from auditor.demo.run import QUICK_TRAINING, QUICK_WORLD, run_demo
from auditor.demo.world.train import load_or_train_model, load_split
from auditor.labeling import spurious_by_class
from auditor.ranking import (
    direction_scores,
    pooled_covariance,
    projection_scores,
    spuriosity_scores,
    whitened_directions,
)

RIDGE = 0.01


def explain(direction: np.ndarray, true_direction: np.ndarray, covariance: np.ndarray, train_acts: np.ndarray,
            train_flags: np.ndarray, val_acts: np.ndarray, val_flags: np.ndarray, top: int = 5) -> None:
    """Print why one class's direction ranks as it does (``--explain``): arrays of that class's images only."""
    spread = np.sqrt(np.diag(covariance))
    cosine = direction @ true_direction / (np.linalg.norm(direction) * np.linalg.norm(true_direction))
    weights = whitened_directions({0: direction}, covariance, RIDGE)[0]
    separation = (train_acts[train_flags].mean(0) - train_acts[~train_flags].mean(0)) / spread
    features = []
    for j in np.argsort(-np.abs(weights * spread))[:top]:
        auroc = roc_auc_score(val_flags, val_acts[:, j]) if val_acts[:, j].std() > 0 else 0.5
        features.append(f"{j} ({separation[j]:+.1f} sd, AUROC {auroc:.2f})")
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    ridge = RIDGE * np.trace(covariance) / len(eigenvalues)
    measured, true = eigenvectors.T @ direction, eigenvectors.T @ true_direction
    true = true * (direction @ true_direction) / (true_direction @ true_direction)  # on the measured direction's scale
    components = []
    for k in np.argsort(-np.abs(measured / (eigenvalues + ridge)))[:top]:
        auroc = roc_auc_score(val_flags, np.sign(measured[k]) * (val_acts @ eigenvectors[:, k]))
        components.append(f"eigenvalue {eigenvalues[k]:.4f}: {measured[k]:+.3f} vs {true[k]:+.3f}, AUROC {auroc:.2f}")
    print(f"    cosine with the true direction {cosine:.3f}; weights lean on features " + ", ".join(features))
    print(f"    eigenvalues {eigenvalues.min():.4f}-{eigenvalues.max():.3f} (mean variance {np.trace(covariance) / len(eigenvalues):.3f}); "
          "largest weighted components (measured vs true): " + "; ".join(components))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="audit seeds (the donors drawn)")
    parser.add_argument("--explain", action="store_true", help="print the features and eigen-components behind each score")
    args = parser.parse_args(argv)
    model = load_or_train_model(QUICK_WORLD, QUICK_TRAINING, progress=False)
    train, val = load_split(QUICK_WORLD, "train"), load_split(QUICK_WORLD, "val")
    train_acts, val_acts = split_activations(model, train), split_activations(model, val)
    covariance = pooled_covariance(train_acts, train.labels)
    flagged_directions = {}
    for c, spec in enumerate(QUICK_WORLD.classes):
        if spec.cue is not None:
            members, flags = train.labels == c, train.cue_flag(spec.cue)[train.labels == c]
            flagged_directions[c] = train_acts[members][flags].mean(0) - train_acts[members][~flags].mean(0)
    from_flags = direction_scores(val_acts, val.labels, flagged_directions, covariance, RIDGE)
    print("| seed | class | mean score | cue direction | sum of both | filtered direction | sum of mean and filtered "
          "| direction from the true flags |")
    print("|---|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        report = run_demo(output_dir=None, quick=True, progress=False,
                          config={"seed": seed, "ranking": {"feature_score": "cue_direction"}}).report
        directions = {int(c): np.asarray(d) for c, d in report.sections["ranking"]["cue_directions"].items()}
        mean = spuriosity_scores(val_acts, val.labels, spurious_by_class(report.verdicts))
        direction = direction_scores(val_acts, val.labels, directions, covariance, RIDGE)
        errors = {int(c): np.asarray(e) for c, e in report.sections["ranking"]["direction_errors"].items()}
        filtered = projection_scores(val_acts, val.labels,
                                     eigen_denoised_weights(directions, errors, covariance, RIDGE, power=2))
        filtered_sum = blended_scores(mean, filtered, val.labels)
        both = blended_scores(mean, direction, val.labels)
        for c, spec in enumerate(QUICK_WORLD.classes):
            if spec.cue is None or c not in directions:
                continue
            members = val.labels == c
            flags = val.cue_flag(spec.cue)[members]
            cells = [roc_auc_score(flags, x) for x in (mean[members], direction[members], both[members], filtered[members],
                                                        filtered_sum[members], from_flags[members])]
            print(f"| {seed} | {QUICK_WORLD.class_names[c]} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")
            if args.explain:
                explain(directions[c], flagged_directions[c], covariance, train_acts[train.labels == c],
                        train.cue_flag(spec.cue)[train.labels == c], val_acts[members], flags)


if __name__ == "__main__":
    main()
