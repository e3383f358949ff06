"""The "noise" section: flagged images of negative-gap classes beside their core crops."""

from __future__ import annotations

from markupsafe import Markup

from auditor.report.sections.base import Page, register_section


@register_section("noise")
def render(section: dict, page: Page) -> Markup:
    """Per examined class: counts, then each flagged image next to its crop with the diagnosis.

    Args:
        section: ``results["sections"]["noise"]`` (see :func:`auditor.noise.run_noise`); ``image`` and
            ``crop`` values are data URIs or artifact paths.
        page: the rendering context.

    Returns:
        Safe HTML.
    """
    results = [r for r in section.get("results") or [] if isinstance(r, dict)]
    return page.render("sections/noise.html.j2", name="noise", section=section, results=results)
