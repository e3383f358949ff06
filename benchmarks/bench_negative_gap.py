"""Which world designs give a class a significantly negative spurious gap? One table.

The noise stage (``auditor.noise``) acts only on classes whose gap is significantly
negative: the class's most spurious images are the ones the model gets wrong, as with
mislabelled images or a second object of another class. This script trains a SmallCNN by
ERM on each candidate design (cached), audits it with the noise stage on, and prints for
the design's extra class:

* validation accuracy, and accuracy with / without the thing that co-occurs with it
  (the colliding object, or the shared cue);
* its validation gap with the bootstrap CI (or "none" when the audit found no spurious
  feature for it, so there is no ranking);
* whether the noise stage examined it on its own (on validation or training);
* cropping measured directly, whatever the gap's sign: of the class's misclassified
  validation images that show the co-occurring thing, how many return to the label when
  cropped in place to the object mask (+20%, square).

Usage::

    python benchmarks/bench_negative_gap.py                  # 32 px worlds, 1,000 training images per class
    python benchmarks/bench_negative_gap.py --image-size 64 --n-train 2000 --designs shared_tree_half
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import report_adapter, split_cache
from auditor.api import audit
from auditor.demo.world.dataset import WorldDataset
from auditor.demo.world.generator import (
    DEFAULT_CLASSES,
    ClassSpec,
    WorldSpec,
    WorldSplit,
)
from auditor.demo.world.presets import (
    load_or_train_preset_model,
    load_preset_split,
    world_preset,
)
from auditor.demo.world.train import TrainSpec, load_or_train_model, load_split
from auditor.noise import crop_and_predict

CIRCLE, SQUARE, TRIANGLE, PLUS, RING = DEFAULT_CLASSES


@dataclasses.dataclass(frozen=True)
class Design:
    """One candidate world: a preset name, or the classes of a custom world, and its extra class."""

    name: str
    description: str
    preset: str | None = None
    classes: tuple[ClassSpec, ...] = ()
    target: str = "diamond"
    marker: str = "collision"  # "collision" or a cue name: what co-occurs with the target


DESIGNS = (
    Design("default_plus", "the default world's plus; the square's tree is in 50% of its evaluation images (5% in training)",
           preset="default", target="plus", marker="tree"),
    Design("collision", "diamond; a plus beside it in 50% of images (preset)", preset="collision"),
    Design("label_noise", "diamond; 15% of its training labels flipped in, a plus in 30% (preset)", preset="label_noise"),
    Design("noisy_square", "diamond; 20% of its training labels are squares with the tree (preset)", preset="noisy_square", marker="tree"),
    Design("ring_collision", "diamond; a ring beside it in 30% of images",
           classes=DEFAULT_CLASSES + (ClassSpec("diamond", collision_rate=0.3, collision_shape="ring"),)),
    Design("shared_tree", "diamond shares the square's tree cue (95% in training)",
           classes=DEFAULT_CLASSES + (ClassSpec("diamond", "tree"),), marker="tree"),
    Design("shared_tree_half", "diamond carries the square's tree in 50% of training images",
           classes=DEFAULT_CLASSES + (ClassSpec("diamond", "tree", cue_rate=0.5),), marker="tree"),
    Design("plus_tree_half", "plus carries the square's tree in 50% of training images",
           classes=(CIRCLE, SQUARE, TRIANGLE, ClassSpec("plus", "tree", cue_rate=0.5), RING), target="plus", marker="tree"),
    Design("plus_ring", "plus; a ring beside it in 50% of images",
           classes=(CIRCLE, SQUARE, TRIANGLE, ClassSpec("plus", collision_rate=0.5, collision_shape="ring"), RING), target="plus"),
    Design("ring_big_plus", "ring; a plus of 0.8-1.6x its size beside it in 50% of images",
           classes=(CIRCLE, SQUARE, TRIANGLE, PLUS, ClassSpec("ring", collision_rate=0.5, collision_shape="plus", collision_scale=(0.8, 1.6))),
           target="ring"),
    Design("plus_ring_grows", "plus; a ring of 0.5x beside it in 50% of training images, 1.0-1.4x in evaluation",
           classes=(CIRCLE, SQUARE, TRIANGLE,
                    ClassSpec("plus", collision_rate=0.5, collision_shape="ring", collision_scale=(0.5, 0.5), collision_scale_eval=(1.0, 1.4)),
                    RING),
           target="plus"),
)


def load_design(design: Design, overrides: dict) -> tuple[WorldSpec, torch.nn.Module, WorldSplit, WorldSplit]:
    """The design's spec, its ERM model (cached) and its train / validation splits."""
    if design.preset is not None:
        spec = world_preset(design.preset, **overrides)
        model = load_or_train_preset_model(design.preset, **overrides)
        return spec, model, load_preset_split(design.preset, "train", **overrides), load_preset_split(design.preset, "val", **overrides)
    spec = WorldSpec(classes=design.classes, **overrides)
    return spec, load_or_train_model(spec, TrainSpec()), load_split(spec, "train"), load_split(spec, "val")


def run_design(design: Design, overrides: dict) -> dict:
    """Audit one design and measure its extra class (see the module docstring)."""
    started = time.perf_counter()
    spec, model, train, val = load_design(design, overrides)
    with tempfile.TemporaryDirectory(prefix="bench-negative-gap-") as work:
        report = audit(model, WorldDataset(train), WorldDataset(val), class_names=spec.class_names,
                       config={"progress": False, "tuning": {"enabled": False}, "features": {"cache_dir": work},
                               "noise": {"enabled": True, "crop_mode": "in_place", "thumbnails": False}})
        adapter = report_adapter(report)
        val_source, val_cache = split_cache(adapter, WorldDataset(val), "val", work)
        c = spec.class_names.index(design.target)
        members = val.labels == c
        correct = np.asarray(val_cache.correct, bool)
        marked = val.collision if design.marker == "collision" else val.cue_flag(design.marker)
        wrong_marked = np.flatnonzero(members & marked & ~correct)
        records = (crop_and_predict(adapter, val_source, wrong_marked, c, report.core_features(c), None,
                                    expand=0.2, thumbnails=False, mode="in_place")
                   if len(wrong_marked) else [])
    gap = report.gaps.get(c)
    examined = [split for index, split in report.sections["noise"]["classes_examined"] if index == c]
    return {
        "design": design.name,
        "accuracy": float(correct[members].mean()),
        "with": float(correct[members & marked].mean()),
        "without": float(correct[members & ~marked].mean()),
        "gap": None if gap is None else (gap.gap, gap.ci_low, gap.ci_high),
        "examined": examined,
        "wrong_marked": len(wrong_marked),
        "fixed": sum(r["fixed"] for r in records),
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--designs", nargs="+", default=[d.name for d in DESIGNS], choices=[d.name for d in DESIGNS])
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.ERROR)
    overrides = {"image_size": args.image_size, "n_train": args.n_train, "n_val": 200}
    if args.image_size < 64:
        overrides["object_scale"] = (0.18, 0.28)  # as the quick world: objects stay recognisable at 32 px
    print(f"worlds: {overrides}; ERM SmallCNN {TrainSpec()}")
    print(f"{'design':<17}{'val acc':>8}{'with':>7}{'without':>9}  {'gap [95% CI]':<28}{'noise stage':<13}{'cropped (in place)':<20}")
    for design in (d for d in DESIGNS if d.name in args.designs):
        row = run_design(design, overrides)
        gap = "none (no spurious feature)" if row["gap"] is None else "{:+.3f} [{:+.3f}, {:+.3f}]".format(*row["gap"])
        examined = ",".join(row["examined"]) or "not run"
        cropped = f"{row['fixed']}/{row['wrong_marked']} fixed"
        print(f"{row['design']:<17}{row['accuracy']:>8.3f}{row['with']:>7.3f}{row['without']:>9.3f}  {gap:<28}{examined:<13}{cropped:<20}"
              f"  ({row['seconds']:.0f} s)")
    print("\n".join(f"  {d.name}: {d.description}" for d in DESIGNS if d.name in args.designs))


if __name__ == "__main__":
    main()
