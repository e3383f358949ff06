"""End to end: audit a dataset without masks on the tiny SAM + tiny CLIP (no download)."""

import numpy as np
import pytest

STRIPES = {"striped background", "stripes", "a striped pattern"}
WARM = {"warm orange light", "warm light", "orange colour"}


@pytest.mark.slow
def test_audit_without_masks_matches_dataset_masks(tiny_clip, tiny_sam_path):
    from auditor.api import audit
    from auditor.demo.world.dataset import WorldDataset
    from auditor.demo.world.generator import WorldSpec
    from auditor.demo.world.train import TrainSpec, load_or_train_model, load_split
    from auditor.masks.sam import SamMaskProvider

    spec = WorldSpec(image_size=32, n_train=300, n_val=100, n_test=10)
    model = load_or_train_model(spec, TrainSpec(epochs=8), progress=False)
    train, val = load_split(spec, "train"), load_split(spec, "val")
    name, clip_path = tiny_clip
    config = {
        "progress": False,
        "tuning": {"enabled": False},
        "masks": {"sam_model_type": "tiny", "sam_checkpoint": str(tiny_sam_path), "points_per_side": 8},
        "concepts": {"enabled": True, "model_name": name, "pretrained": str(clip_path)},
    }
    with_sam = audit(model, WorldDataset(train, with_masks=False), WorldDataset(val, with_masks=False),
                     class_names=spec.class_names, config=config)
    assert with_sam.meta["mask_provider"] == SamMaskProvider.__name__
    reference = audit(model, WorldDataset(train), WorldDataset(val, with_masks=False), class_names=spec.class_names,
                      config={**config, "concepts": {"enabled": False}})

    sam_labels = {(v.class_index, v.feature): v.label for v in with_sam.verdicts}
    ref_labels = {(v.class_index, v.feature): v.label for v in reference.verdicts}
    assert sam_labels.keys() == ref_labels.keys()
    agreement = np.mean([sam_labels[k] == ref_labels[k] for k in ref_labels])
    assert agreement >= 0.8
    for c in (0, 1, 2):  # the cue classes
        assert with_sam.spurious_features(c)

    concepts = with_sam.sections["concepts"]["classes"]
    assert concepts["circle"]["spurious"] and concepts["circle"]["spurious"][0] in STRIPES
    assert concepts["triangle"]["spurious"] and concepts["triangle"]["spurious"][0] in WARM
    assert concepts["plus"]["spurious"] == [] and concepts["ring"]["spurious"] == []
    named = [v.concept_names for v in with_sam.verdicts if v.class_index == 0 and v.label == "spurious"]
    assert named and all(names for names in named)
