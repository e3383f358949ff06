"""load_dataset on ImageFolder, folder + CSV and HF datasets on disk, with masks beside the images."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from auditor.adapters.data import load_dataset, write_image_folder
from auditor.adapters.models import Preprocessing
from auditor.data import ImageSource
from auditor.errors import InvalidInputError

NAMES = ["cat", "dog", "fox"]


def _images(n: int = 9, size: int = 24, seed: int = 0):
    """Dark images with one bright square per image; the mask is that square."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        y, x = rng.integers(0, size - 8, 2)
        images[i, y : y + 8, x : x + 8] = 255
        masks[i, y : y + 8, x : x + 8] = True
    return images, np.arange(n) % 3, masks


@pytest.fixture()
def folder(tmp_path):
    images, labels, masks = _images()
    root = write_image_folder(images, labels, NAMES, tmp_path / "train", masks)
    return root, images, labels, masks


def test_imagefolder_with_masks_matches_the_arrays(folder):
    root, images, labels, masks = folder
    dataset, names = load_dataset({"type": "imagefolder", "path": str(root), "masks": str(root.with_name("train_masks"))})
    assert names == NAMES and len(dataset) == 9
    image, label, mask = dataset[4]
    # write_image_folder names files by index, ImageFolder orders by class then file name
    order = sorted(range(9), key=lambda i: (labels[i], i))
    assert label == labels[order[4]]
    assert torch.equal(mask, torch.from_numpy(masks[order[4]]))
    assert torch.allclose(image, torch.from_numpy(images[order[4]]).permute(2, 0, 1).float() / 255)
    assert ImageSource(dataset).has_masks  # the layout the audit reads


def test_path_string_is_detected_as_imagefolder(folder):
    dataset, names = load_dataset(str(folder[0]))
    assert names == NAMES and len(dataset[0]) == 2  # no masks requested


def test_explicit_class_order(folder):
    dataset, names = load_dataset({"type": "imagefolder", "path": str(folder[0]), "classes": ["fox", "cat", "dog"]})
    assert names == ["fox", "cat", "dog"]
    assert {dataset[i][1] for i in range(3)} == {0}  # the first files are the fox folder's
    with pytest.raises(InvalidInputError, match="not in"):
        load_dataset({"type": "imagefolder", "path": str(folder[0]), "classes": ["cat", "wolf"]})


def test_preprocessing_moves_masks_with_the_image(folder):
    root = folder[0]
    pre = Preprocessing(resize=40, crop_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="nearest")
    dataset, _ = load_dataset({"type": "imagefolder", "path": str(root), "masks": str(root.with_name("train_masks"))}, transform=pre)
    for i in range(len(dataset)):
        image, _, mask = dataset[i]
        assert image.shape == (3, 32, 32) and mask.shape == (32, 32)
        bright = image[0] > 0  # normalised white is 1, black is -1
        assert torch.equal(bright, mask)


def test_folder_without_images_is_a_clear_error(tmp_path):
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "cat" / "notes.txt").write_text("no images here")
    with pytest.raises(InvalidInputError, match=r"has no images .*expected <folder>/<class name>/<image>"):
        load_dataset(str(tmp_path / "empty"))
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_dataset(str(tmp_path / "absent"))


def test_missing_masks_named(folder):
    root = folder[0]
    masks_dir = root.with_name("train_masks")
    next((masks_dir / "dog").iterdir()).unlink()
    with pytest.raises(InvalidInputError, match=r"1 of 9 images have no mask"):
        load_dataset({"type": "imagefolder", "path": str(root), "masks": str(masks_dir)})


def test_unknown_spec_key_suggests(folder):
    with pytest.raises(InvalidInputError, match=r"unknown key 'mask'.*Did you mean 'masks'"):
        load_dataset({"type": "imagefolder", "path": str(folder[0]), "mask": "x"})
    with pytest.raises(InvalidInputError, match="must be one of"):
        load_dataset({"type": "parquet", "path": str(folder[0])})


def test_csv_with_string_labels_and_masks(tmp_path):
    images, labels, masks = _images(6)
    (tmp_path / "imgs").mkdir()
    (tmp_path / "masks").mkdir()
    with open(tmp_path / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "species"])
        for i in range(6):
            Image.fromarray(images[i]).save(tmp_path / "imgs" / f"im{i}.png")
            Image.fromarray(masks[i].astype(np.uint8) * 255).save(tmp_path / "masks" / f"im{i}.png")
            writer.writerow([f"im{i}.png", NAMES[labels[i]]])
    spec = {"type": "csv", "images": str(tmp_path / "imgs"), "csv": str(tmp_path / "labels.csv"),
            "image_column": "filename", "label_column": "species", "masks": str(tmp_path / "masks")}
    dataset, names = load_dataset(spec)
    assert names == sorted(NAMES)
    _image, label, mask = dataset[2]
    assert names[label] == NAMES[labels[2]] and torch.equal(mask, torch.from_numpy(masks[2]))
    with pytest.raises(InvalidInputError, match=r"no column 'label'.*\['filename', 'species'\]"):
        load_dataset({**spec, "label_column": "label"})
    with pytest.raises(InvalidInputError, match=r"not in `class_names`"):
        load_dataset({**spec, "class_names": ["cat", "dog"]})


def test_hf_dataset_on_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    images, labels, masks = _images(6)
    features = datasets.Features({
        "img": datasets.Image(), "label": datasets.ClassLabel(names=NAMES), "mask": datasets.Image(),
    })
    data = datasets.Dataset.from_dict({
        "img": [Image.fromarray(a) for a in images], "label": labels.tolist(),
        "mask": [Image.fromarray(m.astype(np.uint8) * 255) for m in masks],
    }, features=features)
    datasets.DatasetDict({"train": data, "validation": data.select(range(3))}).save_to_disk(tmp_path / "hf")
    dataset, names = load_dataset({"type": "hf", "path": str(tmp_path / "hf"), "image_column": "img", "mask_column": "mask"})
    assert names == NAMES and len(dataset) == 6
    image, label, mask = dataset[1]
    assert label == labels[1] and image.shape == (3, 24, 24) and torch.equal(mask, torch.from_numpy(masks[1]))
    val, _ = load_dataset({"type": "hf", "path": str(tmp_path / "hf"), "split": "validation", "image_column": "img"})
    assert len(val) == 3 and len(val[0]) == 2
    with pytest.raises(InvalidInputError, match=r"no column 'image'.*Did you mean 'img'"):
        load_dataset(str(tmp_path / "hf"))  # detected as HF; default image column is absent
    with pytest.raises(InvalidInputError, match=r"split 'test' is not in"):
        load_dataset({"type": "hf", "path": str(tmp_path / "hf"), "split": "test", "image_column": "img"})
