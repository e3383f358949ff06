"""Which backgrounds should a class's cue direction be measured against: every other class's, or the clean classes'?

``ranking.feature_score: cue_direction`` measures a class's direction against other classes' backgrounds, so where
other classes carry strong cues of their own, the direction also measures their absence (the quick demo's tree,
``benchmarks/RESULTS.md``). This offline check swaps 32 random training images of each ranked cue class onto
backgrounds of (a) its own class, (b) every other class and (c) only the classes that the audit found clean (no
spurious feature; all other classes when there is none), eight swaps each, and ranks the class's validation images by
``own - reference`` whitened as the library does (pooled covariance, ridge 0.01). No cue flag is used but for scoring.

``--quick-demo`` does the same on the quick demo world (``run_demo(quick=True)``, audited afresh; its model is cached).

Usage (from ``benchmarks/``; models come from the proving ground's cache)::

    python diag_cue_reference.py proving_ground_evidence_held_out_r16_r17.json proving_ground_evidence_held_out_r18.json
    python diag_cue_reference.py --quick-demo
"""
from __future__ import annotations

import argparse
import collections

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from _common import batched_features, load_records, split_activations
from auditor.counterfactuals import clean_backgrounds, paste_object, relight_object
from auditor.demo.world.dataset import images_to_tensor
from auditor.demo.worlds import get_world
from auditor.demo.worlds.train import load_or_train, load_split, model_spec
from auditor.model import ModelAdapter
from auditor.ranking import class_zscores, direction_scores, pooled_covariance

N_IMAGES, N_SWAPS, RIDGE = 32, 8, 0.01


def swap_mean(adapter: ModelAdapter, images: torch.Tensor, masks: torch.Tensor, backgrounds: torch.Tensor,
              rng: np.random.Generator) -> np.ndarray:
    """Mean features float64 ``(D,)`` of ``images`` re-lit and pasted onto random ``backgrounds``, :data:`N_SWAPS` each."""
    out = []
    for _ in range(N_SWAPS):
        pick = backgrounds[rng.integers(0, len(backgrounds), len(images))]
        out.append(batched_features(adapter, paste_object(relight_object(images, masks, pick), masks, pick)))
    return np.concatenate(out).astype(np.float64).mean(0)


def backgrounds(split, indices: np.ndarray) -> torch.Tensor:
    """The object-free backgrounds of ``split``'s images ``indices`` (each object filled from its own background)."""
    return clean_backgrounds(images_to_tensor(split.images[indices]), torch.from_numpy(split.masks[indices]))


def class_scores(adapter: ModelAdapter, split, train_acts: np.ndarray, val_acts: np.ndarray, val_labels: np.ndarray,
                 flags: np.ndarray, c: int, mean_score: np.ndarray, clean: list[int], covariance: np.ndarray,
                 rng: np.random.Generator) -> dict[str, float]:
    """Class ``c``'s AUROCs against its cue ``flags`` (its validation images): the mean score and both directions."""
    own = np.flatnonzero(split.labels == c)
    others = np.flatnonzero(split.labels != c)
    reference = np.flatnonzero(np.isin(split.labels, clean)) if clean else others
    examined = rng.choice(own, N_IMAGES, replace=False)
    images, masks = images_to_tensor(split.images[examined]), torch.from_numpy(split.masks[examined])
    on_own = swap_mean(adapter, images, masks, backgrounds(split, rng.choice(own, N_IMAGES, replace=False)), rng)
    scores = {"mean score": roc_auc_score(flags, mean_score)}
    for name, pool in (("every other class", others), ("clean classes", reference)):
        on_pool = swap_mean(adapter, images, masks, backgrounds(split, rng.choice(pool, N_IMAGES, replace=False)), rng)
        ranked = direction_scores(val_acts, val_labels, {c: on_own - on_pool}, covariance, RIDGE)[val_labels == c]
        scores[name] = roc_auc_score(flags, ranked)
    return scores


def quick_demo(rng: np.random.Generator) -> None:
    """The three directions on the quick demo world's cue classes."""
    from auditor.demo.run import QUICK_TRAINING, QUICK_WORLD, run_demo
    from auditor.demo.world.train import load_or_train_model
    from auditor.demo.world.train import load_split as load_demo_split
    from auditor.labeling import spurious_by_class
    from auditor.ranking import spuriosity_scores

    report = run_demo(output_dir=None, quick=True, progress=False).report
    model = load_or_train_model(QUICK_WORLD, QUICK_TRAINING, progress=False)
    adapter = ModelAdapter(model)
    train, val = load_demo_split(QUICK_WORLD, "train"), load_demo_split(QUICK_WORLD, "val")
    train_acts, val_acts = split_activations(model, train), split_activations(model, val)
    spurious = spurious_by_class(report.verdicts)
    clean = [k for k in range(len(QUICK_WORLD.class_names)) if k not in spurious]
    mean = spuriosity_scores(val_acts, val.labels, spurious)
    covariance = pooled_covariance(train_acts, train.labels)
    print("| quick demo class | mean score | direction, every other class | direction, clean classes |")
    print("|---|---|---|---|")
    for c, spec in enumerate(QUICK_WORLD.classes):
        if spec.cue is None or c not in spurious:
            continue
        members = val.labels == c
        scores = class_scores(adapter, train, train_acts, val_acts, val.labels, val.cue_flag(spec.cue)[members], c,
                              mean[members], clean, covariance, rng)
        print(f"| {QUICK_WORLD.class_names[c]} | " + " | ".join(f"{v:.3f}" for v in scores.values()) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evidence", nargs="*", help="evidence JSONs of bench_proving_ground.py (dataset masks)")
    parser.add_argument("--quick-demo", action="store_true", help="the quick demo world instead")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick_demo:
        quick_demo(np.random.default_rng(0))
        return
    if not args.evidence:
        parser.error("give evidence files or --quick-demo")
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
            scores = class_scores(adapter, train, train_acts, val_acts, val.labels, flags, c, mean_score, clean,
                                  covariance, rng)
            for name, value in scores.items():
                totals[name].append(value)
            print(f"| {world_name} | {seed} | {world.class_names[c]} | " + " | ".join(f"{v:.2f}" for v in scores.values()) + " |",
                  flush=True)
    print("| **mean (at 0.9 or more)** | | | " + " | ".join(
        f"{np.mean(v):.3f} ({int((np.array(v) >= 0.9).sum())}/{len(v)})" for v in totals.values()) + " |")


if __name__ == "__main__":
    main()
