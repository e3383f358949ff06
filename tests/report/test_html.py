"""render_html on constructed results dicts: escaping, sections, warnings, skipped data; also in headless Chromium."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from auditor.report import plots
from auditor.report.html import (
    browser_snapshot,
    evidence_columns,
    find_browser,
    render_html,
)
from auditor.report.sections import SECTION_RENDERERS

needs_browser = pytest.mark.skipif(
    find_browser() is None, reason="Chromium not installed (Debian: apt-get install chromium; .ci/run installs it)"
)


def _png(path: Path, colour: tuple[int, int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.zeros((20, 60, 3), np.uint8)
    array[:, :30] = colour
    Image.fromarray(array).save(path)
    return f"artifacts/{path.name}"


def _data_uri(colour: tuple[int, int, int]) -> str:
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), colour, np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _verdict(c, f, label, concepts=()):
    return {"class_index": c, "feature": f, "label": label, "importance": 0.5, "heat_inside": 0.1, "object_area": 0.2,
            "density_ratio": 0.4, "object_drop": 0.01, "background_drop": 0.6, "heat_says_spurious": True,
            "ablation_says_spurious": True, "confirmed": True, "image_indices": [0, 1], "concept_names": list(concepts)}


def _svg(uri: str) -> str:
    assert uri.startswith("data:image/svg+xml;base64,")
    return base64.b64decode(uri.split(",", 1)[1]).decode("utf-8")


# One plausible dict per built-in section, shaped like what its stage stores in results.json.
SECTIONS = {
    "concepts": {"encoder": "clip-test", "n_concepts": 3, "evaluation_split": "val", "confidence": 0.95,
                 "correction": "bonferroni over concepts", "min_enrichment": 0.6, "max_redundancy": 0.9,
                 "classes": {"big_gap": {"spurious": ["water <b>"], "same_direction": {"lake": "water <b>"},
                                         "gap_without_cooccurrence": [], "harmless": ["grass"],
                                         "checked": [{"concept": "water <b>", "category": "background", "gap": 0.4, "ci_low": 0.2,
                                                      "ci_high": 0.6, "k": 10, "enrichment_auc": 0.8, "opens_gap": True,
                                                      "kept": True, "same_as": None, "note": ""}]}},
                 "feature_names": {"big_gap:7": [{"concept": "water <b>", "rho": 0.7}]}},
    "neurontune": {"identification_split": "val", "threshold": 0.1, "combine": "any", "n_dimensions": 4, "suppressed": [1, 3],
                   "n_suppressed": 2, "n_over_threshold": 2, "overlap": {"per_class": {"1": {"spurious_suppressed": [7]}},
                                                                          "spurious_recall": 0.5, "core_suppressed": 0.0},
                   "before": {"accuracy": 0.8, "worst_class_accuracy": 0.5, "class_accuracy": {"0": 0.9, "1": 0.5}, "mean_gap": 0.3},
                   "after": {"accuracy": 0.82, "worst_class_accuracy": 0.6, "class_accuracy": {"0": 0.9, "1": 0.6}, "mean_gap": 0.1},
                   "fallback": False, "gain_confidence": 0.97, "min_gain_confidence": 0.9},
    "discovery": {"pool": {"kind": "objects_removed", "split": "val", "n_images": 12}, "embedding": "vae", "min_confidence": 0.8,
                  "classes": {"1": {"class_name": "big_gap", "n_collected": 5, "spurious_features": [7],
                                    "clusters": [{"cluster": 1, "size": 5, "concepts": [], "spurious_activation": 1.2,
                                                  "agrees_with_audit": True, "exemplars": [{"id": 3, "image": _data_uri((1, 2, 3))}]}]}}},
    "noise": {"classes_examined": [[0, "val"]], "n_flagged": 1, "results": [
        {"class_index": 0, "class_name": "small <gap>", "split": "val", "gap": -0.3, "n_flagged": 1, "n_misclassified": 1,
         "n_fixed_by_crop": 1, "fixed_share": 1.0, "n_possible_label_noise": 0,
         "images": [{"index": 4, "prediction": 1, "crop_prediction": 0, "diagnosis": "second object <cropped>",
                     "image": _data_uri((5, 5, 5)), "crop": _data_uri((6, 6, 6))}]}]},
    "human_agreement": {"enabled": True, "source": "human.csv", "labels": ["core", "spurious"], "confusion": [[1, 1], [0, 2]],
                        "n_compared": 4, "n_agree": 3, "accuracy": 0.75, "kappa": 0.5, "n_human_only": 0, "n_auto_only": 0,
                        "disagreements": [{"class_index": 1, "class_name": "big_gap", "feature": 7, "human": "core",
                                           "automated": "spurious", "n_votes": 3, "n_spurious_votes": 1,
                                           "evidence": {"heat_inside": 0.1, "density_ratio": 0.4}}]},
    "model_comparison": {"split": "val", "classes": [0, 1], "mean_correlation": 0.7, "models": [
        {"name": "resnet <a>", "accuracy": 0.9, "mean_gap": 0.2, "low_accuracy": 0.95, "high_accuracy": 0.7,
         "gaps": {"0": {"gap": 0.1}, "1": {"gap": 0.3}}},
        {"name": "vit", "accuracy": 0.92, "mean_gap": 0.05, "low_accuracy": 0.9, "high_accuracy": 0.88, "gaps": {}}]},
    "demo_ground_truth": {"truth": {"big_gap": {"cue": "stripes", "flagged": True}, "clean": {"cue": None, "flagged": True}},
                          "auroc": {"big_gap": 0.91}, "test": {"original (ERM)": {"accuracy": 0.8, "worst_group": 0.4}}},
}
HEADINGS = {
    "concepts": "<h2>Concepts</h2>",
    "neurontune": "<h2>NeuronTune (neuron regulation)</h2>",
    "discovery": "<h2>Cues found on images without the class object</h2>",
    "noise": "<h2>Label noise and core cropping</h2>",
    "human_agreement": '<h2 id="human-agreement">Agreement with human annotations</h2>',
    "model_comparison": "<h2>Bias across models</h2>",
    "demo_ground_truth": "<h2>Demo ground truth</h2>",
}


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
    return {"schema_version": "1.0", "class_names": ["small <gap>", "big_gap", "clean"], "classes": classes, "tuning": tuning,
            "sections": {"human_agreement": SECTIONS["human_agreement"], "neurontune": {"n_biased": 4}},
            "meta": {"evaluation_split": "val", "n_val_images": 300, "head": "fc", "device": "cpu", "seconds": 1.5},
            "gate": {"conditions": ["max_gap>0.1"], "passed": False, "reason": "gate failed: max_gap=0.6 > 0.1 (class 'big_gap')"},
            "artifacts": artifacts}


def test_html_is_self_contained_and_ordered(results, tmp_path):
    text = render_html(results, tmp_path, tmp_path / "report.html").read_text()
    sources = re.findall(r'src="([^"]+)"', text)
    pngs = [s for s in sources if s.startswith("data:image/png;base64,")]
    svgs = [s for s in sources if s.startswith("data:image/svg+xml;base64,")]
    assert len(pngs) == 7 and len(sources) == len(pngs) + len(svgs)  # 4 grids, heatmap, mask, disagreement heatmap
    assert len(svgs) == 4  # pooled and one per-class decile plot, two gap intervals (class 2 has no gap)
    assert "http://" not in text and "https://" not in text
    summary = text[text.index('id="summary"'): text.index("</table>", text.index('id="summary"'))]
    assert summary.index("big_gap") < summary.index("small &lt;gap&gt;") < summary.index("clean")  # sorted by gap, n/a last
    for fragment in ('id="class-0"', 'id="class-1"', 'id="class-2"', "striped background", "gate failed: max_gap=0.6",
                     'id="gate" class="gate-fail"', 'id="tuning"', 'id="render-check"', 'id="confusion"', 'id="disagreements"',
                     'id="kappa"', "Cohen", "+0.600", "[+0.400, +0.800]", "NeuronTune"):
        assert fragment in text
    assert "{{" not in text and "{%" not in text
    assert text.index('id="human-agreement"') < text.index("<h2>Classes</h2>") < text.index("NeuronTune")


def test_heatmap_caption_says_which_images_were_examined(results, tmp_path):
    text = render_html(results, tmp_path, tmp_path / "top.html").read_text()
    assert "Feature heatmap on its top-activating images" in text
    results["config"] = {"verdicts": {"image_selection": "spread"}}
    text = render_html(results, tmp_path, tmp_path / "spread.html").read_text()
    assert "spread over its activation range" in text and "top-activating" not in text


def test_names_and_values_are_escaped(results, tmp_path):
    results["class_names"][0] = results["classes"][0]["name"] = "<script>alert(1)</script>"
    results["gate"]["reason"] = "<b>bold</b>"
    results["classes"][1]["verdicts"][0]["concept_names"] = ['"><img src=x onerror=alert(2)>']
    text = render_html(results, tmp_path, tmp_path / "report.html").read_text()
    assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<b>bold</b>" not in text and "&lt;b&gt;bold&lt;/b&gt;" in text
    assert "<img src=x" not in text and "&lt;img src=x onerror=alert(2)&gt;" in text
    assert text.count("<script>") == 1  # only the page's own render check


def test_missing_artifacts_still_render(results, tmp_path):
    text = render_html(results, None, tmp_path / "plain.html").read_text()
    assert "data:image/png" not in text and 'id="class-1"' in text and "data:image/svg+xml" in text  # plots need no files
    (tmp_path / "artifacts" / "c1_top.png").unlink()
    text = render_html(results, tmp_path, tmp_path / "r.html").read_text()
    assert "artifacts/c1_top.png missing" in text


def test_every_registered_section_renders_its_heading(results, tmp_path):
    assert set(HEADINGS) <= set(SECTION_RENDERERS.names())
    results["sections"] = SECTIONS
    text = render_html(results, tmp_path, tmp_path / "report.html").read_text()
    for name, heading in HEADINGS.items():
        assert heading in text, name
        assert f'id="section-{name}"' in text
        assert "could not be rendered" not in text
    assert "water &lt;b&gt;" in text and "water <b>" not in text  # concepts
    assert "2 of 4 dimensions suppressed" in text and "<td class=\"l\">big_gap</td><td>0.500</td><td>0.600</td>" in text  # neurontune
    assert "beat the original on 97% of held-out resamples" in text  # neurontune's confidence check
    assert "cluster 1: 5 images" in text and _data_uri((1, 2, 3)) in text  # discovery exemplar inline
    assert "second object &lt;cropped&gt;" in text and _data_uri((6, 6, 6)) in text  # noise crop
    assert "resnet &lt;a&gt;" in text and "gap big_gap" in text and "+0.300" in text  # model comparison table
    assert "stripes" in text and "MISS" in text and "0.910" in text  # demo ground truth: the control class was flagged
    assert "{{" not in text and "{%" not in text


@pytest.mark.parametrize("name", sorted(HEADINGS))
def test_sections_tolerate_empty_and_odd_dicts(results, tmp_path, name):
    results["sections"] = {name: {"unexpected": [1, 2]}}
    text = render_html(results, tmp_path, tmp_path / "report.html").read_text()
    assert "<h2>Classes</h2>" in text and "{{" not in text and "could not be rendered" not in text
    if name != "human_agreement":  # without a confusion matrix there is no comparison to show
        assert HEADINGS[name] in text


def test_unknown_sections_render_generically(results, tmp_path):
    results["sections"] = {"brand_new": {"score": 0.25, "label": "<odd>", "nested": {"a": [1, 2, 3]}},
                           "a list": [1, 2, {"x": "data:image/png;base64,AAAA"}], "neurontune": "not a dict"}
    text = render_html(results, tmp_path, tmp_path / "report.html").read_text()
    assert "<h2>brand_new</h2>" in text and "&lt;odd&gt;" in text and "0.250" in text and "&#34;nested&#34;" in text
    assert "<h2>a list</h2>" in text and 'id="section-a-list"' in text and "inline image" in text
    assert "NeuronTune section" not in text and "could not be rendered (AttributeError" in text  # a renderer failing falls back


def test_warnings_skipped_images_and_skipped_classes(results, tmp_path):
    results["warnings"] = ["validation accuracy 0.12 is near chance (0.10)", "heatmap grid <7x7> is coarse"]
    results["skipped_images"] = ([{"split": "train", "index": i, "path": f"/data/bad_{i}.jpg", "reason": "cannot identify image file"}
                                  for i in range(12)] + [{"split": "val", "index": 5, "path": None, "reason": "truncated"}])
    results["meta"]["skipped_classes"] = {"clean": "fewer than 20 training images"}
    text = render_html(results, tmp_path, tmp_path / "report.html").read_text()
    warnings = text[text.index('id="warnings"'):text.index("</div>", text.index('id="warnings"'))]
    assert "near chance" in warnings and "heatmap grid &lt;7x7&gt; is coarse" in warnings
    assert text.index('id="warnings"') < text.index('id="summary"')  # at the top
    skipped = text[text.index('id="skipped-images"'):text.index("</div>", text.index('id="skipped-images"'))]
    assert "13 unreadable images skipped" in skipped and "train: 12" in skipped and "val: 1" in skipped
    assert "/data/bad_0.jpg" in skipped and "/data/bad_9.jpg" in skipped and "/data/bad_10.jpg" not in skipped and "3 more" in skipped
    section = text[text.index('id="class-2"'):text.index("</section>", text.index('id="class-2"'))]
    assert "skipped: fewer than 20 training images" in section and "No spurious feature found" not in section
    assert "skipped: fewer than 20 training images" in text[text.index('id="summary"'):text.index("</table>", text.index('id="summary"'))]
    results.pop("warnings"), results.pop("skipped_images")
    text = render_html(results, tmp_path, tmp_path / "report.html").read_text()
    assert 'id="warnings"' not in text and 'id="skipped-images"' not in text


def test_evidence_tables_show_new_and_unknown_fields(results, tmp_path):
    verdict = results["classes"][1]["verdicts"][0]
    verdict.update({"background_reliance": 0.72, "reliance_ci_low": 0.6, "reliance_ci_high": 0.81, "mixed": True,
                    "decided_by": "counterfactual", "explanation": "the prediction follows the <background>",
                    "future_score": 0.123456, "future_list": [1, 2]})
    columns = [c["key"] for c in evidence_columns(results["classes"][1]["verdicts"])]
    assert columns.index("background_reliance") < columns.index("explanation") < columns.index("future_score")
    assert "reliance_ci_low" not in columns and "class_index" not in columns
    text = render_html(results, tmp_path, tmp_path / "report.html").read_text()
    section = text[text.index('id="class-1"'):text.index("</section>", text.index('id="class-1"'))]
    for fragment in ("background reliance", "0.720", "[+0.600, +0.810]", "decided by", "counterfactual", "mixed",
                     "the prediction follows the &lt;background&gt;", "future score", "0.123", "1, 2"):
        assert fragment in section, fragment
    plain = text[text.index('id="class-0"'):text.index("</section>", text.index('id="class-0"'))]
    assert "background reliance" not in plain  # only shown where present


def test_plots_are_svg_and_skip_empty_values():
    svg = _svg(plots.decile_plot([0.1, None, 0.3] + [0.5] * 7, None, title="t"))
    assert svg.lstrip().startswith("<?xml") and "before tuning" in svg and "after tuning" not in svg
    assert plots.decile_points([0.1, None, float("nan"), 0.3]) == ([1, 4], [0.1, 0.3])
    assert plots.decile_plot([None] * 10, None) is None
    assert "after tuning" in _svg(plots.decile_plot([0.5] * 10, [0.6] * 10))
    assert plots.interval_plot(0.2, None, 0.4) is None and plots.interval_plot(0.2, 0.1, 0.4) is not None
    svg = _svg(plots.comparison_plot([{"name": "a<b", "low_accuracy": 0.9, "high_accuracy": 0.5}, {"name": "none"}]))
    assert "a&lt;b" in svg and ">none<" not in svg
    assert plots.comparison_plot([{"name": "x"}]) is None
    assert plots.decile_plot([0.5] * 10) == plots.decile_plot([0.5] * 10)  # deterministic bytes


def test_results_json_round_trip(results, tmp_path):
    results["sections"] = SECTIONS
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    direct = render_html(results, tmp_path, tmp_path / "a.html").read_text()
    loaded = render_html(json.loads(path.read_text()), tmp_path, tmp_path / "b.html").read_text()
    assert direct == loaded


@needs_browser
def test_report_in_chromium(results, tmp_path):
    results["sections"] = SECTIONS
    path = render_html(results, tmp_path, tmp_path / "report.html")
    n_images = len(re.findall(r"<img ", path.read_text()))
    dom = browser_snapshot(path, tmp_path / "shot.png", width=1100, height=1400)
    assert f"{n_images}/{n_images} images rendered" in dom and n_images > 10  # every inline image and plot decoded
    assert "Summary (sorted by gap)" in dom and "Agreement with human annotations" in dom
    shot = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB"))
    assert shot.shape[:2] == (1400, 1100)
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 20  # something was drawn, not a blank page


def test_tuning_table_says_how_each_reweighted_head_was_fitted(results, tmp_path):
    metrics = {"accuracy": 0.8, "worst_class_accuracy": 0.5, "mean_gap": 0.2, "max_gap": 0.4, "decile_accuracy": [0.6] * 10}
    results["tuning"]["error"] = {"method": "error", "n_train_images": 150, "epochs": 0, "before": metrics,
                                  "after": {**metrics, "inverse_l2": 0.3, "refit": True, "grouping": "error"}}
    results["tuning"]["random"] = {"method": "random", "n_train_images": 0, "epochs": 0, "before": metrics,
                                   "after": {**metrics, "inverse_l2": None, "grouping": None}}
    results["tuning"]["afr"] = {"method": "afr", "n_train_images": 150, "epochs": 0, "before": metrics,
                                "after": {**metrics, "inverse_l2": 1.0, "refit": False, "grouping": "afr", "afr_gamma": 4.0}}
    text = render_html(results, tmp_path, tmp_path / "report.html").read_text()
    assert "reweighted, balancing the model&#39;s right / wrong answers, C=0.3; refitted on all validation images" in text
    assert "reweighted, weighted by the model&#39;s confidence (AFR, gamma=4), C=1" in text
    assert "original head kept" in text and "40 epochs" in text  # the select-mode head keeps its epoch count
    results["tuning"]["low_spuriosity"]["after"].update(inverse_l2=0.1, refit=False, grouping="spuriosity",
                                                        fitted_on={"val": 150, "train": 42})  # tuning.training_images
    text = render_html(results, tmp_path, tmp_path / "report.html").read_text()
    assert "reweighted, balancing low / high spuriosity, C=0.1; with 42 training images" in text


@pytest.mark.parametrize(("skewed", "grouping"), [(True, "error"), (True, "spuriosity"), (False, "spuriosity")])
def test_tuning_section_reports_the_validation_skew_check(results, tmp_path, skewed, grouping):
    results["tuning"]["low_spuriosity"]["after"]["validation_skew"] = {
        "low_spuriosity_share": 0.18 if skewed else 0.64, "training_tail": 0.1, "threshold": 0.5, "skewed": skewed}
    results["tuning"]["low_spuriosity"]["after"]["grouping"] = grouping
    results["tuning"]["low_spuriosity"]["after"]["fitted_on"] = {"val": 150, "train": 40} if skewed else {"val": 150}
    text = render_html(results, tmp_path, tmp_path / "report.html").read_text()
    assert ("the 40 least spurious training images joined the fit, and" in text) is skewed
    share = "18%" if skewed else "64%"
    assert f"Validation skew check: {share} of the validation images are less spurious than the least spurious 10%" in text
    assert ("about as skewed as training" in text) is skewed and ("holds enough low-spuriosity images" in text) is not skewed
    assert ("wrong answers was kept" in text) is (grouping == "error")
    assert ("stayed within the accuracy floor" in text) is (skewed and grouping != "error")
    del results["tuning"]["low_spuriosity"]["after"]["validation_skew"]
    assert "Validation skew check" not in render_html(results, tmp_path, tmp_path / "report2.html").read_text()


@pytest.mark.parametrize("where, said", [
    ("val, both halves, each judged by heads fitted on the other", "half-fitted versions, each on the half it was not fitted on"),
    ("val, held-out half", "half-fitted version there"),
    ("val, all 5 folds, each judged by heads fitted on the others", "versions fitted on all folds but one, each on the fold")])
def test_tuning_section_says_which_images_judged_the_heads(results, tmp_path, where, said):
    results["tuning"]["low_spuriosity"]["after"]["evaluated_on"] = where  # tuning.cross_fit on / off / tuning.folds 5
    text = render_html(results, tmp_path, tmp_path / "report.html").read_text()
    assert f"Measured on: {where}." in text and said in text
