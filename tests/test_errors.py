"""Bad inputs: one case per row of docs/ERRORS.md, each triggered through a public function.

Every case asserts the outcome (the exception type, or that the input is skipped and the
audit goes on) and that the message names the offending value and the fix. The doc's table
is rendered from ``CASES``; ``test_errors_doc_is_up_to_date`` fails when they drift.
Regenerate the doc with ``python -m tests.test_errors``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from auditor.errors import (
    InvalidInputError,
    MissingWeightsError,
    NumericalError,
    UnsupportedModelError,
)
from tests.conftest import ProjNet

DOC = Path(__file__).resolve().parents[1] / "docs" / "ERRORS.md"
SKIPPED = "skipped (warning)"


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        given: the bad input, as a user would describe it.
        outcome: the exception class raised, or ``SKIPPED`` when the input is left out and the audit goes on.
        names: what the message names (doc column).
        fix: the fix the message gives (doc column).
        trigger: builds the input in a temporary folder and calls the public function; returns the
            skip's message for skipped inputs (and raises for the others).
        expect: substrings the message must contain (the value and the fix).
    """

    given: str
    outcome: type | str
    names: str
    fix: str
    trigger: Callable[[Path], str | None]
    expect: tuple[str, ...]

    @property
    def outcome_name(self) -> str:
        return self.outcome if isinstance(self.outcome, str) else f"`{self.outcome.__name__}`"


# ----------------------------------------------------------------- inputs


class _Items(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _folder(tmp: Path, n: int = 8, size: int = 8) -> Path:
    from auditor.adapters.data import write_image_folder

    images = np.random.default_rng(0).integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    return write_image_folder(images, np.arange(n) % 2, ["a", "b"], tmp / "data")


def _features(root: Path, tmp: Path, max_skipped_fraction: float) -> str:
    from auditor.adapters.data import load_dataset
    from auditor.data import ImageSource
    from auditor.features import extract_features
    from auditor.model import ModelAdapter
    from tests.conftest import TwoChannelNet

    dataset, _ = load_dataset(str(root))
    cache = extract_features(ModelAdapter(TwoChannelNet()), ImageSource(dataset), tmp / "features", progress=False,
                             max_skipped_fraction=max_skipped_fraction)
    assert (cache.labels == -1).sum() == len(cache.skipped) > 0
    return "; ".join(s.describe() for s in cache.skipped)


def corrupt_image(tmp: Path):
    root = _folder(tmp)
    (root / "a" / "broken.png").write_bytes(b"GIF89a not really")
    return _features(root, tmp, 0.5)


def zero_byte_image(tmp: Path):
    root = _folder(tmp)
    (root / "b" / "empty.jpg").write_bytes(b"")
    return _features(root, tmp, 0.5)


def too_many_unreadable(tmp: Path):
    root = _folder(tmp)
    (root / "a" / "broken.png").write_bytes(b"")
    _features(root, tmp, 0.01)


def mixed_sizes(tmp: Path):
    from auditor.adapters.data import load_dataset
    from auditor.data import ImageSource

    root = _folder(tmp, size=8)
    Image.fromarray(np.zeros((20, 16, 3), np.uint8)).save(root / "b" / "big.png")
    dataset, _ = load_dataset(str(root))
    list(ImageSource(dataset).batches())


def empty_dataset(tmp: Path):
    from auditor.data import ImageSource

    ImageSource(_Items([]))


def image_not_a_tensor(tmp: Path):
    from auditor.data import ImageSource

    ImageSource(_Items([(Image.new("RGB", (4, 4)), 0)]))


def label_outside_head(tmp: Path):
    from auditor.data import ImageSource
    from auditor.features import extract_features
    from auditor.model import ModelAdapter
    from tests.conftest import PlantedDataset, TwoChannelNet

    dataset = PlantedDataset(n=4)
    dataset.labels[2] = 7
    extract_features(ModelAdapter(TwoChannelNet()), ImageSource(dataset), tmp, progress=False)


def mask_wrong_size(tmp: Path):
    from auditor.data import ImageSource

    ImageSource(_Items([(torch.zeros(3, 8, 8), 0, torch.zeros(4, 4))]))


def nan_activations(tmp: Path):
    from auditor.data import ImageSource
    from auditor.features import extract_features
    from auditor.model import ModelAdapter
    from tests.conftest import PlantedDataset, TwoChannelNet

    dataset = PlantedDataset(n=4)
    dataset.images[1] = torch.full_like(dataset.images[1], float("inf"))
    extract_features(ModelAdapter(TwoChannelNet()), ImageSource(dataset), tmp, progress=False)


def no_linear_head(tmp: Path):
    from auditor.model import ModelAdapter

    ModelAdapter(nn.Sequential(nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()))


def head_not_linear(tmp: Path):
    from auditor.model import ModelAdapter
    from tests.conftest import TwoChannelNet

    ModelAdapter(TwoChannelNet(), head="conv")


def class_names_vs_head(tmp: Path):
    from auditor.model import ModelAdapter

    ModelAdapter(ProjNet()).check_class_names(["a", "b", "c", "d", "e"])


def wrong_layer_as_head(tmp: Path):
    from auditor.model import ModelAdapter

    ModelAdapter(ProjNet()).forward(torch.rand(2, 3, 2, 2))


def weights_do_not_fit(tmp: Path):
    from auditor.adapters.models import load_model
    from auditor.demo.world.model import SmallCNN

    torch.save(SmallCNN(3, width=8).state_dict(), tmp / "w.pt")
    load_model("auditor.demo.world.model:SmallCNN", weights=tmp / "w.pt", n_classes=5, width=8)


def unknown_model_name(tmp: Path):
    from auditor.adapters.models import load_model

    load_model("torchvision:resnet181")


def missing_model_weights(tmp: Path):
    from auditor.adapters.models import load_model

    load_model("torchvision:resnet18", weights=tmp / "resnet18-finetuned.pth")


def missing_sam_weights(tmp: Path):
    from auditor.masks.sam import load_sam

    pytest.importorskip("segment_anything")
    load_sam("vit_b", None)


def missing_clip_weights(tmp: Path):
    from auditor.concepts.open_clip_backend import OpenClipEncoder

    pytest.importorskip("open_clip")
    OpenClipEncoder("ViT-B-32", pretrained=str(tmp / "clip-b32.pt"))


def unknown_dataset_key(tmp: Path):
    from auditor.adapters.data import load_dataset

    load_dataset({"type": "imagefolder", "path": str(_folder(tmp)), "mask": "masks"})


def skipped_image_requested(tmp: Path):
    from auditor.data import ImageSource

    class Flaky(_Items):
        def __getitem__(self, i):
            if i == 2:
                raise OSError("truncated")
            return super().__getitem__(i)

    source = ImageSource(Flaky([(torch.zeros(3, 4, 4), 0)] * 4))
    source.load([0, 2])


def too_few_images_in_a_class(tmp: Path):
    import auditor
    from tests.conftest import PlantedDataset, TwoChannelNet

    dataset = PlantedDataset(n=40)
    for i in range(3):
        dataset.labels[i] = 1
    config = {"progress": False, "gaps": {"min_k": 5, "n_bootstrap": 20}, "verdicts": {"n_images": 4}, "tuning": {"enabled": False}}
    report = auditor.audit(TwoChannelNet(), dataset, class_names=["object", "rare"], config=config)
    return f"rare: {report.meta['skipped_classes']['rare']}"


CASES = {
    "corrupt image file": Case(
        "a corrupt image file (not an image)", SKIPPED, "index, path and the reading error",
        "none needed: counted in `skipped_images`; the audit goes on", corrupt_image,
        ("broken.png", "UnidentifiedImageError")),
    "zero-byte image file": Case(
        "a zero-byte image file", SKIPPED, "index, path and the reading error",
        "none needed: counted in `skipped_images`; the audit goes on", zero_byte_image,
        ("empty.jpg", "UnidentifiedImageError")),
    "too many unreadable images": Case(
        "more unreadable images than `data.max_skipped_fraction` (default 1%)", InvalidInputError,
        "the count, the share, the first few files and errors", "fix the files or raise `data.max_skipped_fraction`",
        too_many_unreadable, ("1 of 9 train images", "broken.png", "raise `data.max_skipped_fraction`")),
    "mixed image sizes": Case(
        "images of different sizes (an ImageFolder without resizing)", InvalidInputError,
        "the file and both sizes", "set `data.image_size` (`--image-size`) or resize in the transform",
        mixed_sizes, ("big.png", "3x20x16", "3x8x8", "`data.image_size`")),
    "empty dataset": Case(
        "an empty dataset", InvalidInputError, "the split and the dataset type", "check the dataset's path and filters",
        empty_dataset, ("train dataset (_Items) is empty (len 0)", "check the dataset's path")),
    "image not a tensor": Case(
        "images that are not tensors (PIL images, arrays)", InvalidInputError, "the item and its type",
        "add a transform such as `ToTensor()`", image_not_a_tensor, ("image is Image", "ToTensor()")),
    "label outside the head": Case(
        "a label outside the head's range", InvalidInputError, "the image, the label, the range and the head",
        "check the label mapping, or `model.head`", label_outside_head,
        ("image 2 has label 7", "range 0..1", "label mapping", "`model.head`")),
    "mask of the wrong size": Case(
        "a mask whose size differs from its image's", InvalidInputError, "the item and both shapes",
        "resize the mask with the image's geometry", mask_wrong_size, ("mask has shape (4, 4)", "(8, 8)", "resize the mask")),
    "NaN or inf activations": Case(
        "NaN or inf activations/logits", NumericalError, "how many images and which",
        "check `data.mean`/`data.std` and the weights", nan_activations, ("1 train images (first: [1])", "`data.mean`")),
    "no linear head": Case(
        "a model with no `nn.Linear` head", UnsupportedModelError, "the model class",
        "name the head with `model.head`, or use pooling + `nn.Linear`", no_linear_head,
        ("model (Sequential) has no nn.Linear", "`model.head`")),
    "head is not a Linear": Case(
        "`model.head` naming a module that is not `nn.Linear`", UnsupportedModelError, "the module and its type",
        "the model's Linear layers to choose from", head_not_linear, ("'conv' is Conv2d", "Linear layers: fc (2->2)")),
    "class names vs head outputs": Case(
        "class names that do not match the head's outputs (a non-head Linear picked)", InvalidInputError,
        "both counts, the layer picked as head and why", "set `model.head` (the Linear layers are listed)",
        class_names_vs_head, ("5 class names", "head 'proj'", "32 outputs", "`model.head`", "Linear layers: proj (12->32)")),
    "layer picked is not the classifier": Case(
        "a head whose outputs are not the model's logits", UnsupportedModelError,
        "the logits' shape, the layer picked and why", "set `model.head`", wrong_layer_as_head,
        ("logits of shape (2, 5)", "'proj'", "set `model.head`")),
    "weights that do not fit": Case(
        "weights that do not fit the model", InvalidInputError, "the file and the mismatched keys and shapes",
        "check the model name and `model.num_classes`", weights_do_not_fit,
        ("w.pt", "shape mismatch", "fc.weight", "`model.num_classes`")),
    "unknown model name": Case(
        "an unknown model name", InvalidInputError, "the name and close matches", "pick a listed name",
        unknown_model_name, ("'resnet181'", "Did you mean", "list_models()")),
    "missing model weights": Case(
        "a model weights file that does not exist", MissingWeightsError, "the path", "point `model.weights` at a local file",
        missing_model_weights, ("resnet18-finetuned.pth", "`model.weights`")),
    "missing SAM weights": Case(
        "SAM masks without a SAM checkpoint", MissingWeightsError, "the model type and the expected file",
        "download it and set `masks.sam_checkpoint` (or use the tiny SAM)", missing_sam_weights,
        ("sam_vit_b_01ec64.pth", "`masks.sam_checkpoint`")),
    "missing CLIP weights": Case(
        "a CLIP checkpoint that does not exist", MissingWeightsError, "the path and the model",
        "set `concepts.pretrained` to the local file", missing_clip_weights, ("clip-b32.pt", "`concepts.pretrained`")),
    "unknown dataset key": Case(
        "an unknown key in a dataset spec", InvalidInputError, "the key and the allowed keys", "the closest key",
        unknown_dataset_key, ("unknown key 'mask'", "Did you mean 'masks'")),
    "skipped image requested": Case(
        "loading an image that was skipped as unreadable", InvalidInputError, "the index and the reading error",
        "leave rows with label < 0 out", skipped_image_requested, ("image 2: OSError: truncated", "label < 0")),
    "too few images in a class": Case(
        "a class with too few images", SKIPPED, "the class and its image count (in `meta.skipped_classes`)",
        "add images or lower `gaps.min_k`", too_few_images_in_a_class, ("rare: 3 training images", "gaps.min_k")),
}


# ----------------------------------------------------------------- tests


@pytest.mark.parametrize("key", list(CASES))
def test_bad_input(key, tmp_path):
    case = CASES[key]
    if case.outcome == SKIPPED:
        message = case.trigger(tmp_path)
        assert isinstance(message, str)
    else:
        with pytest.raises(Exception) as info:
            case.trigger(tmp_path)
        assert type(info.value) is case.outcome, f"{key}: raised {type(info.value).__name__}: {info.value}"
        message = str(info.value)
    missing = [text for text in case.expect if text not in message]
    assert not missing, f"{key}: message lacks {missing}: {message}"


def render() -> str:
    """docs/ERRORS.md, rendered from CASES."""
    rows = [
        "| Input | Result | The message names | Fix it gives |",
        "| --- | --- | --- | --- |",
        *(f"| {c.given} | {c.outcome_name} | {c.names} | {c.fix} |" for c in CASES.values()),
    ]
    return (
        "# What auditor does with bad inputs\n\n"
        "<!-- Generated from tests/test_errors.py by `python -m tests.test_errors`; do not edit by hand. -->\n\n"
        "Each row is a test in `tests/test_errors.py` that triggers the input through a public function and checks the\n"
        "outcome and that the message names the value and the fix. Skipped inputs never abort the audit: unreadable\n"
        "images are logged with their index and path, listed in `results.json` under `skipped_images` (label -1 in\n"
        "the feature cache), and the audit stops only when more than `data.max_skipped_fraction` of a split is\n"
        "unreadable. Every error is a subclass of `auditor.AuditorError` and of a builtin (`ValueError`, `TypeError`,\n"
        "`ImportError`, `FileNotFoundError`, `FloatingPointError`).\n\n"
        + "\n".join(rows)
        + "\n"
    )


def test_errors_doc_is_up_to_date():
    assert DOC.read_text() == render(), "docs/ERRORS.md is stale: run `python -m tests.test_errors`"


if __name__ == "__main__":
    DOC.write_text(render())
    print(f"wrote {DOC}", file=sys.stderr)
