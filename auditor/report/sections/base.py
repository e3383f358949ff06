"""The report's rendering context, the section registry and the generic section fallback.

A section renderer is a function ``render(section, page) -> Markup`` registered under the
section's name in ``results["sections"]``::

    @register_section("noise")
    def render(section: dict, page: Page) -> Markup:
        return page.render("sections/noise.html.j2", section=section)

It reads only the JSON dict (and artifact files through :meth:`Page.image`); it never
calls a model, SAM or CLIP. Sections nobody registered, and registered renderers that
fail on an unexpected shape, fall back to :func:`render_generic` (a collapsible JSON
block), so an old or newer results.json always renders.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from auditor._registry import Registry
from auditor.report.plots import finite as is_finite

logger = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
SectionRenderer = Callable[[Any, "Page"], Markup]
SECTION_RENDERERS: Registry[Markup] = Registry("report section")
register_section = SECTION_RENDERERS.register

_DATA_URI = re.compile(r"^data:image/(png|jpeg|gif|webp|svg\+xml);base64,[A-Za-z0-9+/=\s]+$")
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp",
         ".svg": "image/svg+xml"}
JSON_LIMIT = 20000


def fmt_num(value: Any, digits: int = 3, signed: bool = False) -> str:
    """Format a number for the page: ``n/a`` for missing or non-finite, yes/no for bools, ints as ints, text as is.

    Args:
        value: anything from results.json.
        digits: decimals.
        signed: always print the sign.

    Returns:
        The text (not yet escaped; the template escapes it).
    """
    if value is None or isinstance(value, jinja2.Undefined):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and not signed:
        return str(value)
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            return "n/a"
        return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return str(value)


def fmt_percent(value: Any) -> str:
    """A share in [0, 1] as a whole percentage, ``n/a`` when missing."""
    return f"{value:.0%}" if is_finite(value) else "n/a"


def slug(value: Any) -> str:
    """An id-safe version of a section name."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(value)).strip("-") or "section"


def elide_images(value: Any) -> Any:
    """A copy of ``value`` with inline image data URIs replaced by a short placeholder (for JSON dumps)."""
    if isinstance(value, dict):
        return {k: elide_images(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [elide_images(v) for v in value]
    if isinstance(value, str) and value.startswith("data:"):
        return f"<inline image, {len(value)} characters>"
    return value


def json_text(value: Any, limit: int = JSON_LIMIT) -> str:
    """Indented JSON of ``value`` (images elided, truncated to ``limit`` characters)."""
    text = json.dumps(elide_images(value), indent=1, default=str, allow_nan=True)
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters)"


def short_value(value: Any, limit: int = 120) -> str:
    """A one-line text for a table cell: numbers formatted, lists joined, dicts as compact JSON."""
    if value is None or isinstance(value, (bool, int, float)):
        return fmt_num(value)
    if isinstance(value, str):
        text = value
    elif isinstance(value, (list, tuple)) and all(not isinstance(v, (dict, list, tuple)) for v in value):
        text = ", ".join(short_value(v) if not isinstance(v, str) else v for v in value)
    else:
        text = json.dumps(elide_images(value), default=str, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def lookup(mapping: Any, key: Any, default: Any = None) -> Any:
    """``mapping[key]`` trying the key as given, as ``str`` and as ``int`` (JSON turns int keys into strings)."""
    if not isinstance(mapping, Mapping):
        return default
    for candidate in (key, str(key)):
        if candidate in mapping:
            return mapping[candidate]
    try:
        return mapping.get(int(key), default)
    except (TypeError, ValueError):
        return default


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The jinja2 environment of the report templates (autoescaped, lenient about missing keys).

    Returns:
        A shared :class:`jinja2.Environment` loading ``auditor/report/templates``.
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "j2"), default_for_string=True, default=True),
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(num=fmt_num, pct=fmt_percent, slug=slug, short=short_value, json_text=json_text)
    env.globals.update(lookup=lookup, is_finite=is_finite)
    return env


class Page:
    """What a section renderer may use: the results, the artifact folder, images and templates.

    Args:
        results: the whole results dict (results.json, with ``artifacts``).
        artifacts_dir: the folder artifact paths are relative to; None renders without images.
    """

    def __init__(self, results: dict, artifacts_dir: str | Path | None):
        self.results = results
        self.artifacts_dir = None if artifacts_dir is None else Path(artifacts_dir)
        self.env = environment()
        names = results.get("class_names")
        self.class_names: list[str] = [str(n) for n in names] if isinstance(names, list) else []

    def class_name(self, index: Any) -> str:
        """The name of class ``index`` (the index itself when unknown)."""
        try:
            return self.class_names[int(index)]
        except (TypeError, ValueError, IndexError):
            return str(index)

    def image_src(self, reference: Any) -> str | None:
        """A data URI for an artifact path (relative to the artifact folder) or an inline data URI.

        Args:
            reference: ``"artifacts/c1_top.png"`` or ``"data:image/png;base64,..."``.

        Returns:
            The data URI, or None when there is no such image (a warning is logged for a missing file).
        """
        if not isinstance(reference, str) or not reference:
            return None
        if reference.startswith("data:"):
            return reference if _DATA_URI.match(reference) else None
        if self.artifacts_dir is None:
            return None
        path = self.artifacts_dir / reference
        if not path.is_file():
            logger.warning("report image %s is missing; skipped", path)
            return None
        mime = _MIME.get(path.suffix.lower(), "image/png")
        return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")

    def image(self, reference: Any, alt: str = "", css_class: str = "") -> Markup:
        """An ``<img>`` for :meth:`image_src`, a "missing" note for an absent file, or nothing.

        Args:
            reference: artifact path or data URI.
            alt: alternative text.
            css_class: optional class attribute.

        Returns:
            Safe HTML.
        """
        src = self.image_src(reference)
        if src is None:
            if isinstance(reference, str) and reference and not reference.startswith("data:") and self.artifacts_dir is not None:
                return Markup('<p class="warn">image {} missing</p>').format(reference)
            return Markup("")
        if css_class:
            return Markup('<img class="{}" src="{}" alt="{}">').format(css_class, src, alt)
        return Markup('<img src="{}" alt="{}">').format(src, alt)

    def plot(self, uri: str | None, alt: str) -> Markup:
        """An ``<img>`` for a plot data URI from :mod:`auditor.report.plots` (nothing when None)."""
        if not uri:
            return Markup("")
        return Markup('<img class="plot" src="{}" alt="{}">').format(uri, alt)

    def render(self, template: str, **values: Any) -> Markup:
        """Render ``template`` (relative to the templates folder) with ``page`` and ``values``.

        Returns:
            Safe HTML.
        """
        return Markup(self.env.get_template(template).render(page=self, **values))


def render_generic(name: str, section: Any, page: Page, error: str | None = None) -> Markup:
    """The fallback for a section without a renderer: its scalar fields as a table plus collapsible JSON.

    Args:
        name: the section name.
        section: its JSON value (any type).
        page: the rendering context.
        error: why the registered renderer could not be used, shown on the page.

    Returns:
        Safe HTML.
    """
    scalars = {}
    if isinstance(section, Mapping):
        scalars = {str(k): short_value(v) for k, v in section.items() if v is None or isinstance(v, (str, int, float, bool))}
    return page.render("sections/generic.html.j2", name=name, section=section, scalars=scalars, error=error)


def render_section(name: str, section: Any, page: Page) -> Markup:
    """Render one entry of ``results["sections"]`` with its registered renderer, or generically.

    A renderer that raises on an unexpected shape is logged and replaced by the generic
    block with the error shown, so one odd section never loses the whole report.

    Args:
        name: the section name.
        section: its JSON value.
        page: the rendering context.

    Returns:
        Safe HTML.
    """
    if name not in SECTION_RENDERERS:
        return render_generic(name, section, page)
    try:
        return SECTION_RENDERERS.get(name)(section, page)
    except Exception as error:
        logger.warning("report section %r could not be rendered (%s: %s); shown as JSON", name, type(error).__name__, error)
        return render_generic(name, section, page, error=f"{type(error).__name__}: {error}")


__all__ = [
    "SECTION_RENDERERS",
    "Page",
    "SectionRenderer",
    "elide_images",
    "environment",
    "fmt_num",
    "fmt_percent",
    "is_finite",
    "json_text",
    "lookup",
    "register_section",
    "render_generic",
    "render_section",
    "short_value",
    "slug",
]
