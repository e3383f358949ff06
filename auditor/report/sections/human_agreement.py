"""The "human_agreement" section: automated verdicts against human annotations."""

from __future__ import annotations

from markupsafe import Markup

from auditor.report.sections.base import Page, lookup, register_section

EVIDENCE_COLUMNS = (
    ("heat_inside", "heat inside"),
    ("density_ratio", "density ratio"),
    ("object_drop", "drop w/o object"),
    ("background_drop", "drop w/o background"),
    ("background_reliance", "background reliance"),
)


@register_section("human_agreement")
def render(section: dict, page: Page) -> Markup:
    """Agreement and Cohen's kappa, the confusion matrix and each disagreement with its evidence and heatmap.

    Args:
        section: ``results["sections"]["human_agreement"]`` (see
            :func:`auditor.annotations.human_annotations_section`); ``{"enabled": False}`` renders nothing.
        page: the rendering context.

    Returns:
        Safe HTML.
    """
    if section.get("enabled") is False or "confusion" not in section:
        return Markup("")
    labels = [str(label) for label in section.get("labels") or ["core", "spurious"]]
    confusion = [list(row) for row in section.get("confusion") or []]
    art_classes = (page.results.get("artifacts") or {}).get("classes") or {}
    disagreements = []
    for d in section.get("disagreements") or []:
        if not isinstance(d, dict):
            continue
        evidence = d.get("evidence") or {}
        art = lookup(lookup(art_classes, d.get("class_index"), {}) or {}, "features", {}) or {}
        disagreements.append({**d, "evidence": evidence, "heatmap": (lookup(art, d.get("feature"), {}) or {}).get("heatmap")})
    columns = [(key, header) for key, header in EVIDENCE_COLUMNS
               if key != "background_reliance" or any(key in d["evidence"] for d in disagreements)]
    return page.render("sections/human_agreement.html.j2", name="human_agreement", section=section, labels=labels,
                       rows=list(zip(labels, confusion)), disagreements=disagreements, columns=columns)
