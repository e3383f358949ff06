"""The "discovery" section: cues found on images without the class object, clustered with exemplars."""

from __future__ import annotations

from markupsafe import Markup

from auditor.report.sections.base import Page, register_section


@register_section("discovery")
def render(section: dict, page: Page) -> Markup:
    """Per class: the collected images' clusters, their concepts, lift on the spurious features and exemplars.

    Args:
        section: ``results["sections"]["discovery"]`` (see :func:`auditor.discovery.run_discovery`);
            exemplar ``image`` values are data URIs or artifact paths.
        page: the rendering context.

    Returns:
        Safe HTML.
    """
    classes = [entry for entry in (section.get("classes") or {}).values() if isinstance(entry, dict)]
    return page.render("sections/discovery.html.j2", name="discovery", section=section, pool=section.get("pool") or {},
                       classes=classes)
