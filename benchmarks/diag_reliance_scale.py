"""Would reliances in units of the class's spread of a feature match the truth better than in units of its mean?

The verdict's reliances are contrasts divided by the feature's mean activation on the examined (top) images.
The proving ground's truth is an AUROC over the class's images with and without the cue, which follows the
cue's effect in units of the feature's spread within the class (for two normal groups, AUROC = Phi(d / sqrt 2)).
This replays the shipped verdict rule on recorded evidence (``bench_proving_ground.py --evidence-json``) with
every reliance rescaled from the mean to the within-class standard deviation of the feature on the training
images (the audit's own cache; no cue flag is used), and calibrates both forms leave one world out.

Usage (from ``benchmarks/``; models come from the proving ground's cache)::

    python diag_reliance_scale.py /tmp/ev_top.json --out /tmp/ev_top_scaled.json
"""
from __future__ import annotations

import argparse
import collections
import json
import math
from pathlib import Path

import numpy as np
import torch

from _common import cached_model_activations, load_records
from auditor.demo.worlds.calibration import calibrate_lowo
from bench_proving_ground import SWAP_DEFAULT, _print_lowo, shipped_default, swap_rule

RESCALED = ("background_reliance", "reliance_ci_low", "reliance_ci_high", "class_swap_reliance", "class_swap_ci_low",
            "class_swap_ci_high", "swap_reliance", "swap_ci_low", "swap_ci_high")


def add_scales(records: list[dict], n_images: int = 16) -> list[dict]:
    """Each record with ``scale_mean`` (mean activation on the class's top ``n_images`` training images, the
    verdict's unit) and ``scale_std`` (the feature's standard deviation over the class's training images)."""
    runs = collections.defaultdict(list)
    for r in records:
        runs[(r["world"], r["model"], int(r["seed"]))].append(r)
    out = []
    for (world_name, arch, seed), recs in sorted(runs.items()):
        acts, train = cached_model_activations(world_name, arch, seed, "train")
        for r in recs:
            values = acts[train.labels == int(r["class_index"]), int(r["feature"])]
            top = np.sort(values)[::-1][:n_images]
            out.append({**r, "scale_mean": float(top.mean()), "scale_std": float(values.std())})
    return out


def rescaled(record: dict) -> dict:
    """The record with every reliance in units of ``scale_std`` instead of ``scale_mean``."""
    ratio = record["scale_mean"] / record["scale_std"] if record["scale_std"] > 0 else math.nan
    return {**record, **{k: (float(record[k]) * ratio if record.get(k) is not None else None) for k in RESCALED}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evidence", nargs="+")
    parser.add_argument("--out", default=None, help="write the records with their scales here (reused when it exists)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.out and Path(args.out).exists():
        records = json.loads(Path(args.out).read_text())["records"]
    else:
        records = add_scales(load_records(args.evidence))
        if args.out:
            Path(args.out).write_text(json.dumps({"records": records}))
    default = shipped_default(records)
    grid_mean = [{**SWAP_DEFAULT, "reliance": r, "swap": w} for r in (0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
                 for w in (0.1, 0.125, 0.15, 0.2, 0.3)]
    _print_lowo("reliances in units of the mean (shipped)", calibrate_lowo(records, swap_rule, grid_mean, default))
    scaled = [rescaled(r) for r in records]
    grid_std = [{**SWAP_DEFAULT, "reliance": r, "swap": w} for r in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
                for w in (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)]
    _print_lowo("reliances in units of the class's standard deviation", calibrate_lowo(scaled, swap_rule, grid_std))
    ratios = np.array([r["scale_mean"] / r["scale_std"] for r in records if r["scale_std"] > 0])
    print(f"\nmean / std over {len(ratios)} (class, feature): median {np.median(ratios):.2f}, "
          f"10-90% {np.percentile(ratios, 10):.2f}-{np.percentile(ratios, 90):.2f}")


if __name__ == "__main__":
    main()
