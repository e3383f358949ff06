"""How well could the audit's own verdicts rank a class's images by its cue? Label-free rankings side by side.

For every (world, seed) of a proving-ground evidence file (``bench_proving_ground.py --evidence-json``), the
cached model's validation features are ranked within each cue class by several label-free spuriosity scores
built from the audit's recorded verdicts, and each ranking is scored by the AUROC against the class's true cue
flags (the proving ground's "spuriosity AUROC"). No score uses a cue flag; the probe ceiling (a logistic probe
trained on the flags, 5-fold) bounds them all.

Scores, each a mean over the class's chosen features of their class-z-scored activations:

* ``shipped``: the spurious features that ``auditor.labeling.spurious_by_class`` keeps (background-dominated ones
  when the class has any), as ``auditor.ranking.spuriosity_scores`` does;
* ``all spurious``: every spurious feature of the class;
* ``residual``: the shipped score minus its least-squares fit on the class's *core* features' z-scores (within
  the class), so that the part of a mixed feature that follows the object is taken out;
* ``reliance-weighted``: the spurious features weighted by their background reliance (at least 0).

Usage (from ``benchmarks/``; the models come from the proving ground's cache)::

    python diag_ranking.py proving_ground_evidence_cnn16.json
"""
from __future__ import annotations

import argparse
import collections
import math

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from _common import cached_model_activations, load_records
from auditor.demo.worlds import get_world
from auditor.ranking import class_zscores

SCORES = ("shipped", "all spurious", "residual", "reliance-weighted")


def _reliance(record: dict, key: str) -> float:
    value = record.get(key)
    return math.nan if value is None else float(value)


def class_scores(z: np.ndarray, verdicts: list[dict]) -> dict[str, np.ndarray]:
    """Every label-free score of one class's images.

    Args:
        z: float ``(n, D)`` the class's class-z-scored validation activations.
        verdicts: the class's recorded verdicts (``feature``, ``label``, ``background_reliance``, ``object_reliance``).

    Returns:
        score name -> float ``(n,)``; empty when the class has no spurious feature.
    """
    spurious = [v for v in verdicts if v["label"] == "spurious"]
    if not spurious:
        return {}
    dominant = [v for v in spurious if not _reliance(v, "background_reliance") < _reliance(v, "object_reliance")]
    kept = dominant or spurious
    shipped = z[:, [int(v["feature"]) for v in kept]].mean(1)
    core = [int(v["feature"]) for v in verdicts if v["label"] == "core"]
    residual = shipped
    if core:
        design = np.column_stack([z[:, core], np.ones(len(z))])
        coef, *_ = np.linalg.lstsq(design, shipped, rcond=None)
        residual = shipped - design @ coef
    weights = np.array([max(_reliance(v, "background_reliance"), 0.0) for v in spurious])
    weights = np.where(np.isfinite(weights), weights, 0.0)
    weighted = z[:, [int(v["feature"]) for v in spurious]] @ (weights / weights.sum()) if weights.sum() > 0 else shipped
    return {"shipped": shipped, "all spurious": z[:, [int(v["feature"]) for v in spurious]].mean(1),
            "residual": residual, "reliance-weighted": weighted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evidence", nargs="+", help="evidence JSONs of bench_proving_ground.py")
    args = parser.parse_args()
    torch.set_num_threads(1)
    records = load_records(args.evidence)
    runs = collections.defaultdict(list)
    for r in records:
        runs[(r["world"], r["model"], r["masks"], int(r["seed"]))].append(r)
    print("| world | model | masks | seed | class | " + " | ".join(SCORES) + " |")
    print("|---|---|---|---|---|" + "---|" * len(SCORES))
    totals = collections.defaultdict(list)
    for (world_name, arch, masks, seed), recs in sorted(runs.items()):
        world = get_world(world_name)
        acts, val = cached_model_activations(world_name, arch, seed, "val")
        z = class_zscores(acts, val.labels)
        for c in world.cue_of_class:
            members = val.labels == c
            scores = class_scores(z[members], [r for r in recs if int(r["class_index"]) == c])
            if not scores:
                continue
            aurocs = {name: roc_auc_score(val.own_cue[members], s) for name, s in scores.items()}
            for name, value in aurocs.items():
                totals[name].append(value)
            print(f"| {world_name} | {arch} | {masks} | {seed} | {world.class_names[c]} | "
                  + " | ".join(f"{aurocs[name]:.2f}" for name in SCORES) + " |")
    print("| **mean** | | | | | " + " | ".join(f"{np.mean(totals[name]):.3f}" for name in SCORES) + " |")
    print("| **below 0.9** | | | | | " + " | ".join(str(sum(v < 0.9 for v in totals[name])) for name in SCORES) + " |")


if __name__ == "__main__":
    main()
