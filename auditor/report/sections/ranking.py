"""The "ranking" section: how the spuriosity rankings were scored, class by class."""

from __future__ import annotations

from markupsafe import Markup

from auditor.report.sections.base import Page, register_section


@register_section("ranking")
def render(section: dict, page: Page) -> Markup:
    """Which classes the cue direction ranked and which the mean of their spurious features ranked.

    Args:
        section: ``results["sections"]["ranking"]`` (see :func:`auditor.ranking.run_ranking`); the directions
            themselves stay in results.json.
        page: the rendering context.

    Returns:
        Safe HTML.
    """
    by_direction = [page.class_name(c) for c in section.get("by_direction") or []]
    by_mean = [page.class_name(c) for c in section.get("by_mean") or []]
    return page.render("sections/ranking.html.j2", name="ranking", section=section, by_direction=by_direction,
                       by_mean=by_mean)
