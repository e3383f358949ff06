import numpy as np
import pytest
import torch

from auditor.counterfactuals import (
    background_contrast,
    class_swap_contrast,
    clean_backgrounds,
    dilate_masks,
    fill_from_background,
    local_background,
    paste_object,
    pick_donors,
    reliance_scores,
    relight_object,
    remove_object,
)
from auditor.errors import InvalidInputError


def _scene(n=3, size=12, object_value=5.0, seed=0):
    """Images with a textured background (values in [0, 1)) and a square object of ``object_value``."""
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.uniform(0, 1, size=(n, 3, size, size)).astype(np.float32))
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        y, x = rng.integers(1, size - 5, size=2)
        masks[i, y : y + 4, x : x + 4] = True
    images[masks[:, None].expand_as(images)] = object_value
    return images, masks


def test_paste_keeps_object_pixels_exactly_and_takes_the_rest_from_the_background():
    images, masks = _scene(object_value=5.0)
    backgrounds = torch.full_like(images, -1.0)
    pasted = paste_object(images, masks, backgrounds)
    assert pasted.shape == images.shape
    inside = masks[:, None].expand_as(images)
    assert torch.equal(pasted[inside], images[inside])
    assert (pasted[~inside] == -1.0).all()


def test_clean_backgrounds_show_no_donor_object():
    donors, donor_masks = _scene(n=4, object_value=5.0, seed=1)
    clean = clean_backgrounds(donors, donor_masks)
    assert clean.shape == donors.shape
    assert not (clean == 5.0).any()  # the donor's object is gone everywhere
    outside = ~donor_masks[:, None].expand_as(donors)
    assert torch.equal(clean[outside], donors[outside])  # its background is untouched
    for i in range(len(donors)):  # the hole is filled with the donor's own background values
        own = set(donors[i][:, ~donor_masks[i]].flatten().tolist())
        assert set(clean[i][:, donor_masks[i]].flatten().tolist()) <= own


def test_swap_uses_the_donor_background_and_no_second_object():
    images, masks = _scene(n=2, object_value=5.0, seed=2)
    donors, donor_masks = _scene(n=2, object_value=7.0, seed=3)
    pasted = paste_object(images, masks, clean_backgrounds(donors, donor_masks))
    outside = ~masks[:, None].expand_as(images)
    assert not (pasted == 7.0).any()
    donor_values = set(donors[~donor_masks[:, None].expand_as(donors)].tolist())
    assert set(pasted[outside].tolist()) <= donor_values


def test_remove_object_keeps_the_background_and_fills_from_beside_the_object():
    image = torch.arange(8.0).view(1, 1, 8, 1).expand(1, 1, 8, 8).clone()  # horizontal bands: row y has value y
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, 2:5, 3:6] = True
    image[0, 0][mask[0]] = 99.0
    removed = remove_object(image, mask)
    assert torch.equal(removed[0, 0][~mask[0]], image[0, 0][~mask[0]])
    rows = torch.arange(8.0).view(8, 1).expand(8, 8)
    assert torch.equal(removed[0, 0][mask[0]], rows[mask[0]])  # the bands continue through the hole
    donor = torch.full_like(image, 3.0)
    assert (remove_object(image, mask, donor)[0, 0][mask[0]] == 3.0).all()


def test_fill_covers_a_mask_without_reachable_background():
    image = torch.arange(16.0).view(1, 1, 4, 4)
    everything = torch.ones(1, 4, 4, dtype=torch.bool)
    filled = fill_from_background(image, everything)
    assert torch.allclose(filled, torch.full_like(image, image.mean()))
    nothing = torch.zeros(1, 4, 4, dtype=torch.bool)
    assert torch.equal(fill_from_background(image, nothing), image)


def test_mismatched_shapes_are_rejected():
    images, masks = _scene()
    with pytest.raises(InvalidInputError, match="do not match"):
        paste_object(images, masks[:, :5], images)
    with pytest.raises(InvalidInputError, match="one background per image"):
        paste_object(images, masks, images[:1])


def test_pick_donors_never_picks_the_image_itself():
    rng = np.random.default_rng(0)
    donors = pick_donors(np.arange(5), np.arange(5), 3, rng)
    assert donors.shape == (5, 3)
    assert all(i not in row for i, row in enumerate(donors))
    assert pick_donors(np.array([2]), np.array([2]), 3, rng).shape == (1, 0)


def test_reliance_scores_measure_background_and_object_parts():
    # feature 0: object only (2 with the object, 0 without); feature 1: 1 from the class background.
    n, s = 20, 3
    base = np.tile([2.0, 1.0], (n, 1))
    same = np.tile([2.0, 1.0], (n, s, 1))
    random = np.tile([2.0, 0.0], (n, s, 1))
    removed = np.tile([0.0, 1.0], (n, 1))
    rel = reliance_scores(base, same, random, removed, np.random.default_rng(0))
    assert rel.background == pytest.approx([0.0, 1.0])
    assert rel.object == pytest.approx([1.0, 0.0])
    assert rel.random_drop == pytest.approx([0.0, 1.0]) and rel.same_drop == pytest.approx([0.0, 0.0])
    assert (rel.background_low <= rel.background).all() and (rel.background <= rel.background_high).all()


def test_reliance_interval_covers_zero_for_noise():
    rng = np.random.default_rng(1)
    base = np.ones((16, 1))
    rel = reliance_scores(base, rng.normal(1, 0.2, (16, 4, 1)), rng.normal(1, 0.2, (16, 4, 1)), base, rng)
    assert rel.background_low[0] < 0 < rel.background_high[0]


def test_reliance_rejects_inconsistent_shapes():
    with pytest.raises(InvalidInputError):
        reliance_scores(np.ones((4, 2)), np.ones((4, 3, 1)), np.ones((4, 3, 2)), np.ones((4, 2)), np.random.default_rng(0))


def test_background_contrast_ignores_suppression_by_other_classes_cues():
    rng = np.random.default_rng(0)
    # The class's backgrounds are plain (activation 1); a third of the other classes' are plain too,
    # the rest carry their own cues, which suppress the feature (activation 0).
    plain = rng.normal(1.0, 0.02, (30, 1))
    others = np.concatenate([rng.normal(1.0, 0.02, (12, 1)), rng.normal(0.0, 0.02, (24, 1))])
    value, low, _ = background_contrast(plain, others, np.array([2.0]), rng, quantile=0.75)
    assert abs(value[0]) < 0.05 and low[0] < 0.05
    mean_like, _, _ = background_contrast(plain, others, np.array([2.0]), rng, quantile=0.3)
    assert mean_like[0] > 0.4  # a low reference would call it background reliance
    # A cue only this class has (activation 1 on its backgrounds, 0 on nearly all others) is found.
    cue_others = np.concatenate([rng.normal(0.0, 0.02, (34, 1)), rng.normal(1.0, 0.02, (2, 1))])
    value, low, _high = background_contrast(plain, cue_others, np.array([2.0]), rng, quantile=0.75)
    assert value[0] == pytest.approx(0.5, abs=0.05) and low[0] > 0.4


def test_background_contrast_rejects_empty_donors():
    with pytest.raises(InvalidInputError, match="non-empty"):
        background_contrast(np.ones((3, 1)), np.ones((0, 1)), np.ones(1), np.random.default_rng(0))


def test_class_swap_contrast_ignores_classes_whose_cues_only_suppress_the_feature():
    rng = np.random.default_rng(0)
    n, s = 20, 6
    classes = np.tile(np.array([1, 1, 2, 2, 3, 3]), (n, 1))
    same = 1.0 + rng.normal(0, 0.02, (n, s, 1))
    # a control-class feature: classes 2 and 3 carry cues that lower it, class 1's plain backgrounds do not
    suppressed = np.where(classes[..., None] == 1, 1.0, 0.6) + rng.normal(0, 0.02, (n, s, 1))
    value, low, high = class_swap_contrast(same, suppressed, classes, np.array([1.0]), rng, min_swaps=8)
    assert abs(value[0]) < 0.05 and low[0] < 0 < high[0]
    # a feature that its own class's backgrounds raise above every other class's
    lowered = np.full((n, s, 1), 0.6) + rng.normal(0, 0.02, (n, s, 1))
    value, low, _ = class_swap_contrast(same, lowered, classes, np.array([1.0]), rng, min_swaps=8)
    assert value[0] == pytest.approx(0.4, abs=0.05) and low[0] > 0.3
    # the pooled per-donor quantile reference counts the suppression against the class
    pooled = reliance_scores(same[:, 0], same, suppressed, same[:, 0], rng, quantile=0.75)
    assert pooled.background[0] > 0.1


def test_class_swap_medians_keep_a_leaked_minority_of_donors_out_of_the_reference():
    rng = np.random.default_rng(1)
    n, s = 16, 8
    classes = np.tile(np.repeat([1, 2], 4), (n, 1))
    same = 1.0 + rng.normal(0, 0.02, (n, s, 1))
    # other classes' backgrounds lower the feature to 0.7, but a fifth of class 1's swaps carry the cue (a leak)
    others = 0.7 + rng.normal(0, 0.02, (n, s, 1))
    others[:3, :4] = 1.0
    mean, _, _ = class_swap_contrast(same, others, classes, np.array([1.0]), np.random.default_rng(0))
    median, low, _ = class_swap_contrast(same, others, classes, np.array([1.0]), np.random.default_rng(0), statistic="median")
    assert mean[0] == pytest.approx(0.3 - 0.3 * 12 / 64, abs=0.02)
    assert median[0] == pytest.approx(0.3, abs=0.02) and low[0] > 0.25
    with pytest.raises(InvalidInputError, match="median"):
        class_swap_contrast(same, others, classes, np.array([1.0]), rng, statistic="mode")


def test_class_swap_contrast_needs_enough_swaps_per_class_and_matching_shapes():
    rng = np.random.default_rng(0)
    same, random = np.ones((3, 2, 1)), np.zeros((3, 2, 1))
    value, low, high = class_swap_contrast(same, random, np.array([[1, 2]] * 3), np.array([1.0]), rng, min_swaps=8)
    assert np.isnan(value).all() and np.isnan(low).all() and np.isnan(high).all()
    with pytest.raises(InvalidInputError, match="class swap contrast"):
        class_swap_contrast(same, random, np.array([[1, 2, 3]] * 3), np.array([1.0]), rng)


def test_dilated_masks_grow_by_the_given_pixels_and_refuse_negative_growth():
    masks = torch.zeros(2, 9, 9, dtype=torch.bool)
    masks[0, 4, 4] = True
    masks[1, 0, 0] = True  # at the border the growth is clipped
    grown = dilate_masks(masks, 2)
    assert grown[0].sum() == 25 and grown[1].sum() == 9 and bool((grown | masks).eq(grown).all())
    with pytest.raises(InvalidInputError):
        dilate_masks(masks, -1)


@pytest.mark.parametrize("size", [16, 96])  # 96 px takes the averaged-down path
def test_relight_moves_a_scene_wide_cast_off_the_object_and_keeps_its_pattern(size):
    rng = np.random.default_rng(0)
    plain = torch.from_numpy(rng.uniform(0.2, 0.4, size=(2, 3, size, size)).astype(np.float32))
    masks = torch.zeros(2, size, size, dtype=torch.bool)
    masks[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = True
    pattern = torch.zeros_like(plain)
    pattern[:, 0][masks] = 0.5  # the object: +0.5 in channel 0
    cast = torch.tensor([0.0, 0.3, -0.1]).view(1, 3, 1, 1)  # covers object and background alike
    images = plain + pattern + cast
    donors = torch.from_numpy(rng.uniform(0.2, 0.4, size=(2, 3, size, size)).astype(np.float32))  # no cast
    relit = relight_object(images, masks, donors)
    inside = masks[:, None].expand_as(images)
    assert torch.equal(relit[~inside], images[~inside])  # the background is untouched
    shift = (relit - images)[:, :, masks[0]].mean(-1)  # mean shift of the object's pixels per channel
    assert torch.allclose(shift, -cast.view(1, 3).expand(2, 3), atol=0.03)
    # onto its own background nothing moves
    assert torch.allclose(relight_object(images, masks, images), images, atol=1e-5)
    pasted = paste_object(relit, masks, donors)
    assert (pasted[:, 0][masks] - donors[:, 0][masks]).mean() == pytest.approx(0.5, abs=0.05)


def test_ratio_and_chroma_relight_remove_a_multiplicative_cast_from_bright_and_dark_objects_alike():
    rng = np.random.default_rng(1)
    size = 24
    plain = torch.from_numpy(rng.uniform(0.3, 0.5, size=(2, 3, size, size)).astype(np.float32))
    masks = torch.zeros(2, size, size, dtype=torch.bool)
    masks[:, 6:18, 6:18] = True
    objects = plain.clone()
    objects[0][:, masks[0]] = 0.9  # a bright object
    objects[1][:, masks[1]] = 0.1  # a dark one
    gain = torch.tensor([1.2, 0.95, 0.7]).view(1, 3, 1, 1)  # a warm cast scales each channel of the whole scene
    cast = objects * gain
    donors = plain  # the same backgrounds without the cast
    inside = masks[:, None].expand_as(cast)
    ratio = relight_object(cast, masks, donors, mode="ratio")
    shift = relight_object(cast, masks, donors, mode="shift")
    ratio_error = (ratio - objects)[inside].abs().mean()
    shift_error = (shift - objects)[inside].abs().mean()
    chroma_error = (relight_object(cast, masks, donors, mode="chroma") - objects)[inside].abs().mean()
    assert ratio_error < 0.02 < shift_error  # the shift over-corrects the dark object and under-corrects the bright one
    assert chroma_error < 0.04 < shift_error  # the cast's colour leaves by the ratio, its light by the shift
    grey = cast[:, :1]  # one channel: no chromaticity, so "chroma" is the shift
    assert torch.allclose(relight_object(grey, masks, donors[:, :1], mode="chroma"),
                          relight_object(grey, masks, donors[:, :1], mode="shift").clamp(0, 1), atol=1e-5)
    assert torch.equal(ratio[~inside], cast[~inside])
    # normalised inputs give the same pixels once the normalisation is undone
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    normalised = relight_object((cast - mean) / std, masks, (donors - mean) / std, mode="ratio", mean=mean, std=std)
    assert torch.allclose(normalised * std + mean, ratio, atol=1e-5)
    with pytest.raises(InvalidInputError, match="relight mode"):
        relight_object(cast, masks, donors, mode="gamma")
    with pytest.raises(InvalidInputError, match="mean and std"):
        relight_object(cast, masks, donors, mode="ratio", mean=mean)


def test_local_background_ignores_the_object_and_rejects_bad_input():
    images = torch.zeros(1, 1, 8, 8)
    images[0, 0, 2:6, 2:6] = 9.0
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    masks[0, 2:6, 2:6] = True
    assert torch.allclose(local_background(images, ~masks), torch.zeros(1, 1, 8, 8), atol=1e-6)
    assert torch.equal(local_background(images, torch.zeros_like(masks)), torch.zeros(1, 1, 8, 8))  # nothing to count
    with pytest.raises(InvalidInputError, match="sigma"):
        local_background(images, ~masks, sigma=0.0)
    with pytest.raises(InvalidInputError):
        relight_object(images, masks[:, :4], images)
    with pytest.raises(InvalidInputError):
        relight_object(images, masks, images[:, :, :4])


def test_swap_separation_ranks_own_backgrounds_against_all_and_against_the_worst_other_class():
    from auditor.counterfactuals import swap_separation

    rng = np.random.default_rng(0)
    objects = rng.normal(2.0, 0.5, size=(16, 1, 1))  # the feature's spread over the class's objects
    same = objects + 0.8 + rng.normal(0, 0.05, size=(16, 8, 1))
    classes = np.tile(np.array([1, 1, 1, 1, 2, 2, 2, 2]), (16, 1))
    lift = np.where(classes == 1, 0.0, 0.7)[..., None]  # class 2's backgrounds raise the feature almost as much
    random = objects + lift + rng.normal(0, 0.05, size=(16, 8, 1))
    pooled, worst = swap_separation(same, random, classes, np.array([2.0]))
    assert 0.5 < worst[0] < pooled[0] < 1.0
    assert swap_separation(same, same, classes, np.array([2.0]))[0][0] == pytest.approx(0.5)
    # a negative feature: lower on its own backgrounds means higher in its own direction
    flipped, _ = swap_separation(-same, -random, classes, np.array([-2.0]))
    assert flipped[0] == pytest.approx(pooled[0])
    assert np.isnan(swap_separation(same, random, classes, np.array([2.0]), min_swaps=100)[1][0])
    with pytest.raises(InvalidInputError):
        swap_separation(same, random[:, :4], classes, np.array([2.0]))


def test_separation_against_some_classes_ranks_only_their_swaps():
    from auditor.counterfactuals import separation_against, swap_separation

    same = np.array([[[3.0], [4.0]], [[3.5], [4.5]]])
    random = np.array([[[1.0], [3.75]], [[0.5], [3.75]]])  # class 1's backgrounds lower the feature, class 2's do not
    classes = np.array([[1, 2], [1, 2]])
    scale = np.array([2.0])
    assert separation_against(same, random, classes, scale, [1])[0] == pytest.approx(1.0)
    assert separation_against(same, random, classes, scale, [2])[0] == pytest.approx(0.5)
    assert separation_against(same, random, classes, scale, [1, 2])[0] == pytest.approx(swap_separation(same, random, classes, scale)[0][0])
    assert separation_against(-same, -random, classes, -scale, [1])[0] == pytest.approx(1.0)
    assert np.isnan(separation_against(same, random, classes, scale, [7])[0])
    with pytest.raises(InvalidInputError):
        separation_against(same, random[:, :1, :], classes, scale, [1])
