"""Is a clean background itself a shortcut to a control class? Test predictions by the number of cues in the image.

In a world where most classes carry a cue in training, the control classes are the ones whose backgrounds are
usually plain, so "no cue anywhere" predicts a control. The cue-flag truth of the proving ground cannot call a
control's feature spurious, yet the verdict flagged control features of `held-out-44px-five-cues-noisy` (stop 30) that
respond to the control's own cue-free backgrounds. This measures, on each world's test split (every cue behind half of
all images, independently of the class), whether the ERM model behaves as if it had learned that shortcut:

- for each control class: its test accuracy on images with no cue at all, and with one or more of the other classes'
  cues (a model that uses the clean background for the control loses accuracy as cues are added);
- for the cue classes' images without their own cue: the share predicted as a control when the image carries no cue
  at all, and when it carries some other class's cue (a model that uses the clean background sends the first to the
  controls more often);
- with ``--evidence``, for every audited feature of a control class: its verdict and its "clean background" AUROC,
  how well it ranks the control's validation images without any cue above those with one or more (the truth line's
  AUROC, turned to the absence of cues).

Usage (from ``benchmarks/``; models are the proving ground's cached ERM models, trained if absent)::

    python diag_control_shortcut.py --worlds held-out-44px-five-cues-noisy held-out-few-noisy-small held-out-40px-leaky-photo-casts --seeds 0 1 2 --evidence proving_ground_evidence_class_medians.json
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from _common import load_records
from auditor.data import ImageSource
from auditor.demo.world.dataset import WorldDataset
from auditor.demo.worlds.catalog import get_world
from auditor.demo.worlds.train import load_or_train, load_split, model_spec
from auditor.features import extract_features
from auditor.model import ModelAdapter


def _rate(mask: np.ndarray, hit: np.ndarray) -> str:
    """``"share (n)"`` of ``hit`` among ``mask``; "-" when empty."""
    n = int(mask.sum())
    return f"{hit[mask].mean():.2f} ({n})" if n else "-"


def shortcut_rows(world_name: str, seed: int, arch: str = "cnn16") -> list[str]:
    """Markdown rows of the two measurements for one world and seed (one per control class)."""
    world = get_world(world_name)
    model, _ = load_or_train(world, model_spec(arch, seed))
    test = load_split(world, "test")
    adapter = ModelAdapter(model)
    with tempfile.TemporaryDirectory() as tmp:
        cache = extract_features(adapter, ImageSource(WorldDataset(test, with_masks=False), name="test"), Path(tmp), progress=False)
        predictions = np.asarray(cache.logits).argmax(1)
    labels = np.asarray(test.labels)
    controls = list(world.control_classes)
    own_column = {c: test.cue_names.index(cue) for c, cue in world.cue_of_class.items()}
    others = test.cues.copy()
    for c, column in own_column.items():
        others[labels == c, column] = False
    n_other = others.sum(1)
    to_control = np.isin(predictions, controls)
    cue_class = np.isin(labels, list(world.cue_of_class)) & ~np.asarray(test.own_cue)
    rows = []
    for k in controls:
        mine = labels == k
        correct = predictions == labels
        rows.append(f"| {world_name} | {seed} | {world.class_names[k]} | {_rate(mine & (n_other == 0), correct)} | "
                    f"{_rate(mine & (n_other == 1), correct)} | {_rate(mine & (n_other >= 2), correct)} | "
                    f"{_rate(cue_class & (n_other == 0), to_control)} | {_rate(cue_class & (n_other >= 1), to_control)} |")
    return rows


def clean_background_rows(world_name: str, seed: int, records: list[dict], arch: str = "cnn16") -> list[str]:
    """Markdown rows, one per audited control feature of ``records`` for this world and seed: verdict, swap evidence
    and the AUROC of the feature for the control's validation images without any cue against those with one or more."""
    world = get_world(world_name)
    mine = [r for r in records if r["world"] == world_name and r["seed"] == seed and r.get("control")]
    if not mine:
        return []
    model, _ = load_or_train(world, model_spec(arch, seed))
    val = load_split(world, "val")
    with tempfile.TemporaryDirectory() as tmp:
        cache = extract_features(ModelAdapter(model), ImageSource(WorldDataset(val, with_masks=False), name="val"), Path(tmp),
                                 progress=False)
        activations = np.asarray(cache.activations)
    labels, clean = np.asarray(val.labels), ~val.cues.any(1)
    rows = []
    for r in mine:
        members = labels == int(r["class_index"])
        auroc = roc_auc_score(clean[members], activations[members, int(r["feature"])]) if 0 < clean[members].sum() < members.sum() else float("nan")
        rows.append(f"| {world_name} | {seed} | {r['class_name']} | {int(r['feature'])} | {r['label']} | {auroc:.2f} | "
                    f"{r['class_swap_reliance']:+.2f} | {r['swap_auroc']:.2f} | {r['object_reliance']:+.2f} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--model", default="cnn16")
    parser.add_argument("--evidence", nargs="+", default=None, help="evidence JSONs whose control features to score")
    args = parser.parse_args(argv)
    print("| world | seed | control | its accuracy, no cue | one other cue | two or more | cue classes without their own "
          "cue: predicted a control, no cue at all | with another class's cue |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.worlds:
        for seed in args.seeds:
            for row in shortcut_rows(name, seed, args.model):
                print(row)
    if args.evidence:
        records = load_records(args.evidence)
        print("\n| world | seed | control | feature | verdict | clean-background AUROC | class swap | swap AUROC | object "
              "reliance |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name in args.worlds:
            for seed in args.seeds:
                for row in clean_background_rows(name, seed, records, args.model):
                    print(row)


if __name__ == "__main__":
    main()
