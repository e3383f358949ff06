"""The "sam" and "box" mask providers on the project's tiny SAM and tiny CLIP."""

import numpy as np
import pytest
import torch

from auditor.config import MaskConfig
from auditor.errors import InvalidInputError, MissingWeightsError
from auditor.masks.base import MASK_PROVIDERS
from auditor.masks.sam import SamMaskProvider, load_sam


def _images(split, indices):
    return torch.from_numpy(split.images[indices]).permute(0, 3, 1, 2).float() / 255


def _miou(masks, truth):
    inter = (masks & truth).sum((1, 2))
    union = (masks | truth).sum((1, 2))
    return float(np.mean(inter / np.maximum(union, 1)))


@pytest.fixture(scope="module")
def provider_kwargs(world32, tiny_sam, clip_encoder):
    spec, _ = world32
    return dict(source=None, config=MaskConfig(points_per_side=8), class_names=spec.class_names,
                concept_encoder=clip_encoder, device=torch.device("cpu"), sam=tiny_sam)


def test_sam_masks_find_the_object(world32, provider_kwargs, tmp_path):
    _, split = world32
    provider = MASK_PROVIDERS.create("sam", cache_dir=tmp_path, **provider_kwargs)
    indices = np.arange(0, len(split), 15)
    masks = provider.masks(_images(split, indices), split.labels[indices], indices)
    assert masks.dtype == bool and masks.shape == (len(indices), 32, 32)
    assert _miou(masks, split.masks[indices]) > 0.6
    assert provider.n_empty == 0


def test_masks_are_cached_per_index_and_image(world32, provider_kwargs, tmp_path, monkeypatch):
    _, split = world32
    provider = SamMaskProvider(cache_dir=tmp_path, **provider_kwargs)
    indices = np.array([0, 70, 140])
    first = provider.masks(_images(split, indices), split.labels[indices], indices)
    assert len(list(tmp_path.rglob("*.npy"))) == 3

    def fail(_):
        raise AssertionError("SAM ran again for a cached image")

    monkeypatch.setattr(provider.generator, "generate", fail)
    np.testing.assert_array_equal(provider.masks(_images(split, indices), split.labels[indices], indices), first)
    # the same index with another image is not served from the cache
    with pytest.raises(AssertionError, match="SAM ran again"):
        provider.masks(_images(split, [1]), split.labels[[0]], np.array([0]))


def test_clip_chooses_the_candidate_that_looks_like_the_class():
    """Selection logic with a stand-in encoder: class 0 looks small, class 1 looks large."""

    class AreaEncoder:
        def encode_text(self, prompts):
            return np.array([[1.0, 0.0] if "small" in p else [0.0, 1.0] for p in prompts], np.float32)

        def encode_images(self, images):
            coloured = (images - 0.5).abs().sum(1).gt(0.01).float().mean((1, 2)).numpy()
            return np.stack([coloured < 0.2, coloured >= 0.2], 1).astype(np.float32)

    provider = SamMaskProvider.__new__(SamMaskProvider)
    provider.concept_encoder, provider.class_names, provider.templates = AreaEncoder(), ["small", "large"], ["{}"]
    provider.region, provider._class_text = "mask", None
    image = np.full((16, 16, 3), 200, np.uint8)
    small, large = np.zeros((16, 16), bool), np.zeros((16, 16), bool)
    small[:2, :2], large[4:, 4:] = True, True
    records = [{"segmentation": small, "predicted_iou": 0.9, "stability_score": 0.9},
               {"segmentation": large, "predicted_iou": 0.9, "stability_score": 0.9}]
    np.testing.assert_array_equal(provider.choose(image, 0, records)[0], small)
    np.testing.assert_array_equal(provider.choose(image, 1, records)[0], large)
    provider.concept_encoder = None  # without CLIP, SAM's own score decides
    records[1]["predicted_iou"] = 0.95
    np.testing.assert_array_equal(provider.choose(image, 0, records)[0], large)


def test_missing_and_wrong_checkpoints(tmp_path, tiny_sam_path):
    with pytest.raises(MissingWeightsError, match="sam_vit_b_01ec64.pth"):
        load_sam("vit_b", None)
    with pytest.raises(MissingWeightsError, match="does not exist.*sam_vit_h_4b8939.pth"):
        load_sam("vit_h", str(tmp_path / "sam.pth"))
    with pytest.raises(InvalidInputError, match="not a SAM vit_b checkpoint"):
        load_sam("vit_b", str(tiny_sam_path))
    wrong = tmp_path / "clip.pt"
    torch.save({"visual.proj": torch.zeros(2, 2)}, wrong)
    with pytest.raises(InvalidInputError, match="not a tiny SAM checkpoint"):
        load_sam("tiny", str(wrong))
    with pytest.raises(MissingWeightsError):
        MASK_PROVIDERS.create("sam", source=None, config=MaskConfig(sam_model_type="vit_l"), class_names=["a"],
                              cache_dir=tmp_path, concept_encoder=None, device=torch.device("cpu"))


def test_tiny_type_loads_a_given_checkpoint(tiny_sam_path, world32):
    spec, split = world32
    provider = MASK_PROVIDERS.create("sam", source=None, config=MaskConfig(sam_model_type="tiny", sam_checkpoint=str(tiny_sam_path), points_per_side=8),
                                     class_names=spec.class_names, cache_dir=None, concept_encoder=None, device=torch.device("cpu"))
    masks = provider.masks(_images(split, [0, 1]), split.labels[[0, 1]], np.array([0, 1]))
    assert masks.shape == (2, 32, 32) and masks.any((1, 2)).all()


def test_input_validation(provider_kwargs, world32):
    _, split = world32
    provider = SamMaskProvider(cache_dir=None, **provider_kwargs)
    with pytest.raises(InvalidInputError, match="must match"):
        provider.masks(_images(split, [0, 1]), [0], [0, 1])
    with pytest.raises(InvalidInputError, match="labels must be in"):
        provider.masks(_images(split, [0]), [9], [0])
    with pytest.raises(InvalidInputError, match="class_names"):
        SamMaskProvider(**{**provider_kwargs, "class_names": []})


def test_box_provider(world32, tiny_sam, tmp_path):
    _, split = world32
    indices = np.arange(0, len(split), 30)
    boxes = {}
    for i in indices:
        ys, xs = np.nonzero(split.masks[i])
        boxes[int(i)] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    provider = MASK_PROVIDERS.build("box", source=None, config=MaskConfig(), class_names=None, cache_dir=tmp_path,
                                    concept_encoder=None, device=torch.device("cpu"), sam=tiny_sam, boxes=boxes)
    with pytest.raises(TypeError, match="boxs"):  # no catch-all **kwargs: a misspelt option fails with its name
        MASK_PROVIDERS.create("box", source=None, config=MaskConfig(), sam=tiny_sam, boxs=boxes)
    masks = provider.masks(_images(split, indices), split.labels[indices], indices)
    assert _miou(masks, split.masks[indices]) > 0.6
    no_boxes = MASK_PROVIDERS.create("box", source=None, config=MaskConfig(), cache_dir=None, sam=tiny_sam)
    with pytest.raises(InvalidInputError, match="needs a box per image"):
        no_boxes.masks(_images(split, [0]), [0], [0])
