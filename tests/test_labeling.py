import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from auditor.config import VerdictConfig
from auditor.counterfactuals import dilate_masks
from auditor.data import ImageSource
from auditor.errors import InvalidInputError
from auditor.features import class_feature_importance, extract_features
from auditor.labeling import (
    ablate,
    examined_images,
    heat_inside_mask,
    neutral_fill,
    run_verdicts,
    spurious_by_class,
)
from auditor.masks import DatasetMaskProvider
from auditor.model import ModelAdapter
from auditor.results import to_jsonable
from tests.conftest import (
    PlantedDataset,
    TwoChannelNet,
    TwoClassPlanted,
    assert_untouched,
    state_snapshot,
)


def label_features(*args, **kwargs):
    """The verdicts of :func:`run_verdicts` as a list."""
    return list(run_verdicts(*args, **kwargs).verdicts)


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
    # One class only: no other-class backgrounds to swap in, so the fill ablation decides (the legacy rule).
    core, spurious = _verdicts(tmp_path, heatmap)
    assert core.decided_by == spurious.decided_by == "ablation"
    assert "No background swap was possible" in core.explanation and np.isnan(core.background_reliance)
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


class ThreeChannelNet(TwoChannelNet):
    """TwoChannelNet plus feature 2 = mean relu(ch0 + 0.3 ch1 - ch2): it fires on the object and on the stripes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1, bias=False)
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0], self.conv.weight[0, 2] = 1.0, -1.0
            self.conv.weight[1, 1], self.conv.weight[1, 2] = 1.0, -1.0
            self.conv.weight[2, 0], self.conv.weight[2, 1], self.conv.weight[2, 2] = 1.0, 0.3, -1.0
            self.fc.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]))
            self.fc.bias.zero_()


def _swap_verdicts(tmp_path, model, features, **config):
    source = ImageSource(TwoClassPlanted())
    adapter = ModelAdapter(model)
    cache = extract_features(adapter, source, tmp_path, progress=False)
    importance = class_feature_importance(cache.activations, cache.labels, adapter.head_weight().numpy())
    config = VerdictConfig(**{"n_images": 8, "n_donors": 16, **config})
    return label_features(adapter, source, cache, {0: features}, importance, DatasetMaskProvider(source), config,
                          np.random.default_rng(0), progress=False)


def test_background_swaps_tell_the_planted_features_apart(tmp_path):
    core, spurious = _swap_verdicts(tmp_path, TwoChannelNet(), [0, 1])
    assert core.decided_by == spurious.decided_by == "background" and core.counterfactual == "swap"
    # The object feature ignores the backgrounds; the stripe feature fires on class 0's backgrounds only.
    assert core.label == "core" and abs(core.background_reliance) < 0.05 and core.object_reliance > 0.9
    assert spurious.label == "spurious" and spurious.reliance_ci_low > 0.5 and not spurious.mixed
    assert spurious.swap_reliance > 0.5 and spurious.swap_ci_low > 0
    assert spurious.class_median_swap_reliance > 0.5 and abs(core.class_median_swap_reliance) < 0.05
    assert spurious.random_background_drop > 0.5 > spurious.same_background_drop
    assert spurious.n_backgrounds[0] == 16 and 0 < spurious.n_backgrounds[1] < 16
    assert spurious.n_swaps == min(8, spurious.n_backgrounds[1])
    assert "responds more to its class's own backgrounds" in spurious.explanation
    assert "about as much" in core.explanation
    # a random sample of the class's objects: the stripes of its backgrounds separate it, the object does not
    assert spurious.population_swap_auroc > 0.9 and abs(core.population_swap_auroc - 0.5) < 0.1
    assert spurious.population_clean_swap_auroc == spurious.population_swap_auroc  # class 1, never flagged, is clean
    assert spurious.label == "spurious" and core.label == "core"  # the checks agree with the examined images


def test_the_cue_direction_points_along_the_feature_that_the_class_backgrounds_move(tmp_path):
    source = ImageSource(TwoClassPlanted())
    adapter = ModelAdapter(TwoChannelNet())
    cache = extract_features(adapter, source, tmp_path, progress=False)
    importance = class_feature_importance(cache.activations, cache.labels, adapter.head_weight().numpy())
    stage = run_verdicts(adapter, source, cache, {0: [0, 1]}, importance, DatasetMaskProvider(source),
                         VerdictConfig(n_images=8, n_donors=16), np.random.default_rng(0), progress=False)
    direction = stage.swap_means[0].direction()  # against every other class
    assert direction.shape == (2,) and direction.dtype == np.float64
    assert sum(stage.swap_means[0].counts.values()) > 0 and list(stage.swap_means[0].by_donor_class) == [1]
    # the stripes of class 0's backgrounds raise feature 1; the object (feature 0) is the same in every swap
    assert direction[1] > 0.05 and abs(direction[0]) < 0.05 * direction[1]
    neutral = run_verdicts(adapter, source, cache, {0: [0, 1]}, importance, DatasetMaskProvider(source),
                           VerdictConfig(n_images=8, n_donors=16, counterfactual="neutral"), np.random.default_rng(0),
                           progress=False)
    assert neutral.swap_means == {}



def test_the_cue_direction_is_measured_against_the_clean_classes_backgrounds_when_there_are_any():
    from auditor.labeling import SwapMeans, ranking_directions
    from auditor.results import FeatureVerdict

    # Class 0's own backgrounds raise feature 0 (its cue); class 1's backgrounds carry a cue of their own on feature 1.
    means = SwapMeans(own=np.array([1.0, 0.0]), by_donor_class={1: np.array([0.0, 3.0]), 2: np.array([0.0, 0.0])},
                      counts={1: 30, 2: 10})
    assert np.allclose(means.direction(), [1.0, -2.25])  # the absence of class 1's cue dominates
    assert np.allclose(means.direction([2]), [1.0, 0.0])
    assert np.allclose(means.direction([5]), means.direction())  # no reference class was a donor

    def verdict(c, label, decided_by):
        return FeatureVerdict(c, 0, label, 1.0, 0.5, 0.2, 1.0, 0.0, 0.0, False, False, False, decided_by=decided_by)

    found = [verdict(0, "spurious", "swap"), verdict(1, "spurious", "background"), verdict(2, "core", "swap")]
    assert np.allclose(ranking_directions(found, {0: means}).directions[0], [1.0, 0.0])
    assert np.allclose(ranking_directions(found, {0: means}, "other_classes").directions[0], [1.0, -2.25])
    every_donor_flagged = found[:2] + [verdict(2, "spurious", "heat")]
    assert np.allclose(ranking_directions(every_donor_flagged, {0: means}).directions[0], [1.0, -2.25])
    assert ranking_directions([verdict(0, "spurious", "heat")], {0: means}).directions == {}  # not found by comparing
    assert ranking_directions(found, {0: means}).standard_errors == {}  # no donor moments kept
    with pytest.raises(ValueError, match="direction reference"):
        ranking_directions(found, {0: means}, "others")


def test_the_standard_error_of_a_cue_direction_counts_donor_backgrounds_not_swaps():
    from auditor.labeling import DonorMoments, SwapMeans

    rng = np.random.default_rng(0)
    # 4 own and 6 other donors, 5 swaps each; every swap onto one donor gives that donor's value plus small noise.
    own_values, other_values = rng.normal(1.0, 1.0, 4), rng.normal(0.0, 1.0, 6)
    own_donors, other_donors = np.repeat(np.arange(4), 5), np.repeat(np.arange(10, 16), 5)
    on_own = (own_values[own_donors] + rng.normal(0, 0.01, 20))[:, None]
    on_other = (other_values[other_donors - 10] + rng.normal(0, 0.01, 30))[:, None]
    own, other = DonorMoments.of(on_own, own_donors), DonorMoments.of(on_other, other_donors)
    assert own.n == 4 and other.n == 6
    means = SwapMeans(own=on_own.mean(0), by_donor_class={1: on_other.mean(0)}, counts={1: 30}, own_donors=own,
                      donors_by_class={1: other})
    expected = np.sqrt(own_values.var(ddof=1) / 4 + other_values.var(ddof=1) / 6)
    assert np.allclose(means.standard_error(), expected, rtol=0.05)
    per_swap = np.sqrt(on_own.var(ddof=1) / 20 + on_other.var(ddof=1) / 30)  # as if every swap were independent
    assert means.standard_error()[0] > 1.5 * per_swap
    single = SwapMeans(own=on_own.mean(0), by_donor_class={1: on_other[:5].mean(0)}, counts={1: 5}, own_donors=own,
                       donors_by_class={1: DonorMoments.of(on_other[:5], other_donors[:5])})
    assert single.standard_error() is None  # one donor cannot tell its noise

PIXEL_MEAN = torch.tensor([0.4, 0.3, 0.2]).view(3, 1, 1)
PIXEL_STD = torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1)


class CastPlanted(Dataset):
    """Class 0: a square object on a noisy backdrop, with a cast (+0.4 in channel 1) over the whole scene, object
    included; class 1: the same without the cast. ``multiplicative``: the object is bright in channel 1 too and the
    cast scales channel 1 by 1.6 (as light and white balance do); ``normalised``: items are normalised inputs."""

    def __init__(self, n: int = 24, size: int = 16, multiplicative: bool = False, normalised: bool = False):
        rng = np.random.default_rng(0)
        self.items = []
        for label in (0, 1):
            for _ in range(n):
                image = torch.from_numpy(rng.uniform(0.1, 0.3, size=(3, size, size)).astype(np.float32))
                mask = torch.zeros(size, size, dtype=torch.bool)
                y, x = rng.integers(2, size - 8, size=2)
                mask[y : y + 6, x : x + 6] = True
                image[0][mask] += 0.6
                if multiplicative:
                    image[1][mask] = 0.6
                if label == 0:
                    image[1] = image[1] * 1.6 if multiplicative else image[1] + 0.4
                if normalised:
                    image = (image - PIXEL_MEAN) / PIXEL_STD
                self.items.append((image, label, mask.numpy()))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class CastNet(nn.Module):
    """Feature 0 = the object (mean relu(ch0 - 0.5)); feature 1 = the scene's mean of channel 1 (the cast)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 1.0], [-1.0, -1.0]]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(torch.stack([torch.relu(x[:, 0] - 0.5).mean((1, 2)), x[:, 1].mean((1, 2))], 1))


def _cast_labeler(tmp_path):
    """``label(features, **settings)``: class 0's verdicts on :class:`CastPlanted` with :class:`CastNet`, one feature
    cache shared by every call."""
    source = ImageSource(CastPlanted())
    adapter = ModelAdapter(CastNet())
    cache = extract_features(adapter, source, tmp_path, progress=False)
    importance = class_feature_importance(cache.activations, cache.labels, adapter.head_weight().numpy())

    def label(features, **settings):
        config = VerdictConfig(n_images=8, n_donors=16, heatmap="gradient", **settings)
        return label_features(adapter, source, cache, {0: features}, importance, DatasetMaskProvider(source), config,
                              np.random.default_rng(0), progress=False)

    return label


def test_relit_swaps_see_the_part_of_a_cast_that_lies_on_the_object(tmp_path):
    label = _cast_labeler(tmp_path)
    (core, cast), (relit_core, relit_cast) = label([0, 1], swap_relight=False), label([0, 1], swap_relight=True)
    # Pasted as it is, the object carries its share of the cast (6x6 of 16x16 pixels) onto the other class's
    # backgrounds; re-lit, it leaves it behind, so the swap sees the whole cast.
    scale = 0.2 + 0.4
    assert cast.swap_reliance == pytest.approx(0.4 * (1 - 36 / 256) / scale, abs=0.05)
    assert relit_cast.swap_reliance == pytest.approx(0.4 / scale, abs=0.05)
    # the object feature does not follow the light: re-lighting leaves it core, with no swap effect
    assert core.label == relit_core.label == "core" and abs(relit_core.swap_reliance) < 0.05
    assert relit_cast.label == "spurious"


def test_neutral_relight_takes_the_cast_off_the_object_in_the_neutral_fill_ablation(tmp_path):
    label = _cast_labeler(tmp_path)
    (plain,), (relit,) = label([1], neutral_relight=False), label([1], neutral_relight=True)
    # Class 0's scene is 0.6 in channel 1, object included. The fill (grey g) replaces the 220 background pixels;
    # kept as it is the object holds 0.6 on its 36 pixels, re-lit it moves to the fill's g as well.
    grey = (256 * 0.6 * (1 - plain.background_drop) - 36 * 0.6) / 220
    assert 0.2 < grey < 0.45
    assert relit.background_drop == pytest.approx(1 - grey / 0.6, abs=0.03)
    assert relit.background_drop > plain.background_drop + 0.05
    # without swap re-lighting there is nothing to re-light the object with: the same drop
    (unlit,) = label([1], neutral_relight=True, swap_relight=False)
    assert unlit.background_drop == pytest.approx(plain.background_drop, abs=1e-9)


def test_neutral_relight_to_the_other_classes_light_keeps_the_object_colour_the_backgrounds_share(tmp_path):
    label = _cast_labeler(tmp_path)
    plain_core, plain_cast = label([0, 1], neutral_relight=False)
    grey_core, grey_cast = label([0, 1], neutral_relight=True)
    other_core, other_cast = label([0, 1], neutral_relight=True, neutral_relight_reference="other_classes")
    # Channel 0 is 0.2 behind every class's objects: the other classes' light leaves the object (feature 0) as it is,
    # the grey fill's light (about 0.3) brightens it and the core feature rises (a negative drop).
    assert other_core.background_drop == pytest.approx(plain_core.background_drop, abs=0.02)
    assert grey_core.background_drop < plain_core.background_drop - 0.1
    # Channel 1, the cast: the other classes' light is 0.2, so the object's 36 pixels leave the cast at 0.2.
    grey = (256 * 0.6 * (1 - plain_cast.background_drop) - 36 * 0.6) / 220
    assert other_cast.background_drop == pytest.approx(1 - (220 * grey + 36 * 0.2) / (256 * 0.6), abs=0.03)
    assert other_cast.background_drop > plain_cast.background_drop + 0.05
    assert grey_cast.background_drop > plain_cast.background_drop + 0.05


class PixelCastNet(CastNet):
    """:class:`CastNet` on pixels, undoing the inputs' normalisation first when they are normalised."""

    def __init__(self, normalised: bool):
        super().__init__()
        self.normalised = normalised

    def forward(self, x):
        return super().forward(x * PIXEL_STD + PIXEL_MEAN if self.normalised else x)


def test_ratio_relighting_sees_all_of_a_multiplicative_cast_in_pixel_space(tmp_path):
    def verdicts(mode: str, normalised: bool):
        stats = dict(mean=PIXEL_MEAN.flatten().tolist(), std=PIXEL_STD.flatten().tolist()) if normalised else {}
        source = ImageSource(CastPlanted(multiplicative=True, normalised=normalised), **stats)
        adapter = ModelAdapter(PixelCastNet(normalised))
        cache = extract_features(adapter, source, tmp_path / f"{mode}{normalised}", progress=False)
        importance = class_feature_importance(cache.activations, cache.labels, adapter.head_weight().numpy())
        config = VerdictConfig(n_images=8, n_donors=16, heatmap="gradient", relight_mode=mode)
        return label_features(adapter, source, cache, {0: [0, 1]}, importance, DatasetMaskProvider(source), config,
                              np.random.default_rng(0), progress=False)

    (_, shifted), (ratio_core, ratio_cast) = verdicts("shift", False), verdicts("ratio", False)
    # class 0's scene: 220 background pixels at 0.2 * 1.6 and 36 object pixels at 0.6 * 1.6 in channel 1 (0.41);
    # on class 1's backgrounds (0.2) an object scaled back to 0.6 leaves 0.26, one shifted by 0.12 only 0.29
    assert ratio_cast.swap_reliance == pytest.approx((0.41 - 0.26) / 0.41, abs=0.05)
    assert ratio_cast.swap_reliance > shifted.swap_reliance + 0.05
    assert ratio_core.label == "core" and abs(ratio_core.swap_reliance) < 0.05
    # with normalised inputs the ratio is taken in pixel space: the same evidence
    _, normalised_cast = verdicts("ratio", True)
    assert normalised_cast.swap_reliance == pytest.approx(ratio_cast.swap_reliance, abs=1e-3)


def test_examined_images_are_the_top_or_a_spread_of_the_ranking():
    activations = np.array([5.0, 1, 3, 9, 0, 2, 7, 4, 6, 8])
    members = np.arange(100, 110)
    # ranked by activation: 103 (9), 109, 106, 108, 100, 107, 102, 105, 101, 104 (0)
    assert examined_images(activations, members, 4, "top").tolist() == [103, 106, 108, 109]
    assert examined_images(activations, members, 4, "spread").tolist() == [102, 103, 104, 108]  # ranks 0, 3, 6, 9
    assert examined_images(activations, members, 40, "spread").tolist() == members.tolist()
    with pytest.raises(ValueError, match="spread"):
        examined_images(activations, members, 4, "random")


def test_a_spread_of_images_tells_the_planted_features_apart_too(tmp_path):
    core, spurious = _swap_verdicts(tmp_path, TwoChannelNet(), [0, 1], image_selection="spread")
    top_core, _ = _swap_verdicts(tmp_path / "top", TwoChannelNet(), [0, 1])
    assert core.label == "core" and spurious.label == "spurious"
    assert core.image_indices != top_core.image_indices and len(core.image_indices) == 8


def test_a_feature_that_needs_object_and_background_is_spurious_and_mixed(tmp_path):
    (mixed,) = _swap_verdicts(tmp_path, ThreeChannelNet(), [2])
    assert mixed.label == "spurious" and mixed.mixed
    assert mixed.background_reliance > 0.3 and mixed.object_reliance > 0.1
    assert "mixed" in mixed.explanation


def test_neutral_counterfactual_keeps_the_legacy_rule(tmp_path):
    core, spurious = _swap_verdicts(tmp_path, TwoChannelNet(), [0, 1], counterfactual="neutral")
    assert (core.label, spurious.label) == ("core", "spurious")
    assert core.counterfactual == "neutral" and core.decided_by == "ablation" and np.isnan(core.background_reliance)


def test_verdicts_keep_every_evidence_field_in_json(tmp_path):
    core, _ = _swap_verdicts(tmp_path, TwoChannelNet(), [0, 1])
    record = json.loads(json.dumps(to_jsonable(core)))
    for key in ("density_ratio", "object_drop", "background_drop", "heat_says_spurious", "ablation_says_spurious",
                "confirmed", "background_reliance", "reliance_ci_low", "reliance_ci_high", "mixed", "decided_by",
                "explanation", "object_reliance", "swap_reliance", "class_swap_reliance", "class_median_swap_reliance"):
        assert key in record
    assert isinstance(record["background_reliance"], float) and isinstance(record["explanation"], str)


class ProductNet(nn.Module):
    """Feature 0 = object evidence (mean relu(ch0 - ch2)); feature 1 = object evidence x stripe evidence:
    it needs the object and the striped background together (no spatial layer: gradient heatmaps)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 1.0], [-1.0, -1.0]]))
            self.fc.bias.zero_()

    def forward(self, x):
        obj = torch.relu(x[:, 0] - x[:, 2]).mean((1, 2))
        stripes = torch.relu(x[:, 1] - x[:, 2]).mean((1, 2))
        return self.fc(torch.stack([obj, 10 * obj * stripes], 1))


def test_a_feature_that_needs_object_and_background_together_is_found_by_the_swap(tmp_path):
    core, joint = _swap_verdicts(tmp_path, ProductNet(), [0, 1])
    assert core.label == "core"
    # Backgrounds alone (no object) never move the joint feature, so only the swap with the object kept sees it.
    assert abs(joint.background_reliance) < 0.05
    assert joint.label == "spurious" and joint.decided_by == "swap" and joint.mixed
    assert joint.swap_ci_low > 0.15 and "needs the object and the background together" in joint.explanation


def test_a_swap_needs_the_own_background_to_beat_a_neutral_one_too():
    from auditor.config import VerdictConfig
    from auditor.labeling import decide_verdict

    config = VerdictConfig()
    # own backgrounds beat every other class's (whose cues suppress the feature) but not a neutral fill
    evidence = dict(background=(0.03, -0.01, 0.07), swap=(0.19, 0.10, 0.28), object_reliance=0.97, object_high=1.0,
                    heat_spurious=False, density=3.0, object_drop=0.9)
    spurious, decided_by, *_ = decide_verdict(config, **evidence, background_drop=0.06)
    assert not spurious and decided_by == "background"
    spurious, decided_by, _, _, explanation = decide_verdict(config, **evidence, background_drop=0.4)
    assert spurious and decided_by == "swap" and "neutral background (drop +0.40" in explanation
    assert explanation.startswith("With the object kept and re-lit to each new background,")  # swap_relight is on by default
    _, _, _, _, plain = decide_verdict(dataclasses.replace(config, swap_relight=False), **evidence, background_drop=0.4)
    assert plain.startswith("With the object kept, the feature")
    # 0 turns the gate off
    spurious, decided_by, *_ = decide_verdict(dataclasses.replace(config, swap_min_background_drop=0.0), **evidence,
                                              background_drop=0.06)
    assert spurious and decided_by == "swap"


def test_a_swap_forgives_backgrounds_alone_only_within_their_interval():
    from auditor.config import VerdictConfig
    from auditor.labeling import decide_verdict

    config = VerdictConfig()
    assert config.swap_background_check == "interval"
    # a faint colour cast: a strong swap, and backgrounds alone a hair below 0 with an interval reaching above it
    evidence = {"swap": (0.35, 0.22, 0.48), "object_reliance": 0.6, "object_high": 0.7, "heat_spurious": False,
                "density": 2.0, "object_drop": 0.5, "background_drop": 0.3}
    spurious, decided_by, *_ = decide_verdict(config, background=(-0.02, -0.09, 0.05), **evidence)
    assert spurious and decided_by == "swap"
    point = dataclasses.replace(config, swap_background_check="point")
    spurious, decided_by, *_ = decide_verdict(point, background=(-0.02, -0.09, 0.05), **evidence)
    assert not spurious and decided_by == "background"
    # backgrounds alone lower it with confidence: no swap verdict under either check
    for check in (config, point):
        spurious, *_ = decide_verdict(check, background=(-0.15, -0.22, -0.08), **evidence)
        assert not spurious


def test_a_background_feature_shared_by_every_class_is_still_spurious(tmp_path):
    # Every class has the striped background, so class backgrounds do not differ; but removing the
    # object (filled with the image's own stripes) raises the stripe feature and its heat lies outside.
    dataset = PlantedDataset(n=32)
    dataset.labels = [0] * 16 + [1] * 16
    source = ImageSource(dataset)
    adapter = ModelAdapter(TwoChannelNet())
    cache = extract_features(adapter, source, tmp_path, progress=False)
    importance = class_feature_importance(cache.activations, cache.labels, adapter.head_weight().numpy())
    core, stripes = label_features(adapter, source, cache, {0: [0, 1]}, importance, DatasetMaskProvider(source),
                                   VerdictConfig(n_images=8, n_donors=16), np.random.default_rng(0), progress=False)
    assert core.label == "core"
    assert stripes.background_reliance < 0.1 and stripes.object_ci_high < 0  # not class-specific
    assert stripes.label == "spurious" and stripes.decided_by == "object"


def test_the_heat_fallback_paths_decide_only_when_switched_on():
    from auditor.config import VerdictConfig
    from auditor.labeling import decide_verdict

    config = VerdictConfig()
    assert config.heat_fallback and not config.estimated_mask_heat_fallback
    off = dataclasses.replace(config, heat_fallback=False)
    # removing the object raises the feature and its heat lies outside, but no class's backgrounds are special
    raised = dict(background=(0.02, -0.05, 0.09), swap=(0.01, -0.02, 0.04), object_reliance=-0.4, object_high=-0.2,
                  heat_spurious=True, density=0.6, object_drop=0.0, background_drop=0.2)
    assert decide_verdict(config, **raised)[:2] == (True, "object")
    assert decide_verdict(off, **raised)[:2] == (False, "background")
    # both reliances point outside without being conclusive
    pointing = {**raised, "background": (0.15, -0.2, 0.4), "swap": (0.05, -0.03, 0.13), "object_reliance": 0.1,
                "object_high": 0.3}
    assert decide_verdict(config, **pointing)[:2] == (True, "heatmap")
    assert decide_verdict(off, **pointing)[:2] == (False, "background")


def test_the_population_checks_overrule_the_examined_images_either_way():
    from auditor.config import VerdictConfig
    from auditor.labeling import decide_verdict, population_auroc

    config = VerdictConfig()
    assert (config.population_threshold, config.population_flag_threshold) == (0.7, 0.82)
    # backgrounds alone raise the feature on the class's own backgrounds: spurious by the examined images
    flagged = dict(background=(0.4, 0.3, 0.5), swap=(0.3, 0.2, 0.4), object_reliance=0.2, object_high=0.3,
                   heat_spurious=False, density=1.5, object_drop=0.2, background_drop=0.4)
    assert decide_verdict(config, **flagged)[:2] == (True, "background")  # not measured: no change
    assert decide_verdict(config, **flagged, population=0.75)[:2] == (True, "background")
    spurious, decided_by, test_spurious, mixed, explanation = decide_verdict(config, **flagged, population=0.6)
    assert (spurious, decided_by, test_spurious, mixed) == (False, "population", True, False)
    assert "0.60" in explanation and "below 0.7" in explanation
    # nothing conclusive on the top images, but a random sample of the class separates by its backgrounds
    unmoved = dict(background=(0.02, -0.05, 0.09), swap=(0.01, -0.02, 0.04), object_reliance=0.4, object_high=0.5,
                   heat_spurious=False, density=1.5, object_drop=0.4, background_drop=0.0)
    assert decide_verdict(config, **unmoved, population=0.8)[:2] == (False, "background")
    spurious, decided_by, _, mixed, explanation = decide_verdict(config, **unmoved, population=0.9)
    assert (spurious, decided_by, mixed) == (True, "population", True) and "at least 0.82" in explanation
    off = dataclasses.replace(config, population_threshold=0.0, population_flag_threshold=0.0)
    assert decide_verdict(off, **flagged, population=0.1)[0] and not decide_verdict(off, **unmoved, population=1.0)[0]
    # the clean classes' AUROC where measured, every other class's otherwise or on request
    assert population_auroc(config, 0.6, 0.9) == 0.9 and population_auroc(config, 0.6, float("nan")) == 0.6
    assert population_auroc(dataclasses.replace(config, population_reference="other_classes"), 0.6, 0.9) == 0.6


def test_population_checks_need_the_population_measured():
    from auditor.config import load_config
    from auditor.errors import ConfigError

    with pytest.raises(ConfigError, match="population_images"):
        load_config(**{"verdicts.population_images": 0})
    assert load_config(**{"verdicts.population_images": 0, "verdicts.population_threshold": 0,
                          "verdicts.population_flag_threshold": 0}).verdicts.population_images == 0
    with pytest.raises(ConfigError):
        load_config(**{"verdicts.population_reference": "others"})


def test_spuriosity_uses_the_background_dominated_features_of_a_class():
    from auditor.results import FeatureVerdict

    def verdict(c, f, label, background, obj):
        return FeatureVerdict(c, f, label, 1.0, 0.5, 0.2, 1.0, 0.0, 0.0, False, False, False,
                              background_reliance=background, object_reliance=obj)

    verdicts = [verdict(0, 1, "spurious", 0.2, 0.8), verdict(0, 2, "spurious", 0.5, 0.3), verdict(0, 3, "core", 0.0, 0.9),
                verdict(1, 4, "spurious", 0.2, 0.7), verdict(2, 5, "spurious", float("nan"), float("nan"))]
    # class 0: the mixed feature 1 (mostly object) is left out while feature 2 carries the cue;
    # class 1 has only a mixed feature, which is kept; legacy verdicts without swaps always count.
    assert spurious_by_class(verdicts) == {0: [2], 1: [4], 2: [5]}


def test_a_swap_whose_backgrounds_separate_the_feature_by_rank_is_spurious_through_the_separation_path():
    from auditor.config import VerdictConfig
    from auditor.labeling import decide_verdict

    config = VerdictConfig()
    assert config.separation_threshold == 0.9
    # a faint cue: mean effects under both thresholds, yet own backgrounds rank above the others almost always
    evidence = dict(background=(0.12, 0.05, 0.2), swap=(0.10, 0.06, 0.14), object_reliance=0.6, object_high=0.7,
                    heat_spurious=False, density=2.0, object_drop=0.6, background_drop=0.3)
    spurious, decided_by, _, mixed, explanation = decide_verdict(config, **evidence, separation=0.93)
    assert spurious and decided_by == "separation" and mixed and "AUROC 0.93" in explanation
    for separation in (0.85, float("nan")):
        spurious, decided_by, *_ = decide_verdict(config, **evidence, separation=separation)
        assert not spurious and decided_by == "background"
    # the neutral-drop gate and the background check hold here too; 0 turns the path off
    assert not decide_verdict(config, **{**evidence, "background_drop": 0.05}, separation=0.95)[0]
    assert not decide_verdict(config, **{**evidence, "background": (-0.2, -0.3, -0.1)}, separation=0.95)[0]
    assert not decide_verdict(dataclasses.replace(config, separation_threshold=0.0), **evidence, separation=0.99)[0]


class TwoObjects(Dataset):
    """Class 0: a 5x5 object bright in channel 0; class 1: one bright in channel 1; dim noise behind both (channel 2 a
    constant 0.2, so :class:`TwoChannelNet`'s feature 0 is class 0's object and feature 1 class 1's)."""

    def __init__(self, n: int = 24, size: int = 16):
        rng = np.random.default_rng(0)
        self.items = []
        for label in (0, 1):
            for _ in range(n):
                image = np.full((3, size, size), 0.2, np.float32)
                image[:2] = rng.uniform(0.0, 0.2, size=(2, size, size))
                mask = np.zeros((size, size), bool)
                y, x = rng.integers(3, size - 8, size=2)
                mask[y : y + 5, x : x + 5] = True
                image[label][mask] = rng.uniform(0.7, 1.0)
                self.items.append((torch.from_numpy(image), label, mask))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class ShrunkMasks:
    """The dataset's masks eroded by one pixel: a rim of each object is left outside, as an estimated mask may."""

    def __init__(self, source: ImageSource):
        self.inner = DatasetMaskProvider(source)

    def masks(self, images, labels, indices):
        full = torch.from_numpy(self.inner.masks(images, labels, indices))
        return (~dilate_masks(~full, 1)).numpy()


def test_masks_grown_for_the_backgrounds_alone_test_keep_an_object_rim_from_calling_the_object_spurious(tmp_path):
    source = ImageSource(TwoObjects())
    adapter = ModelAdapter(TwoChannelNet())
    cache = extract_features(adapter, source, tmp_path, progress=False)
    importance = class_feature_importance(cache.activations, cache.labels, adapter.head_weight().numpy())

    def verdict(**settings):
        # The swaps keep the masks as they are, so the donors' rims reach them too (what the higher swap threshold for
        # estimated masks allows for); with the swap and separation paths out of reach, the backgrounds-alone test decides.
        # The population checks are off, to see the backgrounds-alone test on its own (with estimated masks the flag
        # path is off, ``_verdict_config``).
        settings = {"population_threshold": 0.0, "population_flag_threshold": 0.0, **settings}
        config = VerdictConfig(n_images=8, n_donors=16, swap_threshold=5.0, separation_threshold=0.0, **settings)
        (only,) = label_features(adapter, source, cache, {0: [0]}, importance, ShrunkMasks(source), config,
                                 np.random.default_rng(0), progress=False)
        return only

    as_they_are, grown = verdict(), verdict(background_test_dilation=1)
    # The rim left in class 0's own backgrounds raises its object feature there, and nowhere else.
    assert as_they_are.reliance_ci_low > 0.3 and as_they_are.label == "spurious" and as_they_are.decided_by == "background"
    assert grown.background_reliance < 0.1 and grown.label == "core"
    assert grown.background_test_dilation == 1 and "grown by 1 pixel" in grown.explanation
    # The grown run records the test with the masks as they are, on the same resamples, and leaves the swaps alone.
    assert (grown.ungrown_background_reliance, grown.ungrown_reliance_ci_low, grown.ungrown_reliance_ci_high) == (
        as_they_are.background_reliance, as_they_are.reliance_ci_low, as_they_are.reliance_ci_high)
    assert as_they_are.ungrown_background_reliance == as_they_are.background_reliance
    for field in ("swap_reliance", "class_swap_reliance", "swap_auroc", "object_reliance", "background_drop"):
        assert getattr(grown, field) == getattr(as_they_are, field), field
    # Why the flag path is off for estimated masks: the rims in the class's own backgrounds lift its object feature on them
    # across the whole class, so the population path would call the object spurious.
    with_population = verdict(background_test_dilation=1, population_flag_threshold=0.82)
    assert with_population.population_swap_auroc >= 0.82 and with_population.decided_by == "population"
