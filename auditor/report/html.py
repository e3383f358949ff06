"""Self-contained HTML report rendered from the results dict (results.json) and its artifact images.

Everything is inline: images as base64 data URIs, plots as SVG, styles in the page, so
the file can be mailed or attached to a CI run. The page opens with a summary table
sorted by gap, then the head-tuning comparison, the human-annotation agreement when
present, and one section per class (gap with its interval, top/bottom spuriosity grids,
each spurious feature's heatmap next to its object mask with the evidence numbers and
concept names, accuracy by spuriosity decile before/after tuning).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

logger = logging.getLogger(__name__)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#1f2328;padding:0 16px}
h1{margin-bottom:4px}h2{border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:right;font-size:14px}
th{background:#f6f8fa}td.l,th.l{text-align:left}.meta{color:#57606a;font-size:14px}
.sig{color:#cf222e;font-weight:600}.ok{color:#1a7f37}.warn{color:#9a6700}
.pair{display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start}.pair figure{margin:0}
figcaption{font-size:13px;color:#57606a}img{image-rendering:pixelated;max-width:100%}
.class{border:1px solid #d0d7de;border-radius:6px;padding:8px 16px;margin:16px 0}
.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;color:#fff}
.b-spurious{background:#cf222e}.b-core{background:#1a7f37}.gate-fail{background:#ffebe9;border:1px solid #cf222e;padding:8px}
.gate-pass{background:#dafbe1;border:1px solid #1a7f37;padding:8px}
"""

_CHECK_SCRIPT = """
window.addEventListener('load',function(){var imgs=document.images,ok=0;
for(var i=0;i<imgs.length;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0){ok++;}}
var el=document.getElementById('render-check');if(el){el.textContent=ok+'/'+imgs.length+' images rendered';
el.setAttribute('data-images-ok',String(ok));el.setAttribute('data-images-total',String(imgs.length));}});
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 3, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return _e(value)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _image(artifacts_dir: Path | None, relative: str | None, alt: str) -> str:
    if not relative or artifacts_dir is None:
        return ""
    path = Path(artifacts_dir) / relative
    if not path.is_file():
        logger.warning("report image %s is missing; skipped", path)
        return f'<p class="warn">image {_e(relative)} missing</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def decile_svg(before: Sequence[float | None] | None, after: Sequence[float | None] | None, width: int = 360, height: int = 200, title: str = "") -> str:
    """An inline SVG line plot of accuracy per spuriosity decile, before (blue) and after (orange) tuning.

    Args:
        before: 10 accuracies (None for an empty decile), least spurious first.
        after: the same after tuning, or None.
        width, height: size in px.
        title: accessible title.

    Returns:
        The ``<svg>`` element as a string.
    """
    left, right, top, bottom = 40, 10, 12, 34
    plot_w, plot_h = width - left - right, height - top - bottom

    def xy(index: int, value: float) -> tuple[float, float]:
        return left + plot_w * index / 9, top + plot_h * (1 - value)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{_e(title)}">',
             f"<title>{_e(title)}</title>", f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#d0d7de"/>']
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        y = top + plot_h * (1 - tick)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eaeef2"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{tick:g}</text>')
    for d in range(10):
        x, _ = xy(d, 0)
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 12}" font-size="10" text-anchor="middle">{d + 1}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 4}" font-size="11" text-anchor="middle">spuriosity decile (1 = least, 10 = most)</text>')
    for values, colour, label, dash in ((before, "#0969da", "before", ""), (after, "#fb8500", "after", ' stroke-dasharray="6,4"')):
        if not values:
            continue
        points = [xy(i, v) for i, v in enumerate(values) if _finite(v)]
        if points:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}><title>{label}</title></polyline>')
            parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>' for x, y in points]
    legend_x = left + 8
    parts.append(f'<text x="{legend_x}" y="{top + 14}" font-size="11" fill="#0969da">&#9632; before tuning</text>')
    if after:
        parts.append(f'<text x="{legend_x + 100}" y="{top + 14}" font-size="11" fill="#fb8500">&#9632; after tuning</text>')
    parts.append("</svg>")
    return "".join(parts)


def interval_svg(gap: float | None, low: float | None, high: float | None, width: int = 240, height: int = 40) -> str:
    """An inline SVG showing a gap and its confidence interval on a [-1, 1] axis."""
    if not (_finite(gap) and _finite(low) and _finite(high)):
        return ""

    def x(value: float) -> float:
        return 6 + (width - 12) * (max(-1.0, min(1.0, value)) + 1) / 2

    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="gap interval">'
        f'<line x1="6" x2="{width - 6}" y1="14" y2="14" stroke="#d0d7de"/>'
        f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="4" y2="24" stroke="#57606a" stroke-dasharray="2,2"/>'
        f'<line x1="{x(low):.1f}" x2="{x(high):.1f}" y1="14" y2="14" stroke="#cf222e" stroke-width="4"/>'
        f'<circle cx="{x(gap):.1f}" cy="14" r="5" fill="#1f2328"/>'
        + "".join(f'<text x="{x(t):.1f}" y="36" font-size="10" text-anchor="middle">{t:+g}</text>' for t in (-1, 0, 1))
        + "</svg>"
    )


def _gap_sort_key(entry: dict) -> tuple[int, float]:
    gap = (entry.get("gap") or {}).get("gap")
    return (0, -gap) if _finite(gap) else (1, 0.0)


def _summary(classes: list[dict]) -> str:
    rows = []
    for entry in sorted(classes, key=_gap_sort_key):
        gap = entry.get("gap") or {}
        concepts = sorted({n for v in entry.get("verdicts", []) if v.get("label") == "spurious" for n in v.get("concept_names", [])})
        significant = bool(gap.get("significant")) and _finite(gap.get("gap"))
        rows.append(
            f'<tr><td class="l"><a href="#class-{_e(entry["index"])}">{_e(entry["name"])}</a></td>'
            f'<td class="{"sig" if significant else ""}">{_num(gap.get("gap"), signed=True)}</td>'
            f'<td>[{_num(gap.get("ci_low"), signed=True)}, {_num(gap.get("ci_high"), signed=True)}]</td>'
            f'<td>{"yes" if significant else "no"}</td><td>{len(entry.get("spurious_features", []))}</td>'
            f'<td>{len(entry.get("core_features", []))}</td><td>{_num(gap.get("top_accuracy"))}</td>'
            f'<td>{_num(gap.get("bottom_accuracy"))}</td><td class="l">{_e(", ".join(concepts[:4]))}</td>'
            f'<td class="l">{_e(gap.get("note", ""))}</td></tr>'
        )
    return (
        '<table id="summary"><tr><th class="l">class</th><th>gap</th><th>95% CI</th><th>significant</th>'
        "<th>spurious</th><th>core</th><th>top-k acc.</th><th>bottom-k acc.</th><th class=\"l\">spurious concepts</th>"
        f'<th class="l">note</th></tr>{"".join(rows)}</table>'
    )


def _tuning(tuning: dict) -> str:
    if not tuning:
        return "<p>Head tuning was not run.</p>"
    rows = []
    for method, result in tuning.items():
        before, after = result.get("before", {}), result.get("after", {})
        rows.append(
            f'<tr><td class="l">{_e(method)}</td><td>{result.get("n_train_images", "")}</td><td>{result.get("epochs", "")}</td>'
            f'<td>{_num(before.get("accuracy"))} &rarr; {_num(after.get("accuracy"))}</td>'
            f'<td>{_num(before.get("worst_class_accuracy"))} &rarr; {_num(after.get("worst_class_accuracy"))}</td>'
            f'<td>{_num(before.get("mean_gap"), signed=True)} &rarr; {_num(after.get("mean_gap"), signed=True)}</td>'
            f'<td>{_num(before.get("max_gap"), signed=True)} &rarr; {_num(after.get("max_gap"), signed=True)}</td></tr>'
        )
    main = tuning.get("low_spuriosity") or next(iter(tuning.values()))
    plot = decile_svg(main.get("before", {}).get("decile_accuracy"), main.get("after", {}).get("decile_accuracy"),
                      title="accuracy by spuriosity decile, all classes")
    return (
        '<table id="tuning"><tr><th class="l">method</th><th>images</th><th>epochs</th><th>accuracy</th>'
        f'<th>worst-class acc.</th><th>mean gap</th><th>max gap</th></tr>{"".join(rows)}</table>'
        f"<figure>{plot}<figcaption>All classes pooled ({_e(next(k for k, v in tuning.items() if v is main))}).</figcaption></figure>"
    )


def _evidence_table(verdicts: list[dict]) -> str:
    rows = []
    for v in verdicts:
        rows.append(
            f'<tr><td>{_e(v.get("feature"))}</td><td class="l"><span class="badge b-{_e(v.get("label"))}">{_e(v.get("label"))}</span></td>'
            f'<td>{_num(v.get("importance"))}</td><td>{_num(v.get("heat_inside"))}</td><td>{_num(v.get("object_area"))}</td>'
            f'<td>{_num(v.get("density_ratio"))}</td><td>{_num(v.get("object_drop"))}</td><td>{_num(v.get("background_drop"))}</td>'
            f'<td>{_num(v.get("confirmed"))}</td><td class="l">{_e(", ".join(v.get("concept_names", [])))}</td></tr>'
        )
    return (
        '<table class="evidence"><tr><th>feature</th><th class="l">verdict</th><th>importance</th><th>heat inside</th>'
        "<th>object area</th><th>density ratio</th><th>drop w/o object</th><th>drop w/o background</th><th>confirmed</th>"
        f'<th class="l">concepts</th></tr>{"".join(rows)}</table>'
    )


def _class_section(entry: dict, art: dict, artifacts_dir: Path | None) -> str:
    c, name = entry["index"], entry["name"]
    gap = entry.get("gap") or {}
    parts = [f'<section class="class" id="class-{_e(c)}"><h3>{_e(name)} <span class="meta">(class {_e(c)})</span></h3>']
    if _finite(gap.get("gap")):
        flag = '<span class="sig">significant</span>' if gap.get("significant") else "not significant"
        parts.append(
            f'<p>Spurious gap <b>{_num(gap.get("gap"), signed=True)}</b> '
            f'(95% CI [{_num(gap.get("ci_low"), signed=True)}, {_num(gap.get("ci_high"), signed=True)}], {flag}; '
            f'k={_e(gap.get("k"))} of {_e(gap.get("n_images"))} images; top-k accuracy {_num(gap.get("top_accuracy"))}, '
            f'bottom-k {_num(gap.get("bottom_accuracy"))}) {interval_svg(gap.get("gap"), gap.get("ci_low"), gap.get("ci_high"))}</p>'
        )
    elif gap:
        parts.append(f'<p class="warn">No gap: {_e(gap.get("note", "skipped"))}</p>')
    else:
        parts.append("<p>No spurious feature found, so no spuriosity ranking or gap.</p>")
    if gap.get("note") and _finite(gap.get("gap")):
        parts.append(f'<p class="warn">{_e(gap["note"])}</p>')
    if art.get("top_grid"):
        parts.append(
            '<div class="pair">'
            f'<figure>{_image(artifacts_dir, art.get("top_grid"), f"{name}: most spurious images")}'
            "<figcaption>Most spurious images (green frame: correct, red: misclassified)</figcaption></figure>"
            f'<figure>{_image(artifacts_dir, art.get("bottom_grid"), f"{name}: least spurious images")}'
            "<figcaption>Least spurious images</figcaption></figure></div>"
        )
    verdicts = entry.get("verdicts", [])
    if verdicts:
        parts.append(_evidence_table(verdicts))
    for feature, images in (art.get("features") or {}).items():
        verdict = next((v for v in verdicts if str(v.get("feature")) == str(feature)), {})
        concepts = ", ".join(verdict.get("concept_names", []))
        parts.append(
            f'<h4>Feature {_e(feature)} ({_e(verdict.get("label", "?"))}){": " + _e(concepts) if concepts else ""}</h4><div class="pair">'
            f'<figure>{_image(artifacts_dir, images.get("heatmap"), f"{name} feature {feature} heatmap")}'
            "<figcaption>Feature heatmap on its top-activating images</figcaption></figure>"
            f'<figure>{_image(artifacts_dir, images.get("mask"), f"{name} feature {feature} object mask")}'
            "<figcaption>Object mask (tinted)</figcaption></figure></div>"
        )
    deciles = art.get("decile_accuracy") or {}
    if deciles.get("before"):
        parts.append(f'<figure>{decile_svg(deciles.get("before"), deciles.get("after"), title=f"{name}: accuracy by spuriosity decile")}'
                     "<figcaption>Accuracy by within-class spuriosity decile</figcaption></figure>")
    parts.append("</section>")
    return "".join(parts)


def _agreement(section: dict, artifacts: dict, artifacts_dir: Path | None) -> str:
    labels = section.get("labels", ["core", "spurious"])
    confusion = section.get("confusion", [[0, 0], [0, 0]])
    header = "".join(f"<th>automated {_e(label)}</th>" for label in labels)
    body = "".join(
        f'<tr><th class="l">human {_e(label)}</th>{"".join(f"<td>{n}</td>" for n in row)}</tr>' for label, row in zip(labels, confusion)
    )
    parts = [
        f'<p>Source: {_e(section.get("source", ""))}. Compared {section.get("n_compared", 0)} (class, feature) pairs; '
        f'agreement {_num(section.get("accuracy"))}, Cohen\'s kappa <b id="kappa">{_num(section.get("kappa"))}</b>; '
        f'{section.get("n_human_only", 0)} annotated pairs were not audited, {section.get("n_auto_only", 0)} audited pairs not annotated.</p>',
        f'<table id="confusion"><tr><th></th>{header}</tr>{body}</table>',
    ]
    disagreements = section.get("disagreements", [])
    if disagreements:
        rows = []
        for d in disagreements:
            ev = d.get("evidence", {})
            art = ((artifacts.get("classes") or {}).get(str(d.get("class_index"))) or {}).get("features", {}).get(str(d.get("feature")), {})
            rows.append(
                f'<tr><td class="l">{_e(d.get("class_name"))}</td><td>{_e(d.get("feature"))}</td><td class="l">{_e(d.get("human"))}'
                f' ({d.get("n_spurious_votes", 0)}/{d.get("n_votes", 0)} spurious votes)</td><td class="l">{_e(d.get("automated"))}</td>'
                f'<td>{_num(ev.get("heat_inside"))}</td><td>{_num(ev.get("density_ratio"))}</td><td>{_num(ev.get("object_drop"))}</td>'
                f'<td>{_num(ev.get("background_drop"))}</td><td class="l">{_image(artifacts_dir, art.get("heatmap"), "heatmap")}</td></tr>'
            )
        parts.append(
            '<table id="disagreements"><tr><th class="l">class</th><th>feature</th><th class="l">human</th><th class="l">automated</th>'
            "<th>heat inside</th><th>density ratio</th><th>drop w/o object</th><th>drop w/o background</th><th class=\"l\">heatmap</th></tr>"
            f'{"".join(rows)}</table>'
        )
    else:
        parts.append("<p>No disagreements.</p>")
    return "".join(parts)


def render_html(results: dict, artifacts_dir: str | Path | None, path: str | Path) -> Path:
    """Write a self-contained HTML report.

    Args:
        results: the results dict (``AuditReport.to_dict()`` plus ``"artifacts"`` from
            :func:`~auditor.report.artifacts.write_artifacts`, and optionally ``"gate"``).
        artifacts_dir: the folder the artifact paths are relative to (results.json's folder);
            None renders without images.
        path: the HTML file to write.

    Returns:
        ``path``.

    Example:
        >>> render_html(json.load(open("out/results.json")), "out", "out/report.html")  # doctest: +SKIP
    """
    artifacts_dir = None if artifacts_dir is None else Path(artifacts_dir)
    artifacts = results.get("artifacts") or {}
    classes = results.get("classes", [])
    meta = results.get("meta", {})
    sections = results.get("sections") or {}
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>auditor report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Spurious-feature audit</h1>",
        f'<p class="meta">schema {_e(results.get("schema_version", "?"))} &middot; {len(classes)} classes &middot; '
        f'evaluated on {_e(meta.get("evaluation_split", "?"))} ({_e(meta.get("n_val_images") or meta.get("n_train_images", "?"))} images) &middot; '
        f'head {_e(meta.get("head", "?"))} &middot; device {_e(meta.get("device", "?"))} &middot; '
        f'{_e(meta.get("seconds", "?"))} s &middot; <span id="render-check"></span></p>',
    ]
    gate = results.get("gate")
    if isinstance(gate, dict) and gate.get("conditions"):
        css = "gate-pass" if gate.get("passed") else "gate-fail"
        parts.append(f'<p id="gate" class="{css}">{_e(gate.get("reason", ""))}</p>')
    skipped = meta.get("skipped_classes") or {}
    if skipped:
        parts.append('<p class="warn">Skipped classes: ' + "; ".join(f"{_e(k)}: {_e(v)}" for k, v in skipped.items()) + "</p>")
    parts += ["<h2>Summary (sorted by gap)</h2>", _summary(classes), "<h2>Head tuning</h2>", _tuning(results.get("tuning") or {})]
    agreement = sections.get("human_agreement")
    if isinstance(agreement, dict) and agreement.get("enabled", True) and "confusion" in agreement:
        parts += ['<h2 id="human-agreement">Agreement with human annotations</h2>', _agreement(agreement, artifacts, artifacts_dir)]
    parts.append("<h2>Classes</h2>")
    art_classes = artifacts.get("classes") or {}
    for entry in sorted(classes, key=_gap_sort_key):
        parts.append(_class_section(entry, art_classes.get(str(entry["index"]), {}), artifacts_dir))
    renderers = _section_renderers(results.get("class_names"))
    others = {k: v for k, v in sections.items() if k != "human_agreement"}
    for name, section in others.items():
        if name in renderers and isinstance(section, dict):
            parts.append(renderers[name](section))
        parts.append(f"<h2>{_e(name)}</h2><details><summary>JSON</summary><pre>{_e(json.dumps(section, indent=1)[:20000])}</pre></details>")
    if artifacts.get("errors"):
        parts.append('<h2>Report warnings</h2><ul>' + "".join(f"<li>{_e(e)}</li>" for e in artifacts["errors"]) + "</ul>")
    parts.append(f"<script>{_CHECK_SCRIPT}</script></body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts), encoding="utf-8")
    logger.info("wrote %s", path)
    return path


def _section_renderers(class_names: list[str] | None) -> dict:
    """Section name -> function rendering that report section as an HTML fragment."""
    from auditor import compare, discovery, neurontune, noise

    return {
        "neurontune": lambda section: neurontune.render_html(section, class_names),
        "discovery": discovery.render_html,
        "noise": noise.render_html,
        "model_comparison": lambda section: compare.render_html(section, class_names),
    }


BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
BROWSER_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--mute-audio",
)


def find_browser() -> str | None:
    """Path of a Chromium-family browser on PATH (Debian's ``chromium`` first), or None."""
    import shutil

    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def browser_snapshot(
    html_path: str | Path,
    screenshot: str | Path | None = None,
    width: int = 1280,
    height: int = 2000,
    browser: str | None = None,
    timeout: float = 120.0,
) -> str:
    """Open the report in headless Chromium; return the DOM after load (and save a PNG screenshot).

    The page's own load handler writes "n/m images rendered" into ``#render-check``, so the
    returned DOM says whether every inline image decoded in a real browser.

    Args:
        html_path: the report.
        screenshot: PNG path to write, or None.
        width, height: window size in px.
        browser: browser executable (:func:`find_browser` when None).
        timeout: seconds before giving up.

    Returns:
        The serialised DOM (``--dump-dom``).

    Raises:
        FileNotFoundError: no browser found.
        RuntimeError: the browser failed.
    """
    import subprocess
    import tempfile

    browser = browser or find_browser()
    if browser is None:
        raise FileNotFoundError("no Chromium browser found; install it (Debian: `apt-get install chromium`)")
    url = Path(html_path).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="auditor-browser-") as profile:
        base = [browser, *BROWSER_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                "--virtual-time-budget=5000"]
        dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=timeout)
        if dom.returncode != 0 or "<html" not in dom.stdout:
            raise RuntimeError(f"{browser} --dump-dom failed ({dom.returncode}): {dom.stderr[-500:]}")
        if screenshot is not None:
            shot = subprocess.run([*base, f"--screenshot={Path(screenshot).resolve()}", url], capture_output=True, text=True, timeout=timeout)
            if shot.returncode != 0 or not Path(screenshot).is_file():
                raise RuntimeError(f"{browser} --screenshot failed ({shot.returncode}): {shot.stderr[-500:]}")
    return dom.stdout
