import numpy as np
import pytest
import torch

from auditor.config import VerdictConfig
from auditor.data import ImageSource
from auditor.errors import InvalidInputError
from auditor.features import class_feature_importance, extract_features
from auditor.labeling import ablate, heat_inside_mask, label_features, neutral_fill, spurious_by_class
from auditor.masks import DatasetMaskProvider
from auditor.model import ModelAdapter
from tests.conftest import PlantedDataset, TwoChannelNet, assert_untouched, state_snapshot


def test_density_ratio_is_normalised_for_object_area():
    # A small object (1/16 of the image) whose map spills over: only 30% of the heat lies inside,
    # so "fraction inside < 50%" would call it spurious, but its density is ~6x the outside's.
    mask = np.zeros((1, 4, 4)); mask[0, 0, 0] = 1
    heat = np.full((1, 4, 4), 0.7 / 15); heat[0, 0, 0] = 0.3
    inside, area, ratio = heat_inside_mask(heat, mask)
    assert inside[0] == pytest.approx(0.3) and area[0] == pytest.approx(1 / 16)
    assert ratio[0] == pytest.approx(6.43, abs=0.01)
    uniform = heat_inside_mask(np.ones((1, 4, 4)), mask)[2]
    assert uniform[0] == pytest.approx(1.0)


def test_ablate_replaces_object_or_background():
    images = torch.ones(1, 3, 4, 4)
    masks = torch.zeros(1, 4, 4, dtype=torch.bool); masks[0, :2] = True
    from auditor.labeling import NeutralFill

    fill = NeutralFill(colour=torch.zeros(3, 1, 1), noise_std=torch.zeros(3, 1, 1))
    no_object, no_background = ablate(images, masks, fill)
    assert no_object[0, :, :2].abs().sum() == 0 and (no_object[0, :, 2:] == 1).all()
    assert no_background[0, :, 2:].abs().sum() == 0 and (no_background[0, :, :2] == 1).all()


def test_neutral_fill_is_colourless():
    source = ImageSource(PlantedDataset(n=8))
    fill = neutral_fill(source, np.random.default_rng(0))
    assert torch.allclose(fill.colour, fill.colour[0].expand_as(fill.colour))


def _verdicts(tmp_path, heatmap="cam", fill="neutral"):
    model = TwoChannelNet()
    source = ImageSource(PlantedDataset(n=30))
    adapter = ModelAdapter(model)
    cache = extract_features(adapter, source, tmp_path, progress=False)
    importance = class_feature_importance(cache.activations, cache.labels, adapter.head_weight().numpy())
    config = VerdictConfig(n_images=10, heatmap=heatmap, ablation_fill=fill)
    return label_features(adapter, source, cache, {0: [0, 1]}, importance, DatasetMaskProvider(source), config,
                          np.random.default_rng(0), progress=False)


@pytest.mark.parametrize("heatmap", ["cam", "gradient"])
def test_planted_core_and_spurious_features_are_told_apart(tmp_path, heatmap):
    core, spurious = _verdicts(tmp_path, heatmap)
    assert (core.feature, core.label) == (0, "core")
    assert (spurious.feature, spurious.label) == (1, "spurious")
    assert core.density_ratio > 2 and spurious.density_ratio < 0.5
    assert core.object_drop > 0.5 > core.background_drop
    assert spurious.background_drop > 0.5 > spurious.object_drop
    assert core.confirmed and spurious.confirmed
    assert len(core.image_indices) == 10
    assert spurious_by_class([core, spurious]) == {0: [1]}


def test_blur_fill_also_finds_the_planted_object_feature(tmp_path):
    core, _ = _verdicts(tmp_path, fill="blur")
    assert core.label == "core"


def test_labeling_leaves_model_untouched(tmp_path):
    model = TwoChannelNet().train()
    snapshot = state_snapshot(model)
    source = ImageSource(PlantedDataset(n=20))
    adapter = ModelAdapter(model)
    cache = extract_features(adapter, source, tmp_path, progress=False)
    label_features(adapter, source, cache, {0: [0]}, np.ones((2, 2)), DatasetMaskProvider(source),
                   VerdictConfig(n_images=4), np.random.default_rng(0), progress=False)
    assert_untouched(model, snapshot, training=True)


def test_masks_of_wrong_size_are_rejected(tmp_path):
    class BadMasks:
        def masks(self, images, labels, indices):
            return np.ones((len(indices), 3, 3), bool)

    source = ImageSource(PlantedDataset(n=12))
    adapter = ModelAdapter(TwoChannelNet())
    cache = extract_features(adapter, source, tmp_path, progress=False)
    with pytest.raises(InvalidInputError, match="must match the image size"):
        label_features(adapter, source, cache, {0: [0]}, np.ones((2, 2)), BadMasks(), VerdictConfig(n_images=4),
                       np.random.default_rng(0), progress=False)


def test_dataset_provider_requires_masks():
    with pytest.raises(InvalidInputError, match="yields no masks"):
        DatasetMaskProvider(ImageSource(PlantedDataset(n=4, with_masks=False)))
