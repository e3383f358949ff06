"""FiftyOne: the audited images exported to a dataset in FiftyOne's own embedded database, fields read back."""

from __future__ import annotations

import numpy as np
import pytest

import auditor
from auditor.cli import main
from tests.conftest import TwoChannelNet
from tests.integrations.conftest import FAST, planted

# (tests/conftest.py gives FiftyOne a private database folder, removed at exit, and turns off usage tracking.)
try:
    from auditor.integrations.fiftyone import _fiftyone

    fo = _fiftyone()  # (imports fiftyone also when another package has imported the importlib_metadata backport)
except ImportError:
    pytest.skip('fiftyone is not installed (pip install "auditor[fiftyone]")', allow_module_level=True)

pytestmark = pytest.mark.slow  # starting FiftyOne's MongoDB takes tens of seconds


@pytest.fixture(scope="module")
def database():
    """FiftyOne's embedded MongoDB, started by FiftyOne itself (skips, saying why, when it cannot run here)."""
    try:
        probe = fo.Dataset("auditor-probe", overwrite=True)
    except Exception as error:  # e.g. fiftyone-db without a runnable mongod for this system
        pytest.skip(f"FiftyOne's embedded database cannot start here: {type(error).__name__}: {error}")
    probe.delete()
    return fo


@pytest.fixture(scope="module")
def image_folder_audit(tmp_path_factory):
    """An audit of images read from an ImageFolder (so samples point at the files), with the loaded datasets."""
    from auditor.adapters.data import load_dataset, write_image_folder

    root = tmp_path_factory.mktemp("folders")
    for split, data in (("train", planted()), ("val", planted(30, seed=1, n_other=10))):
        images = np.stack([(data.images[i].numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8) for i in range(len(data))])
        masks = np.stack([data.masks[i].numpy() for i in range(len(data))])
        write_image_folder(images, np.array(data.labels), ["object", "other"], root / split, masks)
    train, names = load_dataset({"type": "imagefolder", "path": str(root / "train"), "masks": str(root / "train_masks")})
    val, _ = load_dataset({"type": "imagefolder", "path": str(root / "val"), "masks": str(root / "val_masks")})
    out = root / "out"
    report = auditor.audit(TwoChannelNet(), train, val, class_names=names,
                           config={**FAST, "report": {**FAST["report"], "output_dir": str(out)}})
    return report, train, val, root, out


def check_fields(dataset, report, split, labels_dataset=None):
    scores, labels = report.rankings[split], report.labels[split]
    predictions = report.predictions[split]
    assert len(dataset) == int((labels >= 0).sum())
    top, bottom = set(report.gaps[0].top_indices), set(report.gaps[0].bottom_indices)
    assert top and bottom
    for sample in dataset.iter_samples():
        i = sample.index
        c = int(labels[i])
        assert sample.class_index == c and sample.ground_truth.label == report.class_names[c]
        assert sample.prediction.label == report.class_names[int(predictions[i])]
        if np.isfinite(scores[i]):
            assert sample.spuriosity == pytest.approx(scores[i])
        else:
            assert sample.spuriosity is None
        assert sample.spurious_features == report.spurious_features(c)
        if c == 0:
            assert sample.in_top_k == (i in top) and sample.in_bottom_k == (i in bottom)
    assert set(dataset.list_saved_views()) == {"object by spuriosity", "other by spuriosity"}
    view = dataset.load_saved_view("object by spuriosity")
    values = view.values("spuriosity")
    assert len(values) == int((labels == 0).sum()) and values == sorted(values, reverse=True)
    assert view.first().index == report.gaps[0].top_indices[0]


def test_report_to_fiftyone_with_image_files_and_heatmaps(database, image_folder_audit):
    report, _, val, root, _ = image_folder_audit
    dataset = report.to_fiftyone("auditor-test-files", dataset=val)
    check_fields(dataset, report, "val")
    sample = dataset.match(fo.ViewField("class_index") == 0).first()
    assert sample.filepath == str(val.image_path(sample.index)) and sample.filepath.startswith(str(root.resolve()))
    heat = sample.heatmap.get_map()
    assert heat.ndim == 2 and heat.min() >= 0 and heat.max() <= 1 and heat.max() > 0
    assert dataset.info["auditor"]["spurious_features"]["object"] == report.spurious_features(0)
    reloaded = fo.load_dataset("auditor-test-files")  # read back from the database
    assert reloaded.count("heatmap") == int((report.labels["val"] == 0).sum())
    assert reloaded.count() == len(val)


def test_in_memory_images_are_written_once(database, audited, tmp_path):
    report, _ = audited
    data = planted(30, seed=1, n_other=0)
    dataset = report.to_fiftyone("auditor-test-memory", dataset=data, image_dir=tmp_path / "images")
    check_fields(dataset, report, "val")
    files = sorted((tmp_path / "images").glob("*.png"))
    assert len(files) == len(data)
    stamps = [f.stat().st_mtime_ns for f in files]
    report.to_fiftyone("auditor-test-memory", dataset=data, image_dir=tmp_path / "images")
    assert [f.stat().st_mtime_ns for f in files] == stamps


def test_cli_export_reads_results_json(database, image_folder_audit, capsys):
    report, _, _, root, out = image_folder_audit
    code = main(["export", "fiftyone", str(out / "results.json"), "--name", "auditor-test-cli",
                 "--data", str(root / "val"), "--no-persistent"])
    assert code == 0, capsys.readouterr().err
    dataset = fo.load_dataset("auditor-test-cli")
    check_fields(dataset, report, "val")
    assert "heatmap" not in dataset.get_field_schema() or dataset.count("heatmap") == 0  # no model source in an API audit


def test_an_api_audit_needs_the_images(database, audited):
    from auditor.errors import InvalidInputError

    report, _ = audited
    with pytest.raises(InvalidInputError, match="needs the images"):
        report.to_fiftyone("auditor-test-none")
    with pytest.raises(InvalidInputError, match="has 3 images"):
        report.to_fiftyone("auditor-test-none", dataset=planted(3, n_other=0))
