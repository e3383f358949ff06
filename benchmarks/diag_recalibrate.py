"""Would re-choosing the verdict thresholds on more worlds, or by the issue's bar instead of F1, change the defaults?

Replays the shipped rule (``bench_proving_ground.swap_rule``) on recorded evidence over the threshold grid
(``reliance_threshold``, the swap threshold, ``swap_reference``, ``swap_margin``; the neutral-drop gate and the
background check at their shipped values) and chooses a setting leave one world out in three ways:

- the shipped defaults, never re-chosen;
- the setting with the best F1 on the other worlds (``calibration.calibrate_lowo``'s objective);
- the setting under which the most other worlds meet the issue's bar (precision >= 0.9, recall >= 0.8 and no control
  feature flagged), ties broken by F1.

Each held-out world is scored with the setting chosen without it; the line gives pooled precision, recall, F1, the
worlds at the bar and the control features flagged, and the settings chosen most often.

Usage (from ``benchmarks/``), one evidence set at a time (one model and one mask source)::

    python diag_recalibrate.py proving_ground_evidence_selection_top.json proving_ground_evidence_held_out_r4.json proving_ground_evidence_held_out_r5.json
"""
from __future__ import annotations

import argparse
import collections
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from bench_proving_ground import shipped_default, swap_rule, threshold_grid

Counts = tuple[int, int, int, int]
"""``(true positives, false positives, false negatives, control features flagged)`` of one world."""


def world_counts(records: Sequence[dict], params: dict, worlds: Sequence[str]) -> dict[str, Counts]:
    """Per world, the rule's counts at ``params``."""
    counts = {world: [0, 0, 0, 0] for world in worlds}
    for record in records:
        flagged, truth = swap_rule(record, params), bool(record["truth"])
        c = counts[record["world"]]
        c[0] += flagged and truth
        c[1] += flagged and not truth
        c[2] += truth and not flagged
        c[3] += flagged and bool(record.get("control"))
    return {world: tuple(c) for world, c in counts.items()}


def rates(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """``(precision, recall, F1)`` of the counts; NaN where undefined (nothing flagged, nothing true)."""
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
    return precision, recall, f1


def meets_bar(counts: Counts) -> bool:
    """Precision >= 0.9 and recall >= 0.8 (where defined) and no control feature flagged."""
    precision, recall, _ = rates(*counts[:3])
    return (math.isnan(precision) or precision >= 0.9) and (math.isnan(recall) or recall >= 0.8) and counts[3] == 0


def pooled_f1(per_world: dict[str, Counts], worlds: Sequence[str]) -> float:
    """F1 of the counts pooled over ``worlds`` (0 when nothing is flagged or true)."""
    f1 = rates(*(sum(per_world[w][i] for w in worlds) for i in range(3)))[2]
    return 0.0 if math.isnan(f1) else f1


def leave_one_world_out(table: list[dict[str, Counts]], worlds: Sequence[str],
                        choose: Callable[[Sequence[str]], int]) -> tuple[dict[str, float], collections.Counter]:
    """Score each world with the grid index ``choose`` picks on the other worlds; pooled scores and choices."""
    tp = fp = fn = controls = at_bar = 0
    chosen: collections.Counter = collections.Counter()
    for world in worlds:
        index = choose([w for w in worlds if w != world])
        chosen[index] += 1
        counts = table[index][world]
        tp, fp, fn, controls = tp + counts[0], fp + counts[1], fn + counts[2], controls + counts[3]
        at_bar += meets_bar(counts)
    precision, recall, f1 = rates(tp, fp, fn)
    scores = {"precision": precision, "recall": recall, "f1": f1, "at_bar": at_bar, "controls": controls}
    return scores, chosen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evidence", nargs="+", help="evidence JSONs of one model and one mask source (merged)")
    args = parser.parse_args(argv)
    records = [r for path in args.evidence for r in json.loads(Path(path).read_text())["records"]]
    worlds = sorted({r["world"] for r in records})
    default = shipped_default(records)
    grid = threshold_grid(default)
    if default not in grid:
        grid.append(default)
    table = [world_counts(records, params, worlds) for params in grid]
    default_index = grid.index(default)
    objectives = {
        "shipped defaults": lambda others: default_index,
        "LOWO by F1": lambda others: max(range(len(grid)), key=lambda g: (pooled_f1(table[g], others),
                                                                         -sum(table[g][w][1] for w in others))),
        "LOWO by worlds at the bar, then F1": lambda others: max(
            range(len(grid)), key=lambda g: (sum(meets_bar(table[g][w]) for w in others), pooled_f1(table[g], others))),
    }
    print(f"{len(records)} records, {len(worlds)} worlds; shipped: {default}\n")
    print("| choice | P | R | F1 | worlds at the bar | control features flagged | chosen (folds) |")
    print("|---|---|---|---|---|---|---|")
    for name, choose in objectives.items():
        s, chosen = leave_one_world_out(table, worlds, choose)
        settings = "; ".join(
            f"{n}: " + ", ".join(f"{k}={v}" for k, v in grid[g].items() if k not in ("drop", "check"))
            for g, n in chosen.most_common(2))
        print(f"| {name} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['at_bar']}/{len(worlds)} | "
              f"{s['controls']} | {settings} |")


if __name__ == "__main__":
    main()
