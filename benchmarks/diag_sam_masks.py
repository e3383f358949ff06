"""How well the cached SAM masks (tiny SAM proposes, tiny CLIP chooses) cover each class's objects.

Reads the masks that ``bench_proving_ground.py --masks sam`` cached under
``<cache>/proving/sam_masks/<world>-<fingerprint>/`` (one packed file per training image and label) and compares each
with the world's true object mask. Prints one row per (world, class): how many images have a cached mask, the mean
IoU, the share of the object's pixels the mask covers (what is *not* covered stays in the "background" when the object
is removed), the share of the mask that lies on the object, and the share of masks with IoU under 0.3 (another segment
chosen).

    python diag_sam_masks.py [--worlds held-out-44px-coloured-casts ...]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from _common import sam_mask_dir
from auditor.demo.worlds import HELD_OUT_WORLDS, PROMOTED_WORLDS, RISK_WORLDS, WORLDS, get_world
from auditor.demo.worlds.train import load_split


def mask_folders(worlds: list[str] | None) -> list[tuple[str, Path]]:
    """``(world name, folder)`` of every proving world (only ``worlds`` when given) whose current version has cached
    SAM masks."""
    names = worlds if worlds is not None else sorted({**WORLDS, **RISK_WORLDS, **PROMOTED_WORLDS, **HELD_OUT_WORLDS})
    folders = [(name, sam_mask_dir(get_world(name))) for name in names]
    return [(name, folder) for name, folder in folders if folder.exists()]


def coverage(world_name: str, folder: Path) -> dict[int, np.ndarray]:
    """class -> float ``(n, 3)``: IoU, object pixels covered, mask pixels on the object, one row per cached mask."""
    train = load_split(get_world(world_name), "train")
    stats = defaultdict(list)
    for path in folder.glob("*/*.npy"):
        if path.name.endswith(".tmp.npy"):
            continue
        index, label, _ = path.stem.split("-")
        truth = train.masks[int(index)]
        mask = np.unpackbits(np.load(path), count=truth.size).reshape(truth.shape).astype(bool)
        overlap = (mask & truth).sum()
        stats[int(label)].append((overlap / max(1, (mask | truth).sum()), overlap / max(1, truth.sum()),
                                  overlap / max(1, mask.sum())))
    return {label: np.asarray(rows) for label, rows in stats.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", nargs="*", help="only these worlds (default: every world with cached masks)")
    args = parser.parse_args(argv)
    print("| world | class | cue | masks | IoU | object covered | mask on object | IoU < 0.3 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, folder in mask_folders(args.worlds):
        world = get_world(name)
        for label, rows in sorted(coverage(name, folder).items()):
            print(f"| {name} | {world.class_names[label]} | {world.classes[label].cue or 'none (control)'} | {len(rows)} | "
                  f"{rows[:, 0].mean():.2f} | {rows[:, 1].mean():.2f} | {rows[:, 2].mean():.2f} | {np.mean(rows[:, 0] < 0.3):.2f} |")


if __name__ == "__main__":
    main()
