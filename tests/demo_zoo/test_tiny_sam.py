"""The tiny SAM: segment_anything's modules, trained on the world's masks, used by SamPredictor / the generator."""

import pytest
import torch

from auditor.demo.world.generator import WorldSpec
from auditor.demo.world.train import load_split
from auditor.demo.zoo import tiny_sam
from auditor.errors import InvalidInputError, MissingWeightsError


def test_builds_a_segment_anything_sam():
    from segment_anything.modeling import Sam

    sam = tiny_sam.build_tiny_sam()
    assert isinstance(sam, Sam)
    assert sum(p.numel() for p in sam.parameters()) < 300_000
    with pytest.raises(InvalidInputError, match="divisible by 8"):
        tiny_sam.build_tiny_sam(tiny_sam.TinySamSpec(prompt_dim=30))


def test_trained_model_segments_through_the_library_apis():
    from segment_anything import SamAutomaticMaskGenerator

    path = tiny_sam.load_or_train_tiny_sam(tiny_sam.TEST_SAM_SPEC)
    sam = tiny_sam.load_tiny_sam(path)
    split = load_split(WorldSpec(image_size=32, n_train=10, n_val=10, n_test=10), "test")
    metrics = tiny_sam.evaluate_tiny_sam(sam, split, n_images=30)
    assert metrics["box_miou"] > 0.6 and metrics["point_miou"] > 0.6
    generator = SamAutomaticMaskGenerator(sam, points_per_side=8, pred_iou_thresh=0.5, stability_score_thresh=0.5)
    records = generator.generate(split.images[0])
    assert records and records[0]["segmentation"].shape == (32, 32)


def test_load_errors(tmp_path):
    with pytest.raises(MissingWeightsError, match="does not exist"):
        tiny_sam.load_tiny_sam(tmp_path / "absent.pt")
    wrong = tmp_path / "wrong.pt"
    torch.save({"weight": torch.zeros(1)}, wrong)
    with pytest.raises(InvalidInputError, match="not a tiny SAM checkpoint"):
        tiny_sam.load_tiny_sam(wrong)
