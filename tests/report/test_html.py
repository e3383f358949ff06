"""render_html on a constructed results dict; checked as text and in headless Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from auditor.report.html import browser_snapshot, decile_svg, find_browser, render_html

needs_browser = pytest.mark.skipif(
    find_browser() is None, reason="Chromium not installed (Debian: apt-get install chromium; .ci/run installs it)"
)


def _png(path: Path, colour: tuple[int, int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.zeros((20, 60, 3), np.uint8)
    array[:, :30] = colour
    Image.fromarray(array).save(path)
    return f"artifacts/{path.name}"


def _verdict(c, f, label, concepts=()):
    return {"class_index": c, "feature": f, "label": label, "importance": 0.5, "heat_inside": 0.1, "object_area": 0.2,
            "density_ratio": 0.4, "object_drop": 0.01, "background_drop": 0.6, "heat_says_spurious": True,
            "ablation_says_spurious": True, "confirmed": True, "image_indices": [0, 1], "concept_names": list(concepts)}


@pytest.fixture()
def results(tmp_path):
    art = tmp_path / "artifacts"
    classes = [
        {"index": 0, "name": "small <gap>", "spurious_features": [3], "core_features": [], "verdicts": [_verdict(0, 3, "spurious")],
         "gap": {"gap": 0.05, "ci_low": -0.1, "ci_high": 0.2, "significant": False, "k": 10, "top_accuracy": 0.9,
                 "bottom_accuracy": 0.85, "n_images": 100, "note": ""}},
        {"index": 1, "name": "big_gap", "spurious_features": [7], "core_features": [8],
         "verdicts": [_verdict(1, 7, "spurious", ["striped background"]), _verdict(1, 8, "core")],
         "gap": {"gap": 0.6, "ci_low": 0.4, "ci_high": 0.8, "significant": True, "k": 10, "top_accuracy": 1.0,
                 "bottom_accuracy": 0.4, "n_images": 100, "note": ""}},
        {"index": 2, "name": "clean", "spurious_features": [], "core_features": [1], "verdicts": [_verdict(2, 1, "core")], "gap": None},
    ]
    artifacts = {"version": 1, "split": "val", "errors": [], "classes": {
        "1": {"top_grid": _png(art / "c1_top.png", (255, 0, 0)), "bottom_grid": _png(art / "c1_bottom.png", (0, 255, 0)),
              "features": {"7": {"heatmap": _png(art / "c1_f7_heat.png", (255, 128, 0)), "mask": _png(art / "c1_f7_mask.png", (0, 0, 255))}},
              "decile_accuracy": {"before": [0.2, 0.3, None, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.0], "after": [0.7] * 10}},
        "0": {"top_grid": _png(art / "c0_top.png", (9, 9, 9)), "bottom_grid": _png(art / "c0_bottom.png", (99, 9, 9)), "features": {}},
    }}
    tuning = {"low_spuriosity": {"method": "low_spuriosity", "n_train_images": 300, "epochs": 40,
                                 "before": {"accuracy": 0.8, "worst_class_accuracy": 0.4, "mean_gap": 0.3, "max_gap": 0.6, "decile_accuracy": [0.5] * 10},
                                 "after": {"accuracy": 0.79, "worst_class_accuracy": 0.6, "mean_gap": 0.1, "max_gap": 0.2, "decile_accuracy": [0.6] * 10}}}
    agreement = {"enabled": True, "source": "human.csv", "labels": ["core", "spurious"], "confusion": [[1, 1], [0, 2]],
                 "n_compared": 4, "n_agree": 3, "accuracy": 0.75, "kappa": 0.5, "n_human_only": 0, "n_auto_only": 0,
                 "disagreements": [{"class_index": 1, "class_name": "big_gap", "feature": 7, "human": "core", "automated": "spurious",
                                    "n_votes": 3, "n_spurious_votes": 1, "evidence": {"heat_inside": 0.1, "density_ratio": 0.4}}]}
    return {"schema_version": "1.0", "class_names": ["small <gap>", "big_gap", "clean"], "classes": classes, "tuning": tuning,
            "sections": {"human_agreement": agreement, "neurontune": {"n_biased": 4}},
            "meta": {"evaluation_split": "val", "n_val_images": 300, "head": "fc", "device": "cpu", "seconds": 1.5},
            "gate": {"conditions": ["max_gap>0.1"], "passed": False, "reason": "gate failed: max_gap=0.6 > 0.1 (class 'big_gap')"},
            "artifacts": artifacts}


def test_html_is_self_contained_and_ordered(results, tmp_path):
    path = render_html(results, tmp_path, tmp_path / "report.html")
    text = path.read_text()
    sources = re.findall(r'src="([^"]+)"', text)
    assert len(sources) == 7 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text
    summary = text[text.index('id="summary"'): text.index("</table>", text.index('id="summary"'))]
    assert summary.index("big_gap") < summary.index("small &lt;gap&gt;") < summary.index("clean")  # sorted by gap, n/a last
    assert "small <gap>" not in text  # names are escaped
    for fragment in ('id="class-0"', 'id="class-1"', 'id="class-2"', "striped background", "gate failed: max_gap=0.6",
                     'id="confusion"', 'id="disagreements"', "Cohen", "+0.600", "[+0.400, +0.800]", "neurontune"):
        assert fragment in text
    assert text.count("<svg") >= 4  # pooled and per-class decile plots, gap intervals


def test_missing_artifacts_still_render(results, tmp_path):
    path = render_html(results, None, tmp_path / "plain.html")
    assert "data:image/png" not in path.read_text() and 'id="class-1"' in path.read_text()
    (tmp_path / "artifacts" / "c1_top.png").unlink()
    text = render_html(results, tmp_path, tmp_path / "r.html").read_text()
    assert "artifacts/c1_top.png missing" in text


def test_decile_svg_skips_empty_deciles():
    svg = decile_svg([0.1, None, 0.3] + [0.5] * 7, None, title="t")
    assert svg.count("<circle") == 9 and "after tuning" not in svg


@needs_browser
def test_report_in_chromium(results, tmp_path):
    path = render_html(results, tmp_path, tmp_path / "report.html")
    dom = browser_snapshot(path, tmp_path / "shot.png", width=1100, height=1400)
    assert "7/7 images rendered" in dom  # every inline image decoded in the browser
    assert "Summary (sorted by gap)" in dom and "Agreement with human annotations" in dom
    shot = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB"))
    assert shot.shape[:2] == (1400, 1100)
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 20  # something was drawn, not a blank page
