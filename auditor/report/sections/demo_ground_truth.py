"""The "demo_ground_truth" section: the demo world's planted cues against the audit's findings."""

from __future__ import annotations

from markupsafe import Markup

from auditor.report.sections.base import Page, register_section


@register_section("demo_ground_truth")
def render(section: dict, page: Page) -> Markup:
    """Per class: the planted cue and whether the audit flagged it; cue AUROCs; test accuracy per head.

    Args:
        section: ``results["sections"]["demo_ground_truth"]`` (see :func:`auditor.demo.run.run_demo`):
            ``truth`` {class: {cue, flagged}}, ``auroc`` {class: float}, ``test`` {head: {accuracy, worst_group}}.
        page: the rendering context.

    Returns:
        Safe HTML.
    """
    truth = []
    for name, row in (section.get("truth") or {}).items():
        row = row if isinstance(row, dict) else {}
        cue, flagged = row.get("cue"), bool(row.get("flagged"))
        truth.append({"name": name, "cue": cue, "flagged": flagged, "ok": flagged == (cue is not None)})
    tests = [(name, row) for name, row in (section.get("test") or {}).items() if isinstance(row, dict)]
    return page.render("sections/demo_ground_truth.html.j2", name="demo_ground_truth", section=section, truth=truth,
                       auroc=dict(section.get("auroc") or {}), tests=tests)
