"""Is the gain of ``verdicts.image_selection: spread`` its images or its unit? A replay on recorded evidence.

A reliance is a fraction of the feature's mean activation on the examined images, and the mean over images
spread across the class's ranking is far smaller than over its top images. This rescales every reliance of the
``spread`` evidence to the top images' mean (computed from the cached model's training activations, the audit's
own cache; no cue flag is used) and chooses between it and ``top`` leave one world out, alone and jointly with
the reliance and swap thresholds (``bench_proving_ground.calibrate_selection``).

Usage (from ``benchmarks/``)::

    python diag_selection_unit.py proving_ground_evidence_selection_top.json proving_ground_evidence_selection_spread.json
"""
from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import numpy as np
import torch

from _common import cached_model_activations
from auditor.labeling import examined_images
from bench_proving_ground import calibrate_selection

RELIANCES = ("background_reliance", "reliance_ci_low", "reliance_ci_high", "class_swap_reliance", "class_swap_ci_low",
             "class_swap_ci_high", "swap_reliance", "swap_ci_low", "swap_ci_high", "object_reliance", "object_ci_low",
             "object_ci_high")


def in_top_units(records: list[dict], n_images: int = 16) -> tuple[list[dict], np.ndarray]:
    """The ``spread`` records with every reliance rescaled to the top images' mean, and the factors used."""
    runs = collections.defaultdict(list)
    for r in records:
        runs[(r["world"], r["model"], int(r["seed"]))].append(r)
    out, factors = [], []
    for (world_name, arch, seed), recs in sorted(runs.items()):
        acts, train = cached_model_activations(world_name, arch, seed, "train")
        for r in recs:
            members = np.flatnonzero(train.labels == int(r["class_index"]))
            values = acts[members, int(r["feature"])]
            spread_mean = acts[examined_images(values, members, n_images, "spread"), int(r["feature"])].mean()
            top_mean = acts[examined_images(values, members, n_images, "top"), int(r["feature"])].mean()
            factor = float(spread_mean / top_mean)
            factors.append(factor)
            out.append({**r, **{k: (float(r[k]) * factor if r.get(k) is not None else None) for k in RELIANCES}})
    return out, np.array(factors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("top", help="evidence JSON audited with image_selection: top")
    parser.add_argument("spread", help="evidence JSON audited with image_selection: spread")
    args = parser.parse_args()
    torch.set_num_threads(1)
    top = json.loads(Path(args.top).read_text())["records"]
    rescaled, factors = in_top_units(json.loads(Path(args.spread).read_text())["records"])
    print(f"spread mean / top mean over {len(factors)} (class, feature): median {np.median(factors):.3f}, "
          f"10-90% {np.percentile(factors, 10):.3f}-{np.percentile(factors, 90):.3f}")
    calibrate_selection({"top": top, "spread in top units": rescaled})


if __name__ == "__main__":
    main()
