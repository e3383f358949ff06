"""Which feature score should rank a class's images: the mean of its spurious features, or its cue direction?

Reads proving-ground rows (``bench_proving_ground.py --rows-json``) whose audits recorded every score side by side
(``cue_auroc_by_score``: "mean" and "cue_direction@<ranking.direction_shrinkage>", all from the same verdicts), and:

- prints each score's spuriosity AUROC over every ranked cue class (mean over classes, and how many reach 0.9);
- chooses the score leave one world out (each world scored with the score that has the best mean AUROC on the other
  worlds), so the choice of ``ranking.feature_score`` and ``ranking.direction_shrinkage`` is made as the other
  defaults are;
- with ``--test`` rows, scores the score chosen on all the first rows' worlds on those other worlds;
- where the rows carry the tuning candidates of ``--tuning-keys feature_score`` ("cue direction <level>"), compares
  their test worst-group accuracy with the shipped low-spuriosity head, balanced and skewed validation.

Usage (from ``benchmarks/``)::

    python diag_ranking_score.py rows_a.json rows_b.json --test rows_held_out.json
"""
from __future__ import annotations

import argparse
import collections
import json
import math
from pathlib import Path

import numpy as np

from _common import meets_repair_bar


def load_rows(paths: list[str]) -> list[dict]:
    """The rows of ``bench_proving_ground.py --rows-json`` files that recorded ``cue_auroc_by_score``.

    A cue direction measured against the clean classes (``ranking.direction_reference``; rows before it measured
    against every other class) is renamed "cue_direction[clean]@<level>", so that audits of the same worlds and seeds
    under either reference can be read together (their verdicts, and so their "mean" scores, are the same)."""
    rows = [r for path in paths for r in json.loads(Path(path).read_text())]
    for r in rows:
        if r.get("direction_reference") == "clean_classes":
            r["cue_auroc_by_score"] = {k.replace("cue_direction@", "cue_direction[clean]@"): v
                                       for k, v in (r.get("cue_auroc_by_score") or {}).items()}
    return [r for r in rows if r.get("cue_auroc_by_score")]


def class_aurocs(rows: list[dict]) -> dict[str, dict[tuple, float]]:
    """score -> {(world, masks, seed, class): AUROC}, over the classes that every score ranks."""
    out: dict[str, dict[tuple, float]] = collections.defaultdict(dict)
    for row in rows:
        for score, by_class in row["cue_auroc_by_score"].items():
            for name, value in by_class.items():
                if value is not None and math.isfinite(value):
                    out[score][(row["world"], row.get("masks"), int(row["seed"]), name)] = value
    common = set.intersection(*(set(v) for v in out.values())) if out else set()
    return {score: {k: v for k, v in values.items() if k in common} for score, values in out.items()}


def summary(values: dict[tuple, float]) -> str:
    """``mean AUROC, reaching 0.9 / classes``."""
    v = np.array(list(values.values()))
    return f"{v.mean():.3f} | {(v >= 0.9).sum()}/{len(v)}" if len(v) else "n/a | 0/0"


def choose(aurocs: dict[str, dict[tuple, float]], worlds: set[str]) -> str:
    """The score with the best mean AUROC over ``worlds`` (ties: the first in sorted order, "mean" before others)."""
    def mean_on(score: str) -> float:
        v = [a for (w, *_), a in aurocs[score].items() if w in worlds]
        return float(np.mean(v)) if v else -math.inf
    return max(sorted(aurocs, key=lambda s: (s != "mean", s)), key=mean_on)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+", help="rows JSONs whose audits recorded cue_auroc_by_score")
    parser.add_argument("--test", nargs="*", default=[], help="rows of other worlds: score there the choice made on all the first")
    parser.add_argument("--skip", nargs="*", default=[], metavar="PREFIX",
                        help="leave out the scores whose names start so (a score that only some rows recorded would "
                             "narrow every comparison to those rows)")
    args = parser.parse_args(argv)
    rows = load_rows(args.rows)
    for row in rows:
        row["cue_auroc_by_score"] = {k: v for k, v in row["cue_auroc_by_score"].items()
                                     if not any(k.startswith(prefix) for prefix in args.skip)}
    aurocs = class_aurocs(rows)
    worlds = sorted({r["world"] for r in rows})
    print(f"{len(rows)} audits, {len(worlds)} worlds, {len(next(iter(aurocs.values()), {}))} ranked cue classes\n")
    print("| score | mean spuriosity AUROC | classes at 0.9 or more |")
    print("|---|---|---|")
    for score in sorted(aurocs, key=lambda s: (s != "mean", s)):
        print(f"| {score} | {summary(aurocs[score])} |")

    held_out: dict[tuple, float] = {}
    chosen: collections.Counter = collections.Counter()
    for world in worlds:
        pick = choose(aurocs, set(worlds) - {world})
        chosen[pick] += 1
        held_out.update({k: v for k, v in aurocs[pick].items() if k[0] == world})
    print(f"\nLeave one world out by mean AUROC: {summary(held_out)} (the mean score: {summary(aurocs['mean'])}); "
          f"chosen: {dict(chosen.most_common())}")
    per_world = collections.defaultdict(list)
    for key, value in held_out.items():
        per_world[key[0]].append(value - aurocs["mean"][key])
    worse = sorted((float(np.mean(v)), w) for w, v in per_world.items())
    print("Held-out change against the mean, worst and best worlds: "
          + "; ".join(f"{w} {d:+.3f}" for d, w in worse[:3]) + " ... " + "; ".join(f"{w} {d:+.3f}" for d, w in worse[-3:]))
    changes = np.array([value - aurocs["mean"][key] for key, value in held_out.items()])
    print(f"Held-out class-seeds against the mean score: better by more than 0.05 on {(changes > 0.05).sum()}, worse by "
          f"more than 0.05 on {(changes < -0.05).sum()} (more than 0.1: {(changes < -0.1).sum()}); below 0.8: "
          f"{sum(v < 0.8 for v in held_out.values())} (the mean score: {sum(v < 0.8 for v in aurocs['mean'].values())})")

    if args.test:
        test = class_aurocs(load_rows(args.test))
        pick = choose(aurocs, set(worlds))
        print(f"\nChosen on all {len(worlds)} worlds: {pick}. On the test rows: {summary(test[pick])} "
              f"(mean score: {summary(test['mean'])})")

    tuned = [r for r in rows + (load_rows(args.test) if args.test else []) if any(k.startswith("cue direction") for k in r.get("candidates", {}))]
    if tuned:
        print("\nTest worst-group accuracy (mean over audits; balanced / skewed validation), the same audits:\n")
        print("| head | balanced | skewed | repair bar met, balanced / skewed (worlds with a cue) |")
        print("|---|---|---|---|")
        heads = ["low_spuriosity"] + sorted(k for k in tuned[0]["candidates"] if k.startswith("cue direction")
                                            or k == "mean score")
        for head in heads:
            cells, bars = [], []
            for kind in ("balanced", "skewed"):
                values, by_world = [], collections.defaultdict(list)
                for r in tuned:
                    block = r if kind == "balanced" else (r.get("skewed") or {})
                    source = block.get("methods", {}) if head == "low_spuriosity" else block.get("candidates", {})
                    if head in source and "ERM" in block.get("methods", {}):
                        wg = source[head]["worst_group"]
                        values.append(wg)
                        by_world[r["world"]].append((wg, source[head]["accuracy"], block["methods"]["ERM"],
                                                     block["methods"].get("oracle")))
                cells.append(f"{np.mean(values):.3f}" if values else "n/a")
                met = 0
                for w, entries in by_world.items():
                    if w == "no-cue":
                        continue
                    wg, acc = np.mean([e[0] for e in entries]), np.mean([e[1] for e in entries])
                    erm_wg, erm_acc = np.mean([e[2]["worst_group"] for e in entries]), np.mean([e[2]["accuracy"] for e in entries])
                    oracle = [e[3]["worst_group"] for e in entries if e[3]]
                    met += meets_repair_bar(wg, acc, erm_wg, erm_acc, float(np.mean(oracle)) if oracle else None)
                bars.append(f"{met}/{len([w for w in by_world if w != 'no-cue'])}")
            print(f"| {head} | {cells[0]} | {cells[1]} | {' / '.join(bars)} |")


if __name__ == "__main__":
    main()
