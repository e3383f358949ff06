"""The "neurontune" section: suppressed dimensions and accuracy before/after neuron regulation."""

from __future__ import annotations

from markupsafe import Markup

from auditor.report.sections.base import Page, lookup, register_section


@register_section("neurontune")
def render(section: dict, page: Page) -> Markup:
    """A summary of the suppressed dimensions and a per-class before/after accuracy table.

    Args:
        section: ``results["sections"]["neurontune"]`` (see :func:`auditor.neurontune.run_neurontune`).
        page: the rendering context.

    Returns:
        Safe HTML.
    """
    before = section.get("before") or {}
    after = section.get("after") or {}
    overlap = section.get("overlap") or {}
    per_class = overlap.get("per_class") or {}
    rows = []
    for c, accuracy in (before.get("class_accuracy") or {}).items():
        suppressed = lookup(per_class, c, {}) or {}
        rows.append({
            "name": page.class_name(c),
            "before": accuracy,
            "after": lookup(after.get("class_accuracy") or {}, c),
            "suppressed": suppressed.get("spurious_suppressed", []) if isinstance(suppressed, dict) else [],
        })
    return page.render("sections/neurontune.html.j2", name="neurontune", section=section, before=before, after=after,
                       overlap=overlap, rows=rows)
