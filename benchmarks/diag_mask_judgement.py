"""Can the recorded evidence tell a SAM mask that misses the object from a class that really relies on its cue?

SAM's control flags come from masks that miss the object (``RESULTS.md``, stop 21 diagnosis): the flagged features'
object reliance is low because the "object" removed is not the object. A label-free judgement of the mask would
have to see that at the class level. This prints, per class and seed, the largest object reliance among the class's
audited features for (a) control classes the shipped rule flags and (b) cue classes with a correctly flagged feature,
lowest first: a class-level cut-off can only work if (a) sits below (b).

Usage (from ``benchmarks/``)::

    python diag_mask_judgement.py proving_ground_evidence_cnn16_sam.json proving_ground_evidence_held_out_sam.json proving_ground_evidence_held_out_r2_sam.json proving_ground_evidence_held_out_r3_sam.json proving_ground_evidence_held_out_r4_sam.json
"""
from __future__ import annotations

import argparse
import collections
import math

from _common import load_records
from auditor.demo.worlds.calibration import record_number
from bench_proving_ground import shipped_default, swap_rule


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evidence", nargs="+", help="evidence JSONs of one model and one mask source (merged)")
    parser.add_argument("--show", type=int, default=10, help="cue classes to list, lowest first")
    args = parser.parse_args(argv)
    records = load_records(args.evidence)
    default = shipped_default(records)
    classes = collections.defaultdict(list)
    for record in records:
        classes[(record["world"], record["seed"], record["class_name"])].append((record, swap_rule(record, default)))

    def largest_object_reliance(entries) -> float:
        values = [record_number(r, "object_reliance") for r, _ in entries]
        values = [v for v in values if math.isfinite(v)]
        return max(values) if values else math.nan

    flagged_controls, true_cue_classes = [], []
    for key, entries in classes.items():
        if entries[0][0].get("control") and any(flag for _, flag in entries):
            flagged_controls.append((largest_object_reliance(entries), key))
        elif not entries[0][0].get("control") and any(flag and r["truth"] for r, flag in entries):
            true_cue_classes.append((largest_object_reliance(entries), key))
    print("| kind | world | seed | class | largest object reliance |")
    print("|---|---|---|---|---|")
    for kind, rows in (("flagged control", sorted(flagged_controls)),
                       ("cue class, true flag", sorted(true_cue_classes)[:args.show])):
        for value, (world, seed, name) in rows:
            print(f"| {kind} | {world} | {seed} | {name} | {value:.2f} |")
    highest_control = max((c for c, _ in flagged_controls), default=math.nan)
    below = sum(v < highest_control for v, _ in true_cue_classes)
    print(f"\n{len(true_cue_classes)} cue classes with a true flag; {below} of them lie below the largest value of a "
          f"flagged control ({len(flagged_controls)} flagged control class-seeds)")


if __name__ == "__main__":
    main()
