import itertools

import numpy as np
import pytest
import torch

from auditor.demo.world.dataset import WorldDataset
from auditor.demo.world.evaluate import cue_aurocs, group_accuracies, group_ids
from auditor.demo.world.generator import (
    ClassSpec,
    WorldSpec,
    generate_split,
    shape_mask,
)

SMALL = WorldSpec(image_size=32, n_train=100, n_val=40, n_test=40)


def test_generation_is_deterministic_and_splits_differ():
    a, b = generate_split(SMALL, "train"), generate_split(SMALL, "train")
    assert np.array_equal(a.images, b.images) and np.array_equal(a.cues, b.cues)
    val = generate_split(SMALL, "val")
    assert not np.array_equal(a.images[:40], val.images[:40])


def test_cues_are_tied_to_their_class_in_training_and_balanced_in_validation():
    spec = WorldSpec(image_size=24, n_train=300, n_val=300, n_test=10)
    train, val = generate_split(spec, "train"), generate_split(spec, "val")
    for c, cue in spec.cue_of_class.items():
        own = train.labels == c
        assert train.cue_flag(cue)[own].mean() > 0.9
        assert train.cue_flag(cue)[~own].mean() < 0.1
        assert 0.4 < val.cue_flag(cue)[val.labels == c].mean() < 0.6
        assert 0.4 < val.cue_flag(cue)[val.labels != c].mean() < 0.6


def test_masks_cover_the_object_and_the_tree_lies_outside_it():
    split = generate_split(SMALL, "train")
    assert split.masks.shape == (len(split), 32, 32)
    assert (split.masks.mean((1, 2)) > 0.01).all()
    has_tree = split.cue_flag("tree")
    assert (split.tree_masks[has_tree].sum((1, 2)) > 0).all()
    assert not (split.tree_masks & split.masks).any()
    assert (split.tree_masks[~has_tree].sum((1, 2)) == 0).all()


def test_captions_name_object_and_cues():
    split = generate_split(SMALL, "train")
    i = int(np.flatnonzero(split.cue_flag("stripes"))[0])
    caption = split.caption(i)
    assert split.class_names[split.true_labels[i]] in caption and "striped" in caption


def test_label_noise_and_collisions():
    spec = WorldSpec(
        classes=(ClassSpec("circle"), ClassSpec("square", label_noise=0.2, collision_rate=0.5, collision_shape="circle")),
        image_size=24, n_train=100, n_val=50, n_test=10,
    )
    train = generate_split(spec, "train")
    flipped = train.labels != train.true_labels
    assert flipped.sum() == 20 and (train.labels[flipped] == 1).all()
    assert 0.3 < train.collision[train.true_labels == 1].mean() < 0.7
    assert not train.collision[train.true_labels == 0].any()


def test_per_class_cue_rate_and_collision_scales(monkeypatch):
    from auditor.demo.world import generator

    spec = WorldSpec(
        classes=(ClassSpec("circle", "stripes"), ClassSpec("square", "stripes", cue_rate=0.3, collision_rate=1.0,
                                                            collision_shape="plus", collision_scale=(0.5, 0.5),
                                                            collision_scale_eval=(1.2, 1.4))),
        image_size=24, n_train=300, n_val=30, n_test=5,
    )
    radii = []
    real_shape_mask = generator.shape_mask
    monkeypatch.setattr(generator, "shape_mask", lambda shape, *args: radii.append((shape, args[3])) or real_shape_mask(shape, *args))
    train = generate_split(spec, "train")
    assert train.cue_flag("stripes")[train.labels == 0].mean() > 0.9
    assert 0.2 < train.cue_flag("stripes")[train.labels == 1].mean() < 0.4
    ratios = [other / own for (s1, other), (s2, own) in itertools.pairwise(radii) if s1 == "plus" and s2 == "square"]
    assert len(ratios) == 300 and np.allclose(ratios, 0.5)
    radii.clear()
    generate_split(spec, "val")
    ratios = [other / own for (s1, other), (s2, own) in itertools.pairwise(radii) if s1 == "plus" and s2 == "square"]
    assert len(ratios) == 30 and all(1.2 <= r <= 1.4 for r in ratios) and np.ptp(ratios) > 0


def test_bad_specs_are_rejected():
    with pytest.raises(ValueError, match="cue_rate"):
        ClassSpec("circle", "stripes", cue_rate=1.5)
    with pytest.raises(ValueError, match="collision_scale"):
        ClassSpec("circle", collision_scale=(1.0, 0.5))
    with pytest.raises(ValueError, match="unknown shape"):
        WorldSpec(classes=(ClassSpec("hexagon"),))
    with pytest.raises(ValueError, match="unknown cue"):
        WorldSpec(classes=(ClassSpec("circle", cue="sparkles"),))
    with pytest.raises(ValueError, match="unknown shape"):
        shape_mask("blob", 8, 0.5, 0.5, 0.2, 0.0)


def test_dataset_yields_unit_images_labels_and_masks():
    split = generate_split(SMALL, "val")
    image, label, mask = WorldDataset(split)[5]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    assert label == split.labels[5] and mask.dtype == torch.bool
    assert len(WorldDataset(split, with_masks=False)[0]) == 2


def test_ground_truth_scorers():
    split = generate_split(SMALL, "val")
    groups = group_ids(split, SMALL)
    assert set(np.unique(groups)) <= set(range(2 * len(SMALL.classes)))
    perfect = group_accuracies(split.labels.copy(), split, SMALL)
    assert perfect["accuracy"] == 1.0 and perfect["worst_group"] == 1.0
    oracle = np.where(np.isin(split.labels, list(SMALL.cue_of_class)), 0.0, np.nan)
    for c, cue in SMALL.cue_of_class.items():
        oracle[split.labels == c] = split.cue_flag(cue)[split.labels == c]
    assert all(v == 1.0 for v in cue_aurocs(oracle, split, SMALL).values())
