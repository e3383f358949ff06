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

With ``--separation-levels`` and ``--statistic-levels`` the separation path and the class swap statistic
(``verdicts.class_swap_statistic``) are chosen with the thresholds.

With ``--swap-levels`` only the swap threshold is chosen, the others kept at their shipped values (with SAM evidence:
``verdicts.estimated_mask_swap_threshold``, alone or with a variant).

With ``--test-variants NAME=FILE[,FILE...] ...`` (the same variant names) each objective also chooses one setting on
all the worlds of ``--variants`` and scores it on the test worlds, which took no part in the choice: calibrate on some
worlds, report on others.

With ``--variants NAME=FILE[,FILE...] ...`` the evidence comes in variants audited with different settings (e.g.
``verdicts.swap_relight`` off and on, same worlds and seeds), and the variant is chosen with the thresholds: each
objective then also runs with the thresholds at their shipped values and only the variant chosen, and the first
variant with the shipped thresholds is the "shipped defaults" line.

Usage (from ``benchmarks/``), one evidence set at a time (one model and one mask source)::

    python diag_recalibrate.py proving_ground_evidence_selection_top.json proving_ground_evidence_held_out_r4.json proving_ground_evidence_held_out_r5.json
    python diag_recalibrate.py --variants off=proving_ground_evidence_selection_top.json,proving_ground_evidence_held_out_r4.json on=proving_ground_evidence_relight.json
"""
from __future__ import annotations

import argparse
import collections
import math
from collections.abc import Callable, Sequence

from _common import load_records
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


def print_test(test_variants: dict[str, list[dict]], variants: dict[str, list[dict]], settings: list[tuple[str, dict]],
               table: list[dict[str, Counts]], worlds: Sequence[str],
               objectives: dict[str, Callable[[Sequence[str]], int]]) -> None:
    """Each objective's setting chosen on every world of ``table``, scored on the worlds of ``test_variants``."""
    if set(test_variants) != set(variants):
        raise SystemExit(f"--test-variants names {sorted(test_variants)} differ from --variants names {sorted(variants)}")
    test_worlds = sorted({r["world"] for records in test_variants.values() for r in records})
    if set(test_worlds) & set(worlds):
        raise SystemExit(f"test worlds also in the choice: {sorted(set(test_worlds) & set(worlds))}")
    print(f"\nChosen on all {len(worlds)} worlds above, scored on {len(test_worlds)} other worlds:\n")
    print("| choice | setting | P | R | F1 | worlds at the bar | control features flagged | per world P / R / ctrl |")
    print("|---|---|---|---|---|---|---|---|")
    for name, choose in objectives.items():
        variant, params = settings[choose(worlds)]
        per_world = world_counts(test_variants[variant], params, test_worlds)
        tp, fp, fn, controls = (sum(c[i] for c in per_world.values()) for i in range(4))
        precision, recall, f1 = rates(tp, fp, fn)
        at_bar = sum(meets_bar(c) for c in per_world.values())
        described = (f"{variant} " if len(variants) > 1 else "") + ", ".join(
            f"{k}={v}" for k, v in params.items() if k not in ("drop", "check"))
        cells = "; ".join(f"{w}: " + "{:.2f} / {:.2f} / {}".format(*rates(*c[:3])[:2], c[3]).replace("nan", "n/a")
                          for w, c in per_world.items())
        print(f"| {name} | {described} | {precision:.3f} | {recall:.3f} | {f1:.3f} | {at_bar}/{len(test_worlds)} | "
              f"{controls} | {cells} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evidence", nargs="*", help="evidence JSONs of one model and one mask source (merged)")
    parser.add_argument("--variants", nargs="+", default=None, metavar="NAME=FILE[,FILE...]",
                        help="evidence of the same worlds audited with different settings; the first is the shipped one")
    parser.add_argument("--test-variants", nargs="+", default=None, metavar="NAME=FILE[,FILE...]",
                        help="the same variants on other worlds: score there the setting each objective chooses on all "
                             "the worlds of --variants")
    parser.add_argument("--per-world", action="store_true",
                        help="also print each world's P / R / control features for every variant at the shipped thresholds")
    parser.add_argument("--swap-levels", nargs="+", type=float, default=None, metavar="THRESHOLD",
                        help="choose only the swap threshold among these (every other threshold at its shipped value): "
                             "with SAM evidence, the choice of verdicts.estimated_mask_swap_threshold")
    parser.add_argument("--separation-levels", nargs="+", type=float, default=None, metavar="AUROC",
                        help="also choose verdicts.separation_threshold among these (0 = off); needs evidence with swap_auroc")
    parser.add_argument("--statistic-levels", nargs="+", choices=("mean", "median"), default=None,
                        help="also choose verdicts.class_swap_statistic among these; needs evidence with "
                             "class_median_swap_reliance")
    args = parser.parse_args(argv)
    if bool(args.evidence) == bool(args.variants):
        parser.error("give either evidence files or --variants")
    if args.test_variants and not args.variants:
        parser.error("--test-variants needs --variants")

    def parse_variants(items: list[str], flag: str) -> dict[str, list[dict]]:
        parsed = {}
        for item in items:
            name, sep, files = item.partition("=")
            if not sep or not files:
                parser.error(f"{flag} entries look like NAME=FILE[,FILE...]; got {item!r}")
            parsed[name] = load_records(files.split(","))
        return parsed

    if args.variants:
        variants = parse_variants(args.variants, "--variants")
    else:
        variants = {"": load_records(args.evidence)}
    world_sets = {name: sorted({r["world"] for r in records}) for name, records in variants.items()}
    worlds = next(iter(world_sets.values()))
    if any(ws != worlds for ws in world_sets.values()):
        raise SystemExit(f"the variants cover different worlds: { {n: len(ws) for n, ws in world_sets.items()} }")
    first = next(iter(variants.values()))
    default = shipped_default(first)
    grid = threshold_grid(default) if args.swap_levels is None else [{**default, "swap": level} for level in args.swap_levels]
    if default not in grid:
        grid.append(default)
    if args.separation_levels:
        grid = [{**params, "separation": level} for params in grid for level in args.separation_levels]
        if default not in grid:
            grid.append(default)
    if args.statistic_levels:
        grid = [{**params, "statistic": level} for params in grid for level in args.statistic_levels]
        if default not in grid:
            grid.append(default)
    settings = [(name, params) for name in variants for params in grid]
    table = [world_counts(variants[name], params, worlds) for name, params in settings]
    default_index = settings.index((next(iter(variants)), default))
    everything = range(len(settings))
    shipped_thresholds = [i for i, (_, params) in enumerate(settings) if params == default]

    def fixed(index: int) -> Callable[[Sequence[str]], int]:
        return lambda others: index

    def by_f1(candidates: Sequence[int]) -> Callable[[Sequence[str]], int]:
        return lambda others: max(candidates, key=lambda g: (pooled_f1(table[g], others), -sum(table[g][w][1] for w in others)))

    def by_bar(candidates: Sequence[int]) -> Callable[[Sequence[str]], int]:
        return lambda others: max(candidates, key=lambda g: (sum(meets_bar(table[g][w]) for w in others),
                                                             pooled_f1(table[g], others)))

    objectives = {"shipped defaults": fixed(default_index),
                  "LOWO by F1": by_f1(everything),
                  "LOWO by worlds at the bar, then F1": by_bar(everything)}
    if len(variants) > 1:
        objectives["variant only by F1 (shipped thresholds)"] = by_f1(shipped_thresholds)
        objectives["variant only by worlds at the bar (shipped thresholds)"] = by_bar(shipped_thresholds)
        for name in variants:
            objectives[f"{name}, shipped thresholds (no choice)"] = fixed(settings.index((name, default)))
    print(f"{sum(map(len, variants.values()))} records, {len(worlds)} worlds, variants {list(variants) if len(variants) > 1 else 'none'}; "
          f"shipped: {default}\n")
    print("| choice | P | R | F1 | worlds at the bar | control features flagged | chosen (folds) |")
    print("|---|---|---|---|---|---|---|")
    for name, choose in objectives.items():
        s, chosen = leave_one_world_out(table, worlds, choose)
        described = "; ".join(
            f"{n}: " + (f"{settings[g][0]} " if len(variants) > 1 else "")
            + ", ".join(f"{k}={v}" for k, v in settings[g][1].items() if k not in ("drop", "check")
                        and (k != "separation" or args.separation_levels) and (k != "statistic" or args.statistic_levels))
            for g, n in chosen.most_common(2))
        print(f"| {name} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['at_bar']}/{len(worlds)} | "
              f"{s['controls']} | {described} |")
    if args.test_variants:
        print_test(parse_variants(args.test_variants, "--test-variants"), variants, settings, table, worlds, objectives)
    if args.per_world:
        names = list(variants)
        print("\n| world | " + " | ".join(f"{n} P / R / ctrl" for n in names) + " |")
        print("|---|" + "---|" * len(names))
        rows = {n: table[settings.index((n, default))] for n in names}
        for world in worlds:
            cells = []
            for n in names:
                tp, fp, fn, controls = rows[n][world]
                precision, recall, _ = rates(tp, fp, fn)
                cells.append(f"{precision:.2f} / {recall:.2f} / {controls}".replace("nan", "n/a"))
            print(f"| {world} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
