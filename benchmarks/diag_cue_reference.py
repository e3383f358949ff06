"""Which backgrounds should a class's cue direction be measured against: every other class's, or the clean classes'?

``ranking.feature_score: cue_direction`` measures a class's direction against other classes' backgrounds, so where
other classes carry strong cues of their own, the direction also measures their absence (the quick demo's tree,
``benchmarks/RESULTS.md``). This offline check swaps 32 random training images of each ranked cue class onto
backgrounds of (a) its own class, (b) every other class and (c) only the classes that the audit found clean (no
spurious feature; all other classes when there is none), eight swaps each, and ranks the class's validation images by
``own - reference`` whitened as the library does (pooled covariance, ridge 0.01). No cue flag is used but for scoring.

Usage (from ``benchmarks/``; models come from the proving ground's cache)::

    python diag_cue_reference.py proving_ground_evidence_held_out_r16_r17.json proving_ground_evidence_held_out_r18.json
"""
from __future__ import annotations

import argparse
import collections

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from _common import load_records, split_activations
from auditor.counterfactuals import clean_backgrounds, paste_object, relight_object
from auditor.demo.world.dataset import images_to_tensor
from auditor.demo.worlds import get_world
from auditor.demo.worlds.train import load_or_train, load_split, model_spec
from auditor.model import ModelAdapter
from auditor.ranking import class_zscores, direction_scores, pooled_covariance

N_IMAGES, N_SWAPS, RIDGE = 32, 8, 0.01


def _features(adapter: ModelAdapter, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([adapter.forward(images[i:i + 512]).features.numpy() for i in range(0, len(images), 512)])


def swap_mean(adapter: ModelAdapter, images: torch.Tensor, masks: torch.Tensor, backgrounds: torch.Tensor,
              rng: np.random.Generator) -> np.ndarray:
    """Mean features float64 ``(D,)`` of ``images`` re-lit and pasted onto random ``backgrounds``, :data:`N_SWAPS` each."""
    out = []
    for _ in range(N_SWAPS):
        pick = backgrounds[rng.integers(0, len(backgrounds), len(images))]
        out.append(_features(adapter, paste_object(relight_object(images, masks, pick), masks, pick)))
    return np.concatenate(out).astype(np.float64).mean(0)


def backgrounds(split, indices: np.ndarray) -> torch.Tensor:
    """The object-free backgrounds of ``split``'s images ``indices`` (each object filled from its own background)."""
    return clean_backgrounds(images_to_tensor(split.images[indices]), torch.from_numpy(split.masks[indices]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evidence", nargs="+", help="evidence JSONs of bench_proving_ground.py (dataset masks)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    runs = collections.defaultdict(list)
    for r in load_records(args.evidence):
        runs[(r["world"], r["model"], int(r["seed"]))].append(r)
    rng = np.random.default_rng(0)
    print("| world | seed | class | mean score | direction, every other class | direction, clean classes |")
    print("|---|---|---|---|---|---|")
    totals = collections.defaultdict(list)
    for (world_name, arch, seed), records in sorted(runs.items()):
        world = get_world(world_name)
        model, _ = load_or_train(world, model_spec(arch, seed))
        adapter = ModelAdapter(model)
        train, val = load_split(world, "train"), load_split(world, "val")
        train_acts, val_acts = split_activations(model, train), split_activations(model, val)
        z = class_zscores(val_acts, val.labels)
        covariance = pooled_covariance(train_acts, train.labels)
        flagged = {int(r["class_index"]) for r in records if r["label"] == "spurious"}
        clean = [k for k in range(len(world.class_names)) if k not in flagged]

        for c in world.cue_of_class:
            members = val.labels == c
            flags = val.own_cue[members]
            spurious = [r for r in records if int(r["class_index"]) == c and r["label"] == "spurious"]
            if not spurious or flags.all() or not flags.any():
                continue
            dominant = [r for r in spurious if not r["background_reliance"] < r["object_reliance"]] or spurious
            mean_score = z[members][:, [int(r["feature"]) for r in dominant]].mean(1)
            own = np.flatnonzero(train.labels == c)
            others = np.flatnonzero(train.labels != c)
            reference = np.flatnonzero(np.isin(train.labels, clean)) if clean else others
            examined = rng.choice(own, N_IMAGES, replace=False)
            images, masks = images_to_tensor(train.images[examined]), torch.from_numpy(train.masks[examined])
            on_own = swap_mean(adapter, images, masks, backgrounds(train, rng.choice(own, N_IMAGES, replace=False)), rng)
            scores = {"mean score": roc_auc_score(flags, mean_score)}
            for name, pool in (("every other class", others), ("clean classes", reference)):
                on_pool = swap_mean(adapter, images, masks, backgrounds(train, rng.choice(pool, N_IMAGES, replace=False)), rng)
                ranked = direction_scores(val_acts, val.labels, {c: on_own - on_pool}, covariance, RIDGE)[members]
                scores[name] = roc_auc_score(flags, ranked)
            for name, value in scores.items():
                totals[name].append(value)
            print(f"| {world_name} | {seed} | {world.class_names[c]} | " + " | ".join(f"{v:.2f}" for v in scores.values()) + " |",
                  flush=True)
    print("| **mean (at 0.9 or more)** | | | " + " | ".join(
        f"{np.mean(v):.3f} ({int((np.array(v) >= 0.9).sum())}/{len(v)})" for v in totals.values()) + " |")


if __name__ == "__main__":
    main()
