"""The `auditor` command: config printing and validation, clear errors with exit code 2, the gate, re-rendering."""

from __future__ import annotations

import json
import os
import sys
import types

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import yaml

from auditor.adapters.data import write_image_folder
from auditor.cli import (
    DEFAULT_OUTPUT_DIR,
    build_parser,
    defaults_yaml,
    format_summary,
    main,
)
from auditor.config import AuditConfig
from auditor.demo.world.generator import WorldSpec
from auditor.demo.world.train import TrainSpec, load_or_train_model, load_split
from auditor.report.summary import FEATURE_COLUMN_WIDTH

SPEC = WorldSpec(image_size=32, n_train=60, n_val=40, n_test=10)
FAST = {"features": {"top_k": 3}, "verdicts": {"n_images": 8}, "gaps": {"min_k": 5, "n_bootstrap": 100},
        "tuning": {"epochs": 30, "baselines": []}, "report": {"n_grid_images": 4}}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The generated world as ImageFolders with masks, and the CNN trained on it as a state_dict file."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("world")
    model = load_or_train_model(SPEC, TrainSpec(epochs=12), progress=False)
    torch.save(model.state_dict(), root / "cnn.pt")
    for split in ("train", "val"):
        data = load_split(SPEC, split)
        write_image_folder(data.images, data.labels, SPEC.class_names, root / split, data.masks)
    return root


def _config(world, tmp_path, **changes) -> str:
    classes = list(SPEC.class_names)
    config = {
        "model": {"source": "auditor.demo.world.model:SmallCNN", "kwargs": {"n_classes": 5}, "weights": str(world / "cnn.pt")},
        "data": {"train": {"type": "imagefolder", "path": str(world / "train"), "masks": str(world / "train_masks"), "classes": classes},
                 "val": {"type": "imagefolder", "path": str(world / "val"), "masks": str(world / "val_masks"), "classes": classes}},
        **json.loads(json.dumps(FAST)),
        "report": {**FAST["report"], "output_dir": str(tmp_path / "out")},
    }
    for dotted, value in changes.items():
        node = config
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


# ----------------------------------------------------------------- config


def test_print_defaults_is_the_config_schema(capsys):
    assert main(["config", "--print-defaults"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    defaults = AuditConfig().to_dict()
    for section, values in defaults.items():
        if isinstance(values, dict):
            for key, value in values.items():
                assert printed[section][key] == value, f"{section}.{key}"
        else:
            assert printed[section] == values
    assert printed["model"]["source"] is None and printed["data"]["preprocessing"] == "auto"
    assert "# dotted name of the head module" in defaults_yaml()


def test_validate(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("model: {source: 'timm:resnet18'}\ndata: {train: some/folder}\ngaps: {min_k: 5}\n")
    assert main(["config", "--validate", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {source: 'timm:resnet18'}\ndata: {train: x}\ngaps: {min_kk: 5}\n")
    assert main(["config", "--validate", str(bad)]) == 2
    assert "unknown config key `gaps.min_kk`" in capsys.readouterr().err


# ----------------------------------------------------------------- clear errors, exit code 2


@pytest.mark.parametrize("changes, message", [
    ({"gaps.min_kk": 5}, r"unknown config key `gaps.min_kk`; allowed keys here: \['top_fraction', 'min_k'"),
    ({"verdicts.heatmap": "grad"}, r"`verdicts.heatmap` must be one of \['cam', 'gradient'\]; got 'grad'"),
    ({"data.preprocessing": "imagenet"}, r"`data.preprocessing` must be one of \['auto', 'model', 'none'\]"),
    ({"model.source": "timm:resnet10"}, r"unknown timm model 'resnet10'\. Did you mean 'resnet10t'"),
    ({"model.source": "torchvision:resnet18", "model.kwargs": {}}, r"weights .* do not fit the model"),
    ({"model.source": "torchvision:resnet18"}, r"torchvision model 'resnet18' rejected the arguments \['n_classes'\]"),
    ({"gate.fail_on": ["max_gapp>0.1"]}, r"unknown gate metric 'max_gapp'"),
    ({"model.source": None}, r"`model.source` is required"),
])
def test_bad_input_exits_2_with_a_clear_message(world, tmp_path, capsys, changes, message):
    code = main(["audit", "-c", _config(world, tmp_path, **changes)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("auditor: error: ") and len(err.strip().splitlines()) == 1
    assert __import__("re").search(message, err), err


def test_folder_without_images_exits_2(world, tmp_path, capsys):
    empty = tmp_path / "empty" / "circle"
    empty.mkdir(parents=True)
    code = main(["audit", "-c", _config(world, tmp_path), "--data", str(tmp_path / "empty")])
    assert code == 2 and "has no images" in capsys.readouterr().err


def test_missing_config_file_and_bad_yaml(tmp_path, capsys):
    assert main(["audit", "-c", str(tmp_path / "nope.yaml")]) == 2
    (tmp_path / "broken.yaml").write_text("model: [unclosed\n")
    assert main(["audit", "-c", str(tmp_path / "broken.yaml")]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_unexpected_error_exits_3(world, tmp_path, capsys, monkeypatch):
    from auditor.adapters import models

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(models, "load_model", broken)
    assert main(["audit", "-c", _config(world, tmp_path)]) == 3
    assert "unexpected error: RuntimeError: boom" in capsys.readouterr().err


def test_argument_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", "--batch-size", "many"])
    assert exit_info.value.code == 2
    assert "exit codes: 0 passed, 1 gate failed, 2 bad input" in build_parser().format_help()


# ----------------------------------------------------------------- demo


def test_demo_calls_run_demo_and_prints_its_findings(monkeypatch, tmp_path, capsys):
    calls = []
    run_demo = lambda **kwargs: calls.append(kwargs) or types.SimpleNamespace(text=lambda: "fake findings")
    monkeypatch.setattr("auditor.cli._demo_runner", lambda: run_demo)
    assert main(["demo", "--output-dir", str(tmp_path), "--quick"]) == 0
    assert calls == [{"output_dir": str(tmp_path), "quick": True, "progress": False, "concepts": False}]  # not a terminal: no bars
    assert "fake findings" in capsys.readouterr().out
    assert main(["demo", "--progress"]) == 0 and calls[-1]["progress"] is True


# ----------------------------------------------------------------- full runs


@pytest.mark.slow
def test_audit_gate_report_and_annotations(world, tmp_path, capsys):
    config = _config(world, tmp_path, **{"gate.fail_on": ["max_gap>0.10"]})
    code = main(["audit", "-c", config])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    reason = captured.err.strip().splitlines()[-1]
    assert reason.startswith("gate failed: max_gap=") and "(class '" in reason
    assert "it/s" not in captured.err  # no progress bars when not on a terminal
    assert "INFO auditor.cli: wrote outputs to" in captured.err  # ... but the run's INFO lines instead
    header = next(line for line in captured.out.splitlines() if not line.startswith("warning: "))
    assert header.startswith("class ") and header.endswith("95% CI")  # the CLI's own summary table, after any warnings
    out = tmp_path / "out"
    results = json.loads((out / "results.json").read_text())
    assert results["schema_version"].startswith("1.") and results["gate"]["passed"] is False
    assert results["config"]["gate"]["fail_on"] == ["max_gap>0.10"] and results["config"]["report"]["output_dir"] == str(out)
    assert all((out / p).is_file() for c in results["artifacts"]["classes"].values() for p in (c.get("top_grid"), c.get("bottom_grid")) if p)
    html = (out / "report.html").read_text()
    assert "gate failed: max_gap=" in html

    # re-render with a looser gate and human labels that disagree with one verdict
    verdict = results["classes"][0]["verdicts"][0]
    flipped = "core" if verdict["label"] == "spurious" else "spurious"
    (tmp_path / "human.csv").write_text(f"class,feature,label\n{results['class_names'][0]},{verdict['feature']},{flipped}\n")
    (out / "report.html").unlink()
    code = main(["report", str(out / "results.json"), "--fail-on", "max_gap>1.5", "--annotations", str(tmp_path / "human.csv")])
    assert code == 0
    html = (out / "report.html").read_text()
    assert "gate passed: max_gap=" in html and 'id="disagreements"' in html and "data:image/png;base64," in html


@pytest.mark.slow
def test_newcomer_timm_on_imagefolder_with_one_yaml(world, tmp_path, capsys):
    """A timm model name, two ImageFolders (masks beside them), a small image size: one YAML file, flags for the rest."""
    out = tmp_path / "timm-out"
    config = tmp_path / "audit.yaml"
    config.write_text(
        "model:\n  source: timm:resnet10t\n  num_classes: 5\n  device: cpu\n"
        f"data:\n  train: {{type: imagefolder, path: '{world / 'train'}', masks: '{world / 'train_masks'}'}}\n"
        f"  val: {{type: imagefolder, path: '{world / 'val'}', masks: '{world / 'val_masks'}'}}\n"
        "  image_size: 32\n  batch_size: 100\n"
        "features: {top_k: 2}\nverdicts: {n_images: 4}\ngaps: {min_k: 5, n_bootstrap: 50}\ntuning: {enabled: false}\n"
    )
    code = main(["-q", "audit", "--config", str(config), "--output-dir", str(out), "--quiet-summary"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    results = json.loads((out / "results.json").read_text())
    assert results["class_names"] == sorted(SPEC.class_names)  # ImageFolder order
    assert results["config"]["data"]["mean"] == pytest.approx([0.485, 0.456, 0.406])  # timm's own normalisation
    assert results["config"]["data"]["batch_size"] == 100
    assert results["meta"]["head"] == "fc" and results["meta"]["n_val_images"] == 200
    assert (out / "report.html").is_file()


def test_default_output_dir_constant():
    assert DEFAULT_OUTPUT_DIR == "auditor-out"


def test_tuning_metric_without_tuning_fails_before_the_audit(world, tmp_path, capsys):
    config = _config(world, tmp_path, **{"tuning.enabled": False, "gate.fail_on": ["worst_decile_accuracy<0.5"]})
    assert main(["audit", "-c", config]) == 2
    assert "`tuning.enabled` is false" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_config_doc_is_generated_from_the_code():
    """docs/CONFIG.md's key list and gate table are generated; run scripts/update_config_doc.py when config.py or gate.py change."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("update_config_doc", root / "scripts" / "update_config_doc.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    text = (root / "docs" / "CONFIG.md").read_text()
    assert script.render(text) == text, "docs/CONFIG.md is out of date: run python scripts/update_config_doc.py"
    documented = yaml.safe_load(text[text.rindex("```yaml") + len("```yaml"): text.rindex("```")])
    assert documented["model"]["source"] is None and documented["data"]["max_skipped_fraction"] == 0.01
    assert "| `n_skipped_classes` |" in text


@pytest.fixture(scope="module")
def hf_world(tmp_path_factory):
    """The world as Hugging Face datasets on disk (with a mask column) and a tiny untrained HF ViT folder."""
    datasets = pytest.importorskip("datasets")
    transformers = pytest.importorskip("transformers")
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("hf-world")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=SPEC.class_names), "mask": datasets.Image()})
    for split in ("train", "val"):
        data = load_split(SPEC, split)
        datasets.Dataset.from_dict({
            "image": [Image.fromarray(a) for a in data.images], "label": data.labels.tolist(),
            "mask": [Image.fromarray(m.astype(np.uint8) * 255) for m in data.masks],
        }, features=features).save_to_disk(root / split)
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, num_labels=5)
    transformers.ViTForImageClassification(config).save_pretrained(root / "vit")
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(root / "vit")
    return root


def _hf_audit(hf_world, tmp_path):
    config = tmp_path / "hf.yaml"
    config.write_text(
        f"model: {{source: 'hf:{hf_world / 'vit'}'}}\n"
        f"data:\n  train: {{type: hf, path: '{hf_world / 'train'}', mask_column: mask}}\n"
        f"  val: {{type: hf, path: '{hf_world / 'val'}', mask_column: mask}}\n"
        "features: {top_k: 2}\nverdicts: {n_images: 4}\ngaps: {min_k: 5, n_bootstrap: 50}\ntuning: {epochs: 10, baselines: []}\n"
        f"report: {{output_dir: '{tmp_path / 'out'}'}}\n"
    )
    code = main(["audit", "-c", str(config), "--quiet-summary"])
    return code, json.loads((tmp_path / "out" / "results.json").read_text())


@pytest.mark.slow
def test_hf_vit_on_hf_dataset(hf_world, tmp_path, capsys):
    code, results = _hf_audit(hf_world, tmp_path)
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Loading weights" not in err  # transformers' own bar is off when not on a terminal
    assert results["class_names"] == SPEC.class_names  # from the ClassLabel feature
    assert results["config"]["data"]["mean"] == [0.5, 0.5, 0.5]  # the image processor's normalisation
    assert results["meta"]["head"] == "classifier"


@pytest.mark.slow
def test_hf_vit_has_no_cam_layer(hf_world, tmp_path):
    _, results = _hf_audit(hf_world, tmp_path)
    assert results["meta"]["spatial_layer"] is None


# ----------------------------------------------------------------- start-up, validation order, output


@pytest.mark.parametrize("argv", [["--help"], ["audit", "--help"], ["config", "--print-defaults"]])
def test_help_and_defaults_do_not_import_torch(argv):
    import subprocess

    code = ("import sys\nfrom auditor.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO TORCH', file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.stderr.strip().splitlines()[-1] == "NO TORCH", done.stderr
    assert done.stdout.strip()


def test_lazy_package_keeps_its_public_names():
    import auditor
    from auditor import AuditConfig as Config
    from auditor import AuditReport, ConfigError, audit, load_config

    assert callable(audit) and AuditReport.__name__ == "AuditReport" and Config is AuditConfig
    assert load_config is auditor.load_config and issubclass(ConfigError, ValueError)
    with pytest.raises(AttributeError):
        _ = auditor.not_a_name


def test_misspelt_key_is_reported_before_missing_required_keys(tmp_path, capsys):
    path = tmp_path / "typo.yaml"
    path.write_text("modle: {source: 'timm:resnet18'}\ndata: {train: some/folder}\n")
    assert main(["config", "--validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "unknown config key `modle`" in err and "Did you mean `model`" in err and "is required" not in err
    path.write_text("data: {train: some/folder}\ntuning: {baselines: [random, randm]}\n")
    assert main(["config", "--validate", str(path)]) == 2
    assert "`tuning.baselines` entries must be among ['random', 'error', 'afr']; got 'randm'" in capsys.readouterr().err
    path.write_text("data: {train: some/folder}\n")
    assert main(["config", "--validate", str(path)]) == 2
    assert "`model.source` is required" in capsys.readouterr().err


def _summary_results(long_name: str) -> dict:
    classes = [
        {"index": 0, "name": "cat", "spurious_features": [3], "core_features": [1, 2],
         "gap": {"gap": 0.25, "ci_low": 0.1, "ci_high": 0.4, "significant": True}},
        {"index": 1, "name": long_name, "spurious_features": list(range(100, 130)), "core_features": [],
         "gap": {"gap": -0.05, "ci_low": -0.2, "ci_high": 0.1, "significant": False}},
        {"index": 2, "name": "dog", "spurious_features": [], "core_features": [7], "gap": None},
    ]
    return {"classes": classes, "config": {"gaps": {"confidence": 0.9}}, "meta": {"skipped_classes": {"dog": "fewer than 20 images"}},
            "skipped_images": [{"split": "train", "index": 0, "path": "x.png", "reason": "truncated"}],
            "warnings": ["validation accuracy 0.21 is near chance (0.20)"]}


def test_summary_columns_fit_long_class_names_and_feature_lists():
    long_name = "a_class_name_much_longer_than_any_fixed_column_width"
    lines = format_summary(_summary_results(long_name)).splitlines()
    assert lines[0] == "warning: validation accuracy 0.21 is near chance (0.20)"
    header, cat, long_row, dog = lines[1:5]
    assert header.startswith("class ") and header.endswith("90% CI")
    assert long_row.startswith(long_name + "  ")
    # every column starts where its header does, whatever the class name's length
    for column in ("spurious", "core"):
        start = header.index(column)
        assert all(row[start - 2:start] == "  " and row[start] != " " for row in (cat, long_row)), column
    gap_end = header.index("gap") + len("gap")
    assert [row[gap_end - 6:gap_end] for row in (cat, long_row, dog)] == ["+0.250", "-0.050", "   n/a"]
    truncated = long_row.split("  ")[1].strip()
    assert truncated.startswith("[100, 101, ") and truncated.endswith(", …]") and len(truncated) <= FEATURE_COLUMN_WIDTH
    assert cat.endswith("[+0.100, +0.400] *") and dog.endswith("skipped: fewer than 20 images")
    assert lines[-2:] == ["* the interval excludes 0", "1 unreadable image skipped (listed under `skipped_images` in results.json)"]


def test_stage_lines_show_without_a_terminal_unless_quiet(monkeypatch, tmp_path, capsys):
    import logging

    def run_demo(**kwargs):
        logging.getLogger("auditor.api").info("stage: extracting features")
        return types.SimpleNamespace(text=lambda: "findings")

    monkeypatch.setattr("auditor.cli._demo_runner", lambda: run_demo)
    assert main(["demo", "--output-dir", str(tmp_path)]) == 0  # stderr is not a terminal here: no bars
    assert "stage: extracting features" in capsys.readouterr().err
    assert main(["-q", "demo", "--output-dir", str(tmp_path)]) == 0
    assert "stage: extracting features" not in capsys.readouterr().err
    assert main(["demo", "--progress", "--output-dir", str(tmp_path)]) == 0  # bars on: lines stay at WARNING
    assert "stage: extracting features" not in capsys.readouterr().err


def test_report_gate_on_a_metric_the_results_lack_exits_2(tmp_path, capsys):
    results = {"schema_version": "1.0", "class_names": ["a"], "classes": [{"index": 0, "name": "a", "verdicts": [], "gap": None}],
               "meta": {"skipped_classes": {}}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    assert main(["report", str(path), "--fail-on", "n_skipped_images>0"]) == 2
    assert "gate metric 'n_skipped_images' is not available" in capsys.readouterr().err
    assert main(["report", str(path), "--fail-on", "max_gapp>0.1"]) == 2
    assert "unknown gate metric 'max_gapp'" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()
