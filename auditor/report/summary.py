"""The findings as an aligned text table, from a results dict (the CLI and ``AuditReport.summary`` print it)."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from typing import Any

FEATURE_COLUMN_WIDTH = 28
"""Widest spurious/core feature list in the table, in characters."""



def _width(text: str) -> int:
    """Terminal columns taken by ``text`` (wide East Asian characters take two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int, right: bool = False) -> str:
    fill = " " * max(0, width - _width(text))
    return fill + text if right else text + fill


def _feature_list(features: Sequence[Any], width: int) -> str:
    """``[3, 17, 42]``, or as many leading features as fit in ``width`` followed by "…"."""
    items = [str(f) for f in features]
    full = "[" + ", ".join(items) + "]"
    if _width(full) <= width:
        return full
    shown: list[str] = []
    for item in items:
        if _width("[" + ", ".join([*shown, item, "…"]) + "]") > width:
            break
        shown.append(item)
    return "[" + ", ".join([*shown, "…"]) + "]"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def format_summary(results: dict, feature_width: int = FEATURE_COLUMN_WIDTH) -> str:
    """The findings as an aligned text table, one line per class, from a results dict.

    Column widths follow the content (class names of any length); feature lists longer
    than ``feature_width`` end with "…" (the full lists are in results.json). Warnings come
    first; skipped classes show their reason; skipped images are counted at the end.

    Args:
        results: ``AuditReport.to_dict()`` or a loaded results.json.
        feature_width: widest spurious/core feature list, in characters.

    Returns:
        The table as one string (no trailing newline).

    Example:
        >>> print(format_summary({"classes": [{"name": "cat", "spurious_features": [3], "core_features": [],
        ...     "gap": {"gap": 0.25, "ci_low": 0.1, "ci_high": 0.4, "significant": True}}]}))
        class  spurious  core     gap  95% CI
        cat    [3]       []    +0.250  [+0.100, +0.400] *
        <BLANKLINE>
        * the interval excludes 0
    """
    confidence = ((results.get("config") or {}).get("gaps") or {}).get("confidence", 0.95)
    skipped = (results.get("meta") or {}).get("skipped_classes") or {}
    header = ("class", "spurious", "core", "gap", f"{confidence * 100:g}% CI")
    rows, any_significant = [], False
    for entry in results.get("classes", []):
        name = str(entry.get("name", entry.get("index", "?")))
        gap = entry.get("gap")
        if isinstance(gap, dict) and _finite(gap.get("gap")):
            gap_text = f"{gap['gap']:+.3f}"
            ci = f"[{gap['ci_low']:+.3f}, {gap['ci_high']:+.3f}]" if _finite(gap.get("ci_low")) and _finite(gap.get("ci_high")) else ""
            if gap.get("significant"):
                ci, any_significant = f"{ci} *".strip(), True
        else:
            gap_text, ci = "n/a", (f"skipped: {skipped[name]}" if name in skipped else "")
        rows.append((name, _feature_list(entry.get("spurious_features", []), feature_width),
                     _feature_list(entry.get("core_features", []), feature_width), gap_text, ci))
    widths = [max(_width(row[i]) for row in [header, *rows]) for i in range(4)]
    lines = [f"warning: {text}" for text in results.get("warnings") or []]
    for row in [header, *rows]:
        cells = [_pad(row[0], widths[0]), _pad(row[1], widths[1]), _pad(row[2], widths[2]), _pad(row[3], widths[3], right=True), row[4]]
        lines.append("  ".join(cells).rstrip())
    notes = []
    if any_significant:
        notes.append("* the interval excludes 0")
    images = results.get("skipped_images") or []
    if images:
        notes.append(f"{len(images)} unreadable image{'s' if len(images) != 1 else ''} skipped (listed under `skipped_images` in results.json)")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)
