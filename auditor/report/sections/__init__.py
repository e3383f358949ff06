"""HTML for the optional report sections, one module per name in ``results["sections"]``.

Importing this package registers every built-in renderer in :data:`SECTION_RENDERERS`;
:func:`render_section` renders a section by name and falls back to a generic JSON block
for names nobody registered. Renderers read only the JSON dict and artifact files.
"""

from __future__ import annotations

from auditor.report.sections import (  # noqa: F401 - imported to register the renderers
    concepts,
    demo_ground_truth,
    discovery,
    human_agreement,
    model_comparison,
    neurontune,
    noise,
    ranking,
)
from auditor.report.sections.base import (
    SECTION_RENDERERS,
    Page,
    register_section,
    render_generic,
    render_section,
)

__all__ = ["SECTION_RENDERERS", "Page", "register_section", "render_generic", "render_section"]
