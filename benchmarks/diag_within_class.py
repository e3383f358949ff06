"""Does a feature's within-class variation follow the background? A grid of the class's own images, measured.

For each recorded (class, feature) verdict of an evidence JSON (``bench_proving_ground.py --evidence-json``), k images
of the class are taken at evenly spaced ranks of the feature (``examined_images(..., "spread")``: the most activating to
the least), and every object is pasted, re-lit, onto every other image's object-free background: a k x k grid of
activations ``A[object, background]``. An additive two-way split of the grid gives each image an object effect (its row
mean) and a background effect (its column mean). The measures written per record:

* ``background_explained``: the share of the feature's variance over the k original images that the background
  effects explain, ``cov(a, background effect) / var(a)`` (``object_explained`` likewise; the two add up to about 1
  when the grid is additive).
* ``background_share``: ``var(background effects) / (var(background effects) + var(object effects))``.
* ``background_effect_spread``: the standard deviation of the background effects over the class's activation spread.

The truth of each record (AUROC of the feature on the class's images with and without its cue) is in the evidence file;
this script prints how well each measure separates truth-spurious from truth-core features, on all records and on those
the shipped verdict calls core. Models and splits come from the proving ground's cache (dataset masks).

    python diag_within_class.py proving_ground_evidence_class_medians.json --json within_class.json
    python diag_within_class.py --from-json within_class.json proving_ground_evidence_class_medians.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from _common import load_records, record_key, split_activations
from auditor.counterfactuals import clean_backgrounds, paste_object, relight_object
from auditor.demo.world.dataset import images_to_tensor
from auditor.labeling import examined_images
from auditor.model import ModelAdapter


def grid_activations(adapter: ModelAdapter, images: torch.Tensor, masks: torch.Tensor, feature: int) -> np.ndarray:
    """float ``(k, k)``: the feature on object ``o`` (re-lit) pasted onto image ``b``'s object-free background."""
    k = len(images)
    backgrounds = clean_backgrounds(images, masks)
    composites = []
    for b in range(k):
        background = backgrounds[b:b + 1].expand_as(images)
        composites.append(paste_object(relight_object(images, masks, background), masks, background))
    with torch.no_grad():
        features = adapter.forward(torch.cat(composites)).features[:, feature].numpy()
    return features.reshape(k, k).T  # rows: objects, columns: backgrounds


def grid_measures(grid: np.ndarray, original: np.ndarray, class_std: float) -> dict:
    """The within-class measures of one grid (see the module docstring)."""
    grand = grid.mean()
    object_effect = grid.mean(1) - grand
    background_effect = grid.mean(0) - grand
    centred = original - original.mean()
    variance = float((centred ** 2).mean())
    explained_by = (lambda effect: float((centred * (effect - effect.mean())).mean() / variance) if variance > 0 else 0.0)
    total = float(object_effect.var() + background_effect.var())
    return {
        "background_explained": explained_by(background_effect),
        "object_explained": explained_by(object_effect),
        "background_share": float(background_effect.var() / total) if total > 0 else 0.0,
        "background_effect_spread": float(background_effect.std() / class_std) if class_std > 0 else 0.0,
        "object_effect_spread": float(object_effect.std() / class_std) if class_std > 0 else 0.0,
    }


def measure(records: list[dict], k: int) -> list[dict]:
    from auditor.demo.worlds import get_world
    from auditor.demo.worlds.train import load_or_train, load_split, model_spec

    groups = defaultdict(list)
    for r in records:
        if r["masks"] == "dataset":
            groups[(r["world"], r["model"], int(r["seed"]))].append(r)
    out = []
    for n, ((world_name, arch, seed), rows) in enumerate(sorted(groups.items())):
        start = time.perf_counter()
        world = get_world(world_name)
        model, _ = load_or_train(world, model_spec(arch, seed))
        model.eval()
        train = load_split(world, "train")
        acts = split_activations(model, train)
        adapter = ModelAdapter(model)
        for r in rows:
            c, f = int(r["class_index"]), int(r["feature"])
            members = np.flatnonzero(train.labels == c)
            chosen = examined_images(acts[members, f], members, k, "spread")
            images = images_to_tensor(train.images[chosen])
            masks = torch.from_numpy(np.ascontiguousarray(train.masks[chosen]))
            grid = grid_activations(adapter, images, masks, f)
            measures = grid_measures(grid, acts[chosen, f], float(acts[members, f].std()))
            out.append({key: r[key] for key in ("world", "model", "masks", "seed", "class_index", "feature", "label",
                                                 "decided_by", "truth", "truth_auroc", "control", "cue")} | measures)
        print(f"[{n + 1}/{len(groups)}] {world_name} {arch} seed {seed}: {len(rows)} features, "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    return out


def _auroc(rows: list[dict], key: str) -> float:
    truth = np.array([r["truth"] for r in rows], bool)
    if truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, [r[key] for r in rows]))


def summarise(rows: list[dict]) -> None:
    keys = ("background_explained", "background_share", "background_effect_spread", "object_explained")
    core_called = [r for r in rows if r["label"] == "core"]
    controls = [r for r in rows if r["control"]]
    print(f"{len(rows)} records; {sum(r['truth'] for r in rows)} truth-spurious; "
          f"{len(core_called)} called core, of them {sum(r['truth'] for r in core_called)} truth-spurious (misses)")
    print("| measure | AUROC vs truth, all | AUROC, among those called core | control features: median | truth-spurious misses: median | truth-core called core: median |")
    print("|---|---|---|---|---|---|")
    for key in keys:
        missed = [r[key] for r in core_called if r["truth"]]
        clean = [r[key] for r in core_called if not r["truth"]]
        print(f"| {key} | {_auroc(rows, key):.3f} | {_auroc(core_called, key):.3f} | "
              f"{np.median([r[key] for r in controls]):.3f} | {np.median(missed):.3f} | {np.median(clean):.3f} |")


def added_flags(rows: list[dict], records: list[dict], thresholds=(0.3, 0.4, 0.5, 0.6)) -> None:
    """Pooled P / R / control features flagged if features the shipped verdict calls core were also flagged when their
    background share reaches a threshold: alone, and gated as the swap path is (class swap interval above 0 and the
    class's own backgrounds raising the feature over a neutral one by at least 0.15)."""
    evidence = {record_key(r): r for r in records}
    tp = sum(r["truth"] and r["label"] == "spurious" for r in rows)
    flagged = sum(r["label"] == "spurious" for r in rows)
    positives = sum(r["truth"] for r in rows)
    controls = sum(r["control"] and r["label"] == "spurious" for r in rows)
    print(f"\nshipped verdicts: P {tp / flagged:.3f} R {tp / positives:.3f}, control features flagged {controls}")
    print("| extra flags when background_share >= t | t | added | of them true | control features | pooled P | pooled R |")
    print("|---|---|---|---|---|---|---|")
    gates = {
        "alone": lambda e: True,
        "and the swap path's gates": lambda e: e["class_swap_ci_low"] > 0 and e["background_drop"] >= 0.15,
    }
    for name, gate in gates.items():
        for t in thresholds:
            added = [r for r in rows if r["label"] == "core" and r["background_share"] >= t and gate(evidence[record_key(r)])]
            true = sum(r["truth"] for r in added)
            print(f"| {name} | {t:g} | {len(added)} | {true} | {controls + sum(r['control'] for r in added)} | "
                  f"{(tp + true) / (flagged + len(added)):.3f} | {(tp + true) / positives:.3f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("evidence", nargs="*", help="evidence JSONs")
    parser.add_argument("--k", type=int, default=8, help="images per grid side")
    parser.add_argument("--worlds", nargs="*", help="only these worlds")
    parser.add_argument("--json", help="write the measures here")
    parser.add_argument("--from-json", help="summarise measures written earlier")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.from_json:
        rows = json.loads(Path(args.from_json).read_text())["rows"]
    else:
        records = load_records(args.evidence)
        if args.worlds:
            records = [r for r in records if r["world"] in set(args.worlds)]
        rows = measure(records, args.k)
        if args.json:
            Path(args.json).write_text(json.dumps({"k": args.k, "rows": rows}))
    summarise(rows)
    if args.evidence:
        added_flags(rows, load_records(args.evidence))


if __name__ == "__main__":
    main()
