"""Matplotlib plots for the HTML report, returned as inline SVG data URIs.

Every plot is drawn with matplotlib's object-oriented :class:`~matplotlib.figure.Figure`
API (no pyplot, no global backend switch, nothing to close) and saved as SVG with text
kept as text, no date stamp and a fixed id salt, so the same numbers give the same bytes.
The result is a ``data:image/svg+xml;base64,...`` string for an ``<img src>``: the page
stays self-contained and the plots' internal ids cannot clash with each other.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

import matplotlib
import matplotlib.style
from matplotlib.figure import Figure

BEFORE = "#0969da"
AFTER = "#fb8500"
SIGNIFICANT = "#cf222e"
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
_RC = {"svg.fonttype": "none", "svg.hashsalt": "auditor-report", "font.size": 8, "axes.titlesize": 9}


def finite(value: Any) -> bool:
    """True for an int or float (not a bool) that is finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def svg_data_uri(figure: Figure) -> str:
    """Serialise ``figure`` as SVG and return it as a base64 data URI.

    Args:
        figure: a matplotlib figure (built with ``Figure(...)``, no pyplot).

    Returns:
        ``"data:image/svg+xml;base64,..."``.
    """
    buffer = io.BytesIO()
    with matplotlib.style.context(_RC):
        figure.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight", pad_inches=0.04)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width_in: float, height_in: float) -> Figure:
    with matplotlib.style.context(_RC):
        return Figure(figsize=(width_in, height_in), dpi=100)


def decile_points(values: Sequence[float | None] | None) -> tuple[list[int], list[float]]:
    """Deciles (1-based) and accuracies of the finite entries of ``values``.

    Args:
        values: accuracy per decile (None or NaN for an empty decile), least spurious first.

    Returns:
        ``(deciles, accuracies)`` with the empty deciles left out.
    """
    points = [(i + 1, float(v)) for i, v in enumerate(values or []) if finite(v)]
    return [d for d, _ in points], [a for _, a in points]


def decile_plot(
    before: Sequence[float | None] | None,
    after: Sequence[float | None] | None = None,
    title: str = "",
) -> str | None:
    """Accuracy by spuriosity decile, before (solid blue) and after (dashed orange) head tuning.

    Args:
        before: up to 10 accuracies (None for an empty decile), least spurious first.
        after: the same after tuning, or None.
        title: plot title.

    Returns:
        An SVG data URI, or None when neither series has a finite value.
    """
    series = [(decile_points(before), BEFORE, "before tuning", "-"), (decile_points(after), AFTER, "after tuning", "--")]
    series = [s for s in series if s[0][0]]
    if not series:
        return None
    with matplotlib.style.context(_RC):
        figure = _figure(3.8, 2.1)
        axes = figure.add_subplot()
        for (x, y), colour, label, style in series:
            axes.plot(x, y, style, color=colour, marker="o", markersize=3, linewidth=1.5, label=label)
        axes.set_xlim(0.5, 10.5)
        axes.set_ylim(-0.03, 1.03)
        axes.set_xticks(range(1, 11))
        axes.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
        axes.grid(True, color="#eaeef2", linewidth=0.6)
        axes.set_xlabel("spuriosity decile (1 = least, 10 = most)")
        axes.set_ylabel("accuracy")
        if title:
            axes.set_title(title)
        axes.legend(loc="lower left", fontsize=7, frameon=False)
        return svg_data_uri(figure)


def interval_plot(gap: Any, low: Any, high: Any) -> str | None:
    """A gap as a dot with its confidence interval as a bar on a [-1, 1] axis.

    Args:
        gap: the gap (top-k minus bottom-k accuracy).
        low, high: its confidence interval.

    Returns:
        An SVG data URI, or None when any of the three is missing or not finite.
    """
    if not (finite(gap) and finite(low) and finite(high)):
        return None

    def clip(value: float) -> float:
        return max(-1.0, min(1.0, float(value)))

    significant = low > 0 or high < 0
    with matplotlib.style.context(_RC):
        figure = _figure(2.6, 0.5)
        axes = figure.add_subplot()
        axes.axvline(0, color="#57606a", linestyle=":", linewidth=0.8)
        axes.plot([clip(low), clip(high)], [0, 0], color=SIGNIFICANT if significant else "#8c959f", linewidth=4, solid_capstyle="butt")
        axes.plot([clip(gap)], [0], "o", color="#1f2328", markersize=5)
        axes.set_xlim(-1.05, 1.05)
        axes.set_ylim(-1, 1)
        axes.set_xticks([-1, -0.5, 0, 0.5, 1])
        axes.set_xticklabels(["-1", "", "0", "", "+1"])
        axes.set_yticks([])
        for side in ("left", "right", "top"):
            axes.spines[side].set_visible(False)
        return svg_data_uri(figure)


def comparison_plot(models: Sequence[dict]) -> str | None:
    """Each model's accuracy on low- vs high-spuriosity images, one labelled point per model.

    Points under the diagonal are models that do worse on spurious-looking images.

    Args:
        models: dicts with ``name``, ``low_accuracy`` and ``high_accuracy`` (the
            ``models`` list of :func:`auditor.compare.compare_models`).

    Returns:
        An SVG data URI, or None when no model has both accuracies.
    """
    points = [(str(m.get("name", "?")), m.get("low_accuracy"), m.get("high_accuracy")) for m in models if isinstance(m, dict)]
    points = [(n, x, y) for n, x, y in points if finite(x) and finite(y)]
    if not points:
        return None
    with matplotlib.style.context(_RC):
        figure = _figure(3.6, 3.0)
        axes = figure.add_subplot()
        axes.plot([0, 1], [0, 1], "--", color="#bbbbbb", linewidth=0.8)
        for i, (name, x, y) in enumerate(points):
            colour = PALETTE[i % len(PALETTE)]
            axes.plot([x], [y], "o", color=colour, markersize=5)
            axes.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), color=colour, fontsize=7)
        axes.set_xlim(0, 1.02)
        axes.set_ylim(0, 1.02)
        axes.set_aspect("equal")
        axes.set_xlabel("accuracy, low spuriosity")
        axes.set_ylabel("accuracy, high spuriosity")
        axes.grid(True, color="#eaeef2", linewidth=0.6)
        return svg_data_uri(figure)


__all__ = ["comparison_plot", "decile_plot", "decile_points", "finite", "interval_plot", "svg_data_uri"]
