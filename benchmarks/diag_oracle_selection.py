"""How the oracle DFR chooses its regularisation: one half of validation, or every image out of fold.

The oracle (``_common.oracle_dfr``) is the repair bar: group-balanced last-layer retraining on
validation with the true groups. Label-free low-spuriosity tuning scored above it on several
proving worlds (``held-out-48px-few-val-textures``: 0.63 against 0.56 mean test worst group), and
a reference that scores below the method it should bound is suspect. Both fit the same logistic
regression; the oracle chose its ``C`` by the true worst group of one random half of validation,
where a group can hold one or two images. This script refits the oracle both ways on the same
cached models and splits and prints the test worst-group (and average) accuracy per world.

With ``--ours ROWS.json`` (a ``bench_proving_ground.py --rows-json`` file with the same worlds, seeds
and ``--skewed-val``) it also counts the worlds where low-spuriosity tuning is within 3 points of
each oracle, from ``--ours-key`` (a candidate of ``--tuning-keys``, e.g. "cross fit on") or the row's
``low_spuriosity`` method.

Usage::

    python diag_oracle_selection.py --worlds all --seeds 0 1 2 --json oracle_selection.json
    python diag_oracle_selection.py --worlds corner-tag held-out-48px-few-val-textures --seeds 0
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from _common import gains_over_erm, group_accuracy, near_oracle, oracle_dfr, skewed_val_spec, split_activations
from auditor.demo.worlds import HELD_OUT_WORLDS, PROMOTED_WORLDS, RISK_WORLDS, WORLDS, get_world
from auditor.demo.worlds.train import load_or_train, load_split, model_spec
from bench_proving_ground import group_ids

SELECTIONS = ("half", "out_of_fold")


def measure(world_name: str, arch: str, seed: int) -> list[dict]:
    """Test (average, worst-group) accuracy of both oracles, with balanced and with skewed validation."""
    world = get_world(world_name)
    model, _ = load_or_train(world, model_spec(arch, seed))
    test = load_split(world, "test")
    test_x, test_g = split_activations(model, test), group_ids(test, world)
    rows = []
    for kind in ("balanced", "skewed"):
        val = load_split(world, "val") if kind == "balanced" else load_split(skewed_val_spec(world), "train")
        x, g = split_activations(model, val), group_ids(val, world)
        row = {"world": world_name, "model": arch, "seed": seed, "val": kind}
        for selection in SELECTIONS:
            w, b = oracle_dfr(x, val.labels, g, seed=seed, c_selection=selection)
            row[selection] = dict(zip(("accuracy", "worst_group"), group_accuracy((test_x @ w.T + b).argmax(1), test.labels, test_g)))
        rows.append(row)
    return rows


def _ours(path: str, key: str | None) -> dict[tuple[str, int, str], dict[str, float]]:
    """Per (world, seed, validation): low-spuriosity tuning's and ERM's test accuracy and worst group."""
    found = {}
    for row in json.loads(Path(path).read_text()):
        for kind, block in (("balanced", row), ("skewed", row.get("skewed") or {})):
            heads = block.get("candidates", {}) if key else block.get("methods", {})
            head = heads.get(key) if key else heads.get("low_spuriosity")
            erm = block.get("methods", {}).get("ERM")
            if head and erm:
                found[row["world"], row["seed"], kind] = {"worst_group": head["worst_group"], "accuracy": head["accuracy"],
                                                          "erm_worst_group": erm["worst_group"], "erm_accuracy": erm["accuracy"]}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worlds", nargs="+", default=["all"],
                        help="world names, or 'all' (calibration, risk, promoted and held-out worlds)")
    parser.add_argument("--exclude", nargs="*", default=[], help="worlds to leave out of 'all' (e.g. an unaudited round)")
    parser.add_argument("--model", default="cnn16")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write every row here")
    parser.add_argument("--ours", help="rows JSON of bench_proving_ground.py with low-spuriosity tuning to compare")
    parser.add_argument("--ours-key", help="candidate head of --ours to read (default: the low_spuriosity method)")
    parser.add_argument("--from-json", help="summarise the rows of an earlier --json instead of measuring")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.worlds
    if names == ["all"]:
        names = [n for n in (*WORLDS, *RISK_WORLDS, *PROMOTED_WORLDS, *HELD_OUT_WORLDS) if n not in args.exclude]
    rows, start = [], time.perf_counter()
    if args.from_json:
        rows = json.loads(Path(args.from_json).read_text())
        names = sorted({r["world"] for r in rows})
    else:
        for name in names:
            for seed in args.seeds:
                rows.extend(measure(name, args.model, seed))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)

    by_world = defaultdict(list)
    for row in rows:
        by_world[row["world"], row["val"]].append(row)
    print(f"{len(names)} worlds, {args.model}, seeds {args.seeds}, {time.perf_counter() - start:.0f} s\n")
    print("| world | validation | oracle, C on one half: avg/wg | oracle, C out of fold: avg/wg | wg change |")
    print("|---|---|---|---|---|")
    for (world, kind), group in by_world.items():
        mean = {(s, f): np.mean([r[s][f] for r in group]) for s in SELECTIONS for f in ("accuracy", "worst_group")}
        print(f"| {world} | {kind} | {mean['half', 'accuracy']:.2f}/{mean['half', 'worst_group']:.3f} | "
              f"{mean['out_of_fold', 'accuracy']:.2f}/{mean['out_of_fold', 'worst_group']:.3f} | "
              f"{mean['out_of_fold', 'worst_group'] - mean['half', 'worst_group']:+.3f} |")
    print("\n| validation | audits | half: mean wg | out of fold: mean wg | paired change (SE) | up / down |")
    print("|---|---|---|---|---|---|")
    for kind in ("balanced", "skewed"):
        group = [r for r in rows if r["val"] == kind]
        diff = np.array([r["out_of_fold"]["worst_group"] - r["half"]["worst_group"] for r in group])
        print(f"| {kind} | {len(group)} | {np.mean([r['half']['worst_group'] for r in group]):.3f} | "
              f"{np.mean([r['out_of_fold']['worst_group'] for r in group]):.3f} | {diff.mean():+.4f} "
              f"({diff.std(ddof=1) / np.sqrt(len(diff)):.4f}) | {(diff > 0).sum()} / {(diff < 0).sum()} |")

    if args.ours:
        _compare_with_ours(rows, by_world, _ours(args.ours, args.ours_key))


def _compare_with_ours(rows: list[dict], by_world: dict, ours: dict) -> None:
    """The repair bar per validation kind (gain >= 0.08 over ERM, average within 0.02, within 0.03 of the oracle)."""
    print("\n| validation | cue worlds | within 3 points of the oracle: half / out of fold | whole repair bar: half / out of fold "
          "| ours mean wg | oracle mean wg: half / out of fold |")
    print("|---|---|---|---|---|---|")
    measured = {r["world"] for r in rows}
    for kind in ("balanced", "skewed"):
        worlds = sorted({w for (w, _, k) in ours if k == kind and w in measured and get_world(w).cue_of_class})
        within, met = dict.fromkeys(SELECTIONS, 0), dict.fromkeys(SELECTIONS, 0)
        means = {s: [] for s in (*SELECTIONS, "ours")}
        for world in worlds:
            group = [r for r in by_world[world, kind] if (world, r["seed"], kind) in ours]
            if not group:
                continue
            mine = {f: np.mean([ours[world, r["seed"], kind][f] for r in group])
                    for f in ("worst_group", "accuracy", "erm_worst_group", "erm_accuracy")}
            means["ours"].append(mine["worst_group"])
            gains = gains_over_erm(mine["worst_group"], mine["accuracy"], mine["erm_worst_group"], mine["erm_accuracy"])
            for s in SELECTIONS:
                bar = float(np.mean([r[s]["worst_group"] for r in group]))
                means[s].append(bar)
                within[s] += int(near_oracle(mine["worst_group"], bar))
                met[s] += int(gains and near_oracle(mine["worst_group"], bar))
        print(f"| {kind} | {len(means['ours'])} | {within['half']} / {within['out_of_fold']} | {met['half']} / {met['out_of_fold']} | "
              f"{np.mean(means['ours']):.3f} | {np.mean(means['half']):.3f} / {np.mean(means['out_of_fold']):.3f} |")

if __name__ == "__main__":
    main()
