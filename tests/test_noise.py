import math

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from auditor.config import AuditConfig
from auditor.data import ImageSource
from auditor.errors import InvalidInputError
from auditor.features import FeatureCache
from auditor.gaps import class_gaps
from auditor.model import ModelAdapter
from auditor.noise import (
    crop_to_box,
    flag_images,
    heatmap_box,
    mask_box,
    negative_gap_classes,
    run_noise,
    square_box,
    thumbnail_uri,
)
from auditor.results import FeatureVerdict, GapEstimate
from tests.conftest import TwoChannelNet, assert_untouched, state_snapshot


def gap(c, value, significant):
    return GapEstimate(c, value, value - 0.1, value + 0.1, significant, 10, 0.5, 0.5, 40)


def test_negative_gap_classes_needs_significance():
    gaps = {0: gap(0, -0.4, True), 1: gap(1, -0.4, False), 2: gap(2, 0.5, True), 3: gap(3, math.nan, False)}
    assert negative_gap_classes(gaps) == [0]


def test_flag_images_ignores_other_classes_and_nan():
    scores = np.array([5.0, np.nan, 3.0, 9.0, 1.0])
    labels = np.array([0, 0, 0, 1, 0])
    assert flag_images(scores, labels, 0, 10).tolist() == [0, 2, 4]


def test_boxes_are_square_expanded_and_inside_the_image():
    assert square_box(10, 10, 20, 30, 64, 64, expand=0.2) == (3, 8, 27, 32)  # side 1.2 x 20, centred
    assert square_box(0, 0, 10, 10, 64, 64, expand=0.2) == (0, 0, 12, 12)  # shifted in at the corner
    assert square_box(0, 0, 30, 60, 32, 64, expand=0.2) == (0, 14, 32, 46)  # capped at the smaller side, centred
    mask = np.zeros((32, 32), bool)
    mask[4:8, 20:30] = True
    top, left, bottom, right = mask_box(mask, expand=0.0)
    assert bottom - top == right - left == 10 and (left, right) == (20, 30)
    assert mask_box(np.zeros((8, 8), bool)) is None


def test_heatmap_box_thresholds_high_and_rescales():
    heat = np.zeros((4, 4), np.float32)
    heat[0, 0] = 1.0
    top, left, bottom, right = heatmap_box(heat, (16, 16), threshold=0.6, expand=0.0)
    assert top == 0 and left == 0 and bottom <= 8 and right <= 8
    assert heatmap_box(np.zeros((4, 4)), (16, 16)) is None


def test_crop_to_box_resizes_back():
    image = torch.zeros(1, 3, 16, 16)
    image[0, 0, 4:8, 4:8] = 1.0
    crop = crop_to_box(image, [(4, 4, 8, 8)])
    assert crop.shape == (1, 3, 16, 16)
    assert torch.allclose(crop[0, 0], torch.ones(16, 16))
    assert thumbnail_uri(crop[0]).startswith("data:image/png;base64,")
    image[0, 1, 12:16, 12:16] = 1.0  # something outside the box
    in_place = crop_to_box(image, [(4, 4, 8, 8)], mode="in_place")
    assert torch.equal(in_place[0, :, 4:8, 4:8], image[0, :, 4:8, 4:8])
    outside_mean = image[0, 1].sum() / (256 - 16)
    assert torch.allclose(in_place[0, 1, 12:16, 12:16], torch.full((4, 4), float(outside_mean)))
    with pytest.raises(InvalidInputError, match="crop mode"):
        crop_to_box(image, [(4, 4, 8, 8)], mode="zoom")


class CollisionDataset(Dataset):
    """24x24 images for TwoChannelNet with head eye(2): channel 0 = class-0 object, channel 1 = class-1 object.

    Class 0: 20 clean images (a 5x5 object), 10 with a larger colliding class-1 object
    (misclassified), and 5 mislabelled images showing only a class-1 object. Class 1: 30 images.
    The mask is the drawn main object (for mislabelled images, the class-1 object).
    """

    def __init__(self, with_masks=True):
        rng = np.random.default_rng(0)
        self.items = []
        self.kind = []
        for kind, label, n in (("clean", 0, 20), ("collision", 0, 10), ("mislabelled", 0, 5), ("other", 1, 30)):
            for _ in range(n):
                image = torch.full((3, 24, 24), 0.2)
                image[:2] = 0.2
                mask = torch.zeros(24, 24, dtype=torch.bool)
                y, x = rng.integers(1, 8, size=2)
                channel = 0 if kind in ("clean", "collision") else 1
                side = 5 if channel == 0 else 7
                image[channel, y : y + side, x : x + side] = 1.0
                mask[y : y + side, x : x + side] = True
                if kind == "collision":
                    image[1, 15:23, 15:23] = 1.0
                self.items.append((image, label, mask))
                self.kind.append(kind)
        self.with_masks = with_masks

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        image, label, mask = self.items[i]
        return (image, label, mask) if self.with_masks else (image, label)


def noise_inputs(with_masks):
    dataset = CollisionDataset(with_masks)
    model = TwoChannelNet(head_weight=torch.eye(2)).train()
    adapter = ModelAdapter(model)
    source = ImageSource(dataset, batch_size=16)
    images, labels, _ = source.load(range(len(dataset)))
    out = adapter.forward(images)
    cache = FeatureCache.from_arrays(out.features.numpy(), out.logits.numpy(), labels.numpy())
    config = AuditConfig().replace(**{"noise.enabled": True, "noise.n_flagged": 15, "gaps.min_k": 5})
    evidence = dict(importance=1.0, heat_inside=0.9, object_area=0.1, density_ratio=5.0, object_drop=0.9,
                    background_drop=0.0, heat_says_spurious=False, ablation_says_spurious=False, confirmed=True)
    verdicts = [FeatureVerdict(0, 0, "core", **evidence), FeatureVerdict(0, 1, "spurious", **{**evidence, "importance": 0.5})]
    scores = np.where(cache.labels == 0, cache.activations[:, 1], np.nan)  # class 0 ranked by the class-1 feature
    gaps = class_gaps(scores, cache.labels, cache.correct, config.gaps, np.random.default_rng(0))
    inputs = dict(adapter=adapter, sources={"train": source}, caches={"train": cache}, scores={"train": scores},
                  evaluation_split="train", evaluation_gaps=gaps, verdicts=verdicts, class_names=["a", "b"],
                  mask_provider=None, config=config.noise, gap_config=config.gaps, heatmap="cam",
                  rng=np.random.default_rng(0))
    return inputs, dataset, model


@pytest.mark.parametrize("with_masks", [True, False])
def test_run_noise_flags_the_class_and_cropping_fixes_multi_object_images(with_masks):
    inputs, dataset, model = noise_inputs(with_masks)
    snapshot = state_snapshot(model)
    assert inputs["evaluation_gaps"][0].gap < 0 and inputs["evaluation_gaps"][0].significant
    section = run_noise(**inputs).section
    assert section["classes_examined"] == [(0, "train")]
    (result,) = section["results"]
    kinds = {r["index"]: dataset.kind[r["index"]] for r in result["images"]}
    assert set(kinds.values()) == {"collision", "mislabelled"}  # the 15 most spurious images
    for record in result["images"]:
        if kinds[record["index"]] == "collision":
            assert record["prediction"] == 1 and record["fixed"], record
            assert record["diagnosis"].startswith("multi-object")
        elif with_masks:  # the mask covers the class-1 object: the crop still disagrees
            assert not record["fixed"] and record["diagnosis"].startswith("possible label noise")
        assert record["box_source"] == ("mask" if with_masks else "heatmap") or record["box"] is None
        assert record["image"].startswith("data:image/png")
    assert result["n_misclassified"] == 15 and result["n_fixed_by_crop"] == 10
    assert result["fixed_share"] == pytest.approx(10 / 15)
    assert_untouched(model, snapshot, training=True)


def test_world_presets_and_label_flips():
    from auditor.demo.world.generator import generate_split
    from auditor.demo.world.presets import flip_labels, list_presets, world_preset

    assert {"default", "collision", "label_noise", "noisy_square"} <= set(list_presets())
    assert world_preset("noisy_square", image_size=32).class_names[-1] == "diamond"
    with pytest.raises(ValueError, match="unknown world preset"):
        world_preset("nope")
    with pytest.raises(ValueError, match="unknown WorldSpec field"):
        world_preset("default", size=3)
    split = generate_split(world_preset("noisy_square", image_size=16, n_train=5, n_val=1, n_test=1), "train")
    flipped = flip_labels(split, 1, 5, 3, seed=0)
    changed = np.flatnonzero(flipped.labels != split.labels)
    assert len(changed) == 3 and (split.true_labels[changed] == 1).all() and (flipped.labels[changed] == 5).all()
    assert (flipped.true_labels == split.true_labels).all()
