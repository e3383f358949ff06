"""Would an effect-size floor remove the false flags of faint cues? A replay on recorded evidence.

On rounds 18 and 19 most false flags are features of a faint grass cue: the grass backgrounds move them in the swaps,
but the class's own images do not separate by them (truth AUROC about 0.5-0.7). A flag whose background effect is
small against the feature's own spread within the class should predict that. This reads evidence JSONs of
``bench_proving_ground.py`` (cnn16, dataset masks), puts each flagged feature's reliance on the scale of its class's
spread (``reliance * examined_activation_mean / class_activation_std``, a Cohen's d), and prints how well that
separates the true flags from the false ones, and what each floor would remove.

Usage (from ``benchmarks/``)::

    python diag_effect_size.py proving_ground_evidence_class_medians.json proving_ground_evidence_held_out_r16_r17.json proving_ground_evidence_held_out_r18.json proving_ground_evidence_held_out_r19.json
"""
from __future__ import annotations

import argparse
import math

import numpy as np
from sklearn.metrics import roc_auc_score

from _common import load_records

RELIANCES = ("background_reliance", "swap_reliance", "class_swap_reliance", "swap_ci_low")
FLOORS = (0.25, 0.5, 0.75, 1.0)


def effect_size(record: dict, key: str) -> float:
    """The record's ``key`` reliance in units of its feature's spread over the class's training images (NaN if unknown)."""
    value = record.get(key)
    if value is None or not math.isfinite(value):
        return math.nan
    return value * record["examined_activation_mean"] / max(record["class_activation_std"], 1e-9)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evidence", nargs="+", help="evidence JSONs of bench_proving_ground.py")
    args = parser.parse_args(argv)
    records = [r for r in load_records(args.evidence)
               if r["masks"] == "dataset" and r["model"] == "cnn16" and "class_activation_std" in r]
    flagged = [r for r in records if r["label"] == "spurious"]
    truth = np.array([bool(r["truth"]) for r in flagged])
    print(f"{len(flagged)} flagged features of {len({r['world'] for r in records})} worlds: "
          f"{truth.sum()} true, {(~truth).sum()} false\n")
    print("| reliance | AUROC for truth among the flagged | " + " | ".join(f"d < {f:g}: true / false removed" for f in FLOORS) + " |")
    print("|---|---|" + "---|" * len(FLOORS))
    for key in RELIANCES:
        sizes = np.array([effect_size(r, key) for r in flagged])
        known = np.isfinite(sizes)
        cells = [f"{int((truth & known & (sizes < f)).sum())} / {int((~truth & known & (sizes < f)).sum())}" for f in FLOORS]
        print(f"| {key} | {roc_auc_score(truth[known], sizes[known]):.3f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
