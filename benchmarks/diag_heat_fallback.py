"""Should the heatmap still decide where the background tests are not conclusive? A replay on recorded evidence.

The verdict's two last paths (``verdicts.heat_fallback``) call a feature spurious when its heat lies outside the object
and either removing the object raises it (``decided_by: "object"``) or both reliances point that way without being
conclusive (``"heatmap"``). This replays the shipped rule (``bench_proving_ground.swap_rule``) on evidence JSONs of
``bench_proving_ground.py`` with the fallback on and off, one evidence set at a time (one model and one mask source;
with SAM evidence, the estimated-mask thresholds), and chooses between them leave one world out by F1
(``calibration.calibrate_lowo``, the project's calibration objective). It prints, per level, pooled precision, recall,
F1 and the control features flagged; then how often each level was chosen and the held-out scores.

Usage (from ``benchmarks/``)::

    python diag_heat_fallback.py proving_ground_evidence_class_medians.json proving_ground_evidence_held_out_r16_r17.json proving_ground_evidence_held_out_r18.json proving_ground_evidence_held_out_r19.json
    python diag_heat_fallback.py --masks sam proving_ground_evidence_calibration_sam_r33.json proving_ground_evidence_r9_r15_sam_background_grown.json proving_ground_evidence_held_out_r16_r17_sam.json proving_ground_evidence_held_out_r18_sam.json proving_ground_evidence_held_out_r19_sam.json
"""
from __future__ import annotations

import argparse
import collections

from _common import load_records
from auditor.demo.worlds.calibration import calibrate_lowo
from bench_proving_ground import shipped_default, swap_rule
from diag_recalibrate import rates, world_counts


def pooled(records: list[dict], params: dict) -> tuple[int, int, int, int]:
    """``(true positives, false positives, false negatives, control features flagged)`` of the rule at ``params``,
    summed over the worlds of ``records`` (:func:`diag_recalibrate.world_counts`)."""
    per_world = world_counts(records, params, sorted({r["world"] for r in records}))
    return tuple(sum(counts[i] for counts in per_world.values()) for i in range(4))


def line(counts: tuple[int, int, int, int]) -> str:
    """One table row's cells: precision, recall, F1 (:func:`diag_recalibrate.rates`), the counts and the controls."""
    tp, fp, fn, controls = counts
    precision, recall, f1 = rates(tp, fp, fn)
    return f"{precision:.3f} | {recall:.3f} | {f1:.3f} | {tp}/{tp + fp}/{tp + fn} | {controls}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evidence", nargs="+", help="evidence JSONs of bench_proving_ground.py")
    parser.add_argument("--model", default="cnn16")
    parser.add_argument("--masks", default="dataset", choices=("dataset", "sam"))
    args = parser.parse_args(argv)
    records = [r for r in load_records(args.evidence) if r["model"] == args.model and r["masks"] == args.masks]
    default = shipped_default(records)
    grid = [{**default, "fallback": level} for level in (default["fallback"], not default["fallback"])]
    print(f"{len(records)} verdicts of {len({r['world'] for r in records})} worlds ({args.model}, {args.masks} masks); "
          f"shipped heat fallback: {'on' if default['fallback'] else 'off'}\n")
    print("| heat fallback | P | R | F1 | TP/flagged/true | control features flagged |")
    print("|---|---|---|---|---|---|")
    for params in grid:
        print(f"| {'on' if params['fallback'] else 'off'} | {line(pooled(records, params))} |")
    lowo = calibrate_lowo(records, swap_rule, grid)
    chosen = collections.Counter("on" if r["params"]["fallback"] else "off" for r in lowo.values())
    held_out = [0, 0, 0, 0]
    for world, result in lowo.items():
        counts = pooled([r for r in records if r["world"] == world], result["params"])
        held_out = [a + b for a, b in zip(held_out, counts)]
    print(f"\nLeave one world out by F1: chosen {dict(chosen)}; held out P | R | F1 | TP/flagged/true | controls: "
          f"{line(tuple(held_out))}")


if __name__ == "__main__":
    main()
