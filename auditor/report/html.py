"""Self-contained HTML report rendered from the results dict (results.json) and its artifact images.

Rendering only renders: it reads ``results`` and the PNG files under the artifact folder
and never calls a model, SAM or CLIP (the evidence images are made during the audit).
The page is the jinja2 template ``templates/report.html.j2`` (autoescaped); the plots are
matplotlib SVGs (:mod:`auditor.report.plots`); each optional entry of
``results["sections"]`` is rendered by the renderer registered under its name in
:mod:`auditor.report.sections` (unknown names as a collapsible JSON block).

Everything is inline: images as base64 data URIs, styles in the page, so the file can be
mailed or attached to a CI run. The page opens with the warnings, the gate, skipped
classes and images, then a summary table sorted by gap, the head-tuning comparison, the
human-annotation agreement when present, one section per class (gap with its interval,
top/bottom spuriosity grids, the verdicts' evidence, each spurious feature's heatmap next
to its object mask, accuracy by spuriosity decile before/after tuning) and the other
sections.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from auditor.report import plots
from auditor.report.sections import Page, render_section
from auditor.report.sections.base import is_finite, lookup

logger = logging.getLogger(__name__)

#: Sections rendered before the per-class sections (the rest follow them, in results order).
EARLY_SECTIONS = ("human_agreement",)
#: Skipped-image records listed on the page (the count covers all of them).
SKIPPED_IMAGES_SHOWN = 10

#: Evidence columns of the verdict tables: (key, header, kind), shown when any verdict has the key.
EVIDENCE_COLUMNS = (
    ("feature", "feature", "plain"),
    ("label", "verdict", "label"),
    ("importance", "importance", "number"),
    ("heat_inside", "heat inside", "number"),
    ("object_area", "object area", "number"),
    ("density_ratio", "density ratio", "number"),
    ("object_drop", "drop w/o object", "number"),
    ("background_drop", "drop w/o background", "number"),
    ("background_reliance", "background reliance [CI]", "reliance"),
    ("swap_auroc", "swap AUROC", "number"),
    ("population_clean_swap_auroc", "population AUROC (clean classes)", "number"),
    ("population_swap_auroc", "population AUROC", "number"),
    ("mixed", "mixed", "bool"),
    ("decided_by", "decided by", "text"),
    ("confirmed", "confirmed", "bool"),
    ("concept_names", "concepts", "list"),
    ("explanation", "explanation", "text"),
)
#: Verdict fields never shown as columns (bookkeeping, or shown inside another column).
HIDDEN_FIELDS = frozenset({"class_index", "image_indices", "heat_says_spurious", "ablation_says_spurious",
                           "reliance_ci_low", "reliance_ci_high"})


def _gap_sort_key(entry: dict) -> tuple[int, float]:
    gap = (entry.get("gap") or {}).get("gap")
    return (0, -gap) if is_finite(gap) else (1, 0.0)


def evidence_columns(verdicts: list[dict]) -> list[dict]:
    """The columns of a verdict evidence table: the known fields present, then unknown ones.

    Args:
        verdicts: verdict dicts (``results["classes"][i]["verdicts"]``); fields beyond
            :data:`EVIDENCE_COLUMNS` get a column of their own (kind "other").

    Returns:
        ``[{"key", "header", "kind"}, ...]`` in display order.
    """
    present = {key for v in verdicts for key in v}
    columns = [{"key": k, "header": h, "kind": kind} for k, h, kind in EVIDENCE_COLUMNS if k in present or k in ("feature", "label")]
    known = {k for k, _, _ in EVIDENCE_COLUMNS} | HIDDEN_FIELDS
    extra: list[str] = []
    for v in verdicts:
        extra += [k for k in v if k not in known and k not in extra]
    return columns + [{"key": k, "header": k.replace("_", " "), "kind": "other"} for k in extra]


def _class_view(entry: dict, art: dict, skipped_reason: str | None) -> dict:
    """Everything the class section and the summary row show about one class."""
    gap = entry.get("gap") if isinstance(entry.get("gap"), dict) else {}
    verdicts = [v for v in entry.get("verdicts") or [] if isinstance(v, dict)]
    concepts = sorted({str(n) for v in verdicts if v.get("label") == "spurious" for n in v.get("concept_names") or []})
    features = []
    for feature, images in (art.get("features") or {}).items():
        verdict = next((v for v in verdicts if str(v.get("feature")) == str(feature)), {})
        images = images if isinstance(images, dict) else {}
        features.append({"feature": feature, "label": verdict.get("label", "?"), "concepts": list(verdict.get("concept_names") or []),
                         "explanation": verdict.get("explanation"), "heatmap": images.get("heatmap"), "mask": images.get("mask")})
    deciles = art.get("decile_accuracy") or {}
    name = str(entry.get("name", entry.get("index", "?")))
    return {
        "index": entry.get("index"),
        "name": name,
        "gap": gap,
        "has_gap": bool(gap),
        "significant": bool(gap.get("significant")) and is_finite(gap.get("gap")),
        "skipped": skipped_reason,
        "n_spurious": len(entry.get("spurious_features") or []),
        "n_core": len(entry.get("core_features") or []),
        "concepts": concepts[:4],
        "interval": plots.interval_plot(gap.get("gap"), gap.get("ci_low"), gap.get("ci_high")),
        "top_grid": art.get("top_grid"),
        "bottom_grid": art.get("bottom_grid"),
        "evidence": {"columns": evidence_columns(verdicts), "rows": verdicts},
        "features": features,
        "deciles": plots.decile_plot(deciles.get("before"), deciles.get("after"), title=f"{name}: accuracy by spuriosity decile")
        if deciles.get("before") else None,
    }


def _training_images_fitted(after: Mapping) -> int:
    """How many training images joined a reweighted head's fit (``tuning.training_images``); 0 when none did."""
    fitted_on = after.get("fitted_on")
    return int(fitted_on.get("train") or 0) if isinstance(fitted_on, Mapping) else 0


def _tuning_fit(result: Mapping, after: Mapping) -> str:
    """How a tuned head was fitted, in a few words (reweighting: its C and refit; selection: epochs)."""
    if "inverse_l2" in after:
        if after.get("inverse_l2") is None:
            return "original head kept"
        groups = {"spuriosity": "low / high spuriosity", "error": "the model's right / wrong answers", "random": "classes"}
        balanced = f", balancing {groups.get(after['grouping'], after['grouping'])}" if after.get("grouping") else ""
        if after.get("afr_gamma") is not None:
            balanced = f", weighted by the model's confidence (AFR, gamma={after['afr_gamma']:g})"
        n_training = _training_images_fitted(after)
        joined = f"; with {n_training} training images" if n_training else ""
        return (f"reweighted{balanced}, C={after['inverse_l2']:g}{joined}"
                + ("; refitted on all validation images" if after.get("refit") else ""))
    epochs = result.get("epochs")
    return f"{epochs} epochs" if epochs is not None else ""


def _tuning_view(tuning: Any) -> dict:
    if not isinstance(tuning, Mapping) or not tuning:
        return {"rows": []}
    rows = []
    for method, result in tuning.items():
        result = result if isinstance(result, dict) else {}
        after = result.get("after") or {}
        rows.append({"method": method, "n_train_images": result.get("n_train_images"), "fit": _tuning_fit(result, after),
                     "before": result.get("before") or {}, "after": after, "where": after.get("evaluated_on")})
    main = "low_spuriosity" if "low_spuriosity" in tuning else next(iter(tuning))
    chosen = next(r for r in rows if r["method"] == main)
    plot = plots.decile_plot(chosen["before"].get("decile_accuracy"), chosen["after"].get("decile_accuracy"),
                             title="accuracy by spuriosity decile, all classes")
    return {"rows": rows, "main": main, "plot": plot, "skew": _validation_skew_sentence(chosen["after"])}


def _validation_skew_sentence(after: Mapping) -> str | None:
    """What the validation skew check (``tuning.skewed_validation_share``) found, in one sentence; None without one."""
    skew = after.get("validation_skew")
    if not isinstance(skew, Mapping) or not is_finite(skew.get("low_spuriosity_share")):
        return None
    share, tail, threshold = skew["low_spuriosity_share"], skew.get("training_tail", 0.1), skew.get("threshold")
    found = (f"{share:.0%} of the validation images are less spurious than the least spurious {tail:.0%} of their class's "
             f"training images (threshold {threshold:.0%}): ")
    if not skew.get("skewed"):
        return found + "validation holds enough low-spuriosity images to balance the spuriosity split."
    found += "validation is about as skewed as training, so its least spurious images are too few to balance or judge by; "
    if n_training := _training_images_fitted(after):
        found += f"the {n_training} least spurious training images joined the fit, and "
    if after.get("grouping") == "error":
        return found + "a head balancing the model's right and wrong answers was kept."
    return found + ("no head balancing the model's right and wrong answers stayed within the accuracy floor on the "
                    "spuriosity groups, so the usual comparison decided.")


def _skipped_images_view(records: Any) -> dict | None:
    if not isinstance(records, list) or not records:
        return None
    records = [r if isinstance(r, dict) else {"reason": str(r)} for r in records]
    per_split = Counter(str(r.get("split", "?")) for r in records)
    return {"total": len(records), "per_split": sorted(per_split.items()), "first": records[:SKIPPED_IMAGES_SHOWN]}


def render_page(results: dict, artifacts_dir: str | Path | None) -> str:
    """The report page as HTML text (what :func:`render_html` writes).

    Args:
        results: the results dict, see :func:`render_html`.
        artifacts_dir: the folder the artifact paths are relative to, or None.

    Returns:
        The HTML document.
    """
    page = Page(results, artifacts_dir)
    meta = results.get("meta") if isinstance(results.get("meta"), dict) else {}
    artifacts = results.get("artifacts") if isinstance(results.get("artifacts"), dict) else {}
    art_classes = artifacts.get("classes") or {}
    skipped_classes = {str(k): str(v) for k, v in (meta.get("skipped_classes") or {}).items()}
    classes = [c for c in results.get("classes") or [] if isinstance(c, dict)]
    views = [
        _class_view(entry, lookup(art_classes, entry.get("index"), {}) or {}, skipped_classes.get(str(entry.get("name"))))
        for entry in sorted(classes, key=_gap_sort_key)
    ]
    sections = results.get("sections") if isinstance(results.get("sections"), dict) else {}
    early = [render_section(name, sections[name], page) for name in EARLY_SECTIONS if name in sections]
    others = [render_section(name, section, page) for name, section in sections.items() if name not in EARLY_SECTIONS]
    gate = results.get("gate")
    warnings = results.get("warnings") or []
    config = results.get("config") if isinstance(results.get("config"), dict) else {}
    verdict_config = config.get("verdicts") if isinstance(config.get("verdicts"), dict) else {}
    spread = verdict_config.get("image_selection") == "spread"
    return page.render(
        "report.html.j2",
        heatmap_caption=("Feature heatmap on the examined images, spread over its activation range" if spread
                         else "Feature heatmap on its top-activating images"),
        schema_version=results.get("schema_version", "?"),
        meta=meta,
        n_eval_images=meta.get("n_val_images") or meta.get("n_train_images") or "?",
        warnings=[str(w) for w in (warnings if isinstance(warnings, list) else [warnings])],
        gate=gate if isinstance(gate, dict) and gate.get("conditions") else None,
        skipped_classes=skipped_classes,
        skipped_images=_skipped_images_view(results.get("skipped_images")),
        classes=views,
        tuning=_tuning_view(results.get("tuning")),
        early_sections=early,
        other_sections=others,
        artifact_errors=[str(e) for e in artifacts.get("errors") or []],
    )


def render_html(results: dict, artifacts_dir: str | Path | None, path: str | Path) -> Path:
    """Write a self-contained HTML report.

    Args:
        results: the results dict (``AuditReport.to_dict()`` plus ``"artifacts"`` from
            :func:`~auditor.report.artifacts.write_artifacts`, and optionally ``"gate"``,
            ``"warnings"`` and ``"skipped_images"``).
        artifacts_dir: the folder the artifact paths are relative to (results.json's folder);
            None renders without images.
        path: the HTML file to write.

    Returns:
        ``path``.

    Example:
        >>> render_html(json.load(open("out/results.json")), "out", "out/report.html")  # doctest: +SKIP
    """
    text = render_page(results, artifacts_dir)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    logger.info("wrote %s", path)
    return path


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
        dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=timeout,
                             check=False)
        if dom.returncode != 0 or "<html" not in dom.stdout:
            raise RuntimeError(f"{browser} --dump-dom failed ({dom.returncode}): {dom.stderr[-500:]}")
        if screenshot is not None:
            shot = subprocess.run([*base, f"--screenshot={Path(screenshot).resolve()}", url], capture_output=True, text=True,
                                  timeout=timeout, check=False)
            if shot.returncode != 0 or not Path(screenshot).is_file():
                raise RuntimeError(f"{browser} --screenshot failed ({shot.returncode}): {shot.stderr[-500:]}")
    return dom.stdout
