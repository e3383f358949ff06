"""The "concepts" section: concept-level gaps per class and the concept names of each feature."""

from __future__ import annotations

from markupsafe import Markup

from auditor.report.sections.base import Page, register_section

SHOWN_ROWS = 10


@register_section("concepts")
def render(section: dict, page: Page) -> Markup:
    """Per class: the concepts kept as spurious, then a table of the checked concepts (strongest gap first).

    Args:
        section: ``results["sections"]["concepts"]`` (see :func:`auditor.concepts.stage.run_concepts`).
        page: the rendering context.

    Returns:
        Safe HTML.
    """
    classes = []
    for name, entry in (section.get("classes") or {}).items():
        entry = entry if isinstance(entry, dict) else {}
        rows = [r for r in entry.get("checked") or [] if isinstance(r, dict)]
        classes.append({
            "name": name,
            "spurious": list(entry.get("spurious") or []),
            "same_direction": dict(entry.get("same_direction") or {}),
            "gap_without_cooccurrence": list(entry.get("gap_without_cooccurrence") or []),
            "shown": rows[:SHOWN_ROWS],
            "more": rows[SHOWN_ROWS:],
        })
    features = []
    for key, names in (section.get("feature_names") or {}).items():
        items = [n for n in names or [] if isinstance(n, dict)]
        features.append({"key": key, "names": items})
    return page.render("sections/concepts.html.j2", name="concepts", section=section, classes=classes, features=features)
