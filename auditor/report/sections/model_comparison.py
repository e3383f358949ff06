"""The "model_comparison" section: several models' gaps on one spuriosity ranking."""

from __future__ import annotations

from markupsafe import Markup

from auditor.report import plots
from auditor.report.sections.base import Page, lookup, register_section


@register_section("model_comparison")
def render(section: dict, page: Page) -> Markup:
    """A table of each model's accuracy (overall, low/high spuriosity, per-class gaps), the gap correlation and a plot.

    Args:
        section: ``results["sections"]["model_comparison"]`` (see :func:`auditor.compare.compare_models`).
        page: the rendering context.

    Returns:
        Safe HTML.
    """
    classes = list(section.get("classes") or [])
    models = []
    for model in section.get("models") or []:
        if not isinstance(model, dict):
            continue
        gaps = model.get("gaps") or {}
        models.append({**model, "class_gaps": [(lookup(gaps, c, {}) or {}).get("gap") for c in classes]})
    plot = plots.comparison_plot(models)
    return page.render("sections/model_comparison.html.j2", name="model_comparison", section=section, models=models,
                       class_headers=[page.class_name(c) for c in classes], plot=plot)
