"""Leave-one-world-out (LOWO) calibration of verdict thresholds on per-(class, feature) evidence.

A *record* is one audited (class, feature) pair: the numeric evidence of its verdict
(``density_ratio``, ``object_drop``, ``background_drop``, ...), the world it comes from
(``"world"``) and the ground truth (``"truth"``: bool). A *rule* maps a record and one
parameter setting to "spurious" (True) or not. :func:`calibrate_lowo` chooses, for each
world, the setting that maximises F1 over the records of all *other* worlds, and scores
the held-out world with it, so the reported numbers never saw the world they describe.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

Record = Mapping[str, Any]
Rule = Callable[[Record, Mapping[str, float]], bool]


def record_number(record: Record, key: str, default: float = math.nan) -> float:
    """``record[key]`` as a float; ``default`` (NaN) when it is absent, None or not a number."""
    value = record.get(key, default)
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def current_rule(record: Record, params: Mapping[str, float]) -> bool:
    """The verdict rule of ``auditor.labeling`` (before the verdict rework) as a function of its two thresholds.

    Spurious when the ablation is conclusive (``max(object_drop, background_drop) >=
    min_activation_drop``) and removing the background hurts more than removing the object;
    otherwise when the heat density inside the object is below ``density_threshold`` times
    the density outside.
    """
    obj, bg = record_number(record, "object_drop"), record_number(record, "background_drop")
    if max(obj, bg) >= params["min_activation_drop"]:
        return bg > obj
    return record_number(record, "density_ratio") < params["density_threshold"]


CURRENT_GRID = [
    {"density_threshold": d, "min_activation_drop": m}
    for d, m in itertools.product((0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0), (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0))
]
CURRENT_DEFAULT = {"density_threshold": 1.0, "min_activation_drop": 0.05}


def field_rule(field: str, direction: str) -> Rule:
    """A one-field rule: spurious when ``record[field] > t`` (direction ``">"``) or ``< t`` (``"<"``).

    Raises:
        ValueError: for a direction other than ``">"`` or ``"<"``.
    """
    if direction not in (">", "<"):
        raise ValueError(f"direction must be '>' or '<'; got {direction!r}")

    def rule(record: Record, params: Mapping[str, float]) -> bool:
        value = record_number(record, field)
        if math.isnan(value):
            return False
        return value > params["t"] if direction == ">" else value < params["t"]

    rule.__name__ = f"{field} {direction} t"
    return rule


def scores(records: Iterable[Record], rule: Rule, params: Mapping[str, float]) -> dict[str, float]:
    """Precision, recall and F1 of ``rule`` at ``params`` against ``record["truth"]``.

    Returns:
        ``{"precision", "recall", "f1", "flagged", "positives", "false_positives"}``; precision is NaN
        when nothing is flagged and recall NaN when there is no positive.
    """
    tp = fp = fn = 0
    for record in records:
        flagged, truth = rule(record, params), bool(record["truth"])
        tp += flagged and truth
        fp += flagged and not truth
        fn += truth and not flagged
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
    return {"precision": precision, "recall": recall, "f1": f1, "flagged": tp + fp, "positives": tp + fn, "false_positives": fp}


def calibrate_lowo(records: Sequence[Record], rule: Rule, grid: Sequence[Mapping[str, float]],
                   default: Mapping[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """Per world: the grid setting with the best F1 on the other worlds, and this world's scores with it.

    Ties in F1 go to the setting flagging fewer of the other worlds' negatives, then to the earlier one.

    Args:
        records: evidence records, each with ``"world"`` and ``"truth"``.
        rule: the rule to calibrate.
        grid: candidate parameter settings (dicts), in order of preference.
        default: the rule's shipped setting; when given, each world is also scored with it.

    Returns:
        world -> ``{"params": chosen setting, "held_out": scores on the world, "others": F1 on the others,
        "default": scores with ``default`` (if given)}``.

    Raises:
        ValueError: for an empty grid.
    """
    if not grid:
        raise ValueError("grid is empty; give at least one parameter setting")
    worlds = sorted({r["world"] for r in records})
    out: dict[str, dict[str, Any]] = {}
    for world in worlds:
        held = [r for r in records if r["world"] == world]
        others = [r for r in records if r["world"] != world]
        best, best_key = None, None
        for params in grid:
            s = scores(others, rule, params)
            f1 = -1.0 if math.isnan(s["f1"]) else s["f1"]
            key = (f1, -s["false_positives"])
            if best_key is None or key > best_key:
                best, best_key = (params, s), key
        params, other_scores = best
        out[world] = {"params": dict(params), "held_out": scores(held, rule, params), "others": other_scores}
        if default is not None:
            out[world]["default"] = scores(held, rule, default)
    return out
