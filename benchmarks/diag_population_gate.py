"""Should the verdict read its class's random images as well as its top ones? A replay on recorded evidence.

The swaps judge a feature on its class's top-activating images, whose objects all drive it: against that small spread
a faint cue's effect looks large, and features just under the truth line are flagged, while a cue feature whose top
images are driven by the object is missed. The population AUROC (``verdicts.population_images``) pastes a random
sample of the class's objects onto same-class and other-class backgrounds and ranks the feature's activations, as the
truth line ranks the class's images with and without the cue. This replays the shipped rule
(``bench_proving_ground.swap_rule``) with the two population checks over a grid: the gate
(``verdicts.population_threshold``: a spurious verdict needs the AUROC to reach it) and the flag path
(``verdicts.population_flag_threshold``: a core verdict whose AUROC reaches it turns spurious), each against the clean
classes' or every other class's backgrounds (``verdicts.population_reference``). Evidence must be audited with
``--set verdicts.population_images=32``; one evidence set at a time.

It prints, per setting, pooled precision, recall, F1, the worlds at the bar and the control features flagged; then the
setting chosen leave one world out by F1 (ties: fewer false flags, then the earlier setting, as
``calibration.calibrate_lowo``), how often, and the held-out scores. With ``--test`` the setting chosen on every
calibration world is also scored on other worlds, which took no part in the choice.

Usage (from ``benchmarks/``)::

    python diag_population_gate.py proving_ground_evidence_population.json --test proving_ground_evidence_held_out_r22.json
"""
from __future__ import annotations

import argparse
import collections
import math
from collections.abc import Sequence

from _common import load_records
from bench_proving_ground import shipped_default
from diag_recalibrate import Counts, leave_one_world_out, meets_bar, rates, world_counts

GATES = (0.0, 0.6, 0.65, 0.7, 0.72, 0.74, 0.76, 0.78, 0.8)
FLAGS = (0.0, 0.76, 0.78, 0.8, 0.82, 0.84, 0.86, 0.88, 0.9)
REFERENCES = ("clean_classes", "other_classes")


def label(params: dict) -> str:
    """A grid setting in a table cell."""
    if not params["population"] and not params["population_flag"]:
        return "off"
    gate = f"gate {params['population']:g}" if params["population"] else "no gate"
    flag = f"flag {params['population_flag']:g}" if params["population_flag"] else "no flag"
    return f"{gate}, {flag}, {params['population_reference']}"


def line(per_world: dict[str, Counts]) -> str:
    """Pooled precision, recall, F1, counts, worlds at the bar and control features flagged."""
    tp, fp, fn, controls = (sum(c[i] for c in per_world.values()) for i in range(4))
    precision, recall, f1 = rates(tp, fp, fn)
    at_bar = sum(meets_bar(c) for c in per_world.values())
    return f"{precision:.3f} | {recall:.3f} | {f1:.3f} | {tp}/{tp + fp}/{tp + fn} | {at_bar}/{len(per_world)} | {controls}"


def best_on(table: list[dict[str, Counts]], worlds: Sequence[str], min_precision: float = 0.0) -> int:
    """The grid index with the best pooled F1 on ``worlds``; ties to fewer false flags, then the earlier index. With
    ``min_precision`` only settings whose pooled precision there reaches it compete (all of them when none does)."""
    def key(i: int) -> tuple[bool, float, int, int]:
        tp, fp, fn = (sum(table[i][w][k] for w in worlds) for k in range(3))
        precision, _, f1 = rates(tp, fp, fn)
        return (not precision < min_precision, -1.0 if math.isnan(f1) else f1, -fp, -i)
    return max(range(len(table)), key=key)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evidence", nargs="+", help="calibration evidence JSONs of bench_proving_ground.py")
    parser.add_argument("--test", nargs="*", default=[], help="evidence JSONs of worlds to score the choice on")
    parser.add_argument("--min-precision", type=float, default=0.9,
                        help="the second objective: best F1 among settings at least this precise (the issue's bar)")
    parser.add_argument("--model", default="cnn16")
    parser.add_argument("--masks", default="dataset", choices=("dataset", "sam"))
    args = parser.parse_args(argv)
    select = lambda r: r["model"] == args.model and r["masks"] == args.masks
    records = [r for r in load_records(args.evidence) if select(r)]
    if not any("population_swap_auroc" in r for r in records):
        raise SystemExit("no population AUROC in this evidence: audit with --set verdicts.population_images=32")
    default = shipped_default(records)
    off = {**default, "population": 0.0, "population_flag": 0.0}
    grid = [off] + [{**default, "population": g, "population_flag": f, "population_reference": ref}
                    for ref in REFERENCES for g in GATES for f in FLAGS if g or f]
    worlds = sorted({r["world"] for r in records})
    table = [world_counts(records, params, worlds) for params in grid]
    print(f"{len(records)} verdicts of {len(worlds)} worlds ({args.model}, {args.masks} masks)\n")
    print("| population checks | P | R | F1 | TP/flagged/true | worlds at the bar | control features flagged |")
    print("|---|---|---|---|---|---|---|")
    for params, per_world in zip(grid, table):
        print(f"| {label(params)} | {line(per_world)} |")
    objectives = {"F1": 0.0, f"F1 among settings with precision >= {args.min_precision:g}": args.min_precision}
    print(f"\noff: {line(table[0])}")
    for name, min_precision in objectives.items():
        held_out, chosen = leave_one_world_out(table, worlds, lambda others, p=min_precision: best_on(table, others, p))
        print(f"\nLeave one world out by {name}: chosen "
              f"{dict(collections.Counter({label(grid[i]): n for i, n in chosen.items()}))}")
        print(f"held out: P {held_out['precision']:.3f} R {held_out['recall']:.3f} F1 {held_out['f1']:.3f}, "
              f"{held_out['at_bar']}/{len(worlds)} worlds at the bar, {held_out['controls']} control features")
    if args.test:
        test = [r for r in load_records(args.test) if select(r)]
        test_worlds = sorted({r["world"] for r in test})
        print(f"\nTest worlds, with the setting chosen on every calibration world ({len(test)} verdicts, "
              f"{len(test_worlds)} worlds):")
        print("| objective | setting | P | R | F1 | TP/flagged/true | worlds at the bar | control features flagged |")
        print("|---|---|---|---|---|---|---|---|")
        print(f"| - | off | {line(world_counts(test, off, test_worlds))} |")
        for name, min_precision in objectives.items():
            best = grid[best_on(table, worlds, min_precision)]
            print(f"| {name} | {label(best)} | {line(world_counts(test, best, test_worlds))} |")


if __name__ == "__main__":
    main()
