"""The tiny CLIP: an open_clip config, trained with ClipLoss, reloaded through open_clip's own factory."""

import json

import numpy as np
import torch

from auditor.demo.world.generator import WorldSpec
from auditor.demo.world.train import load_split
from auditor.demo.zoo import tiny_clip


def test_config_registers_with_open_clip(tmp_path):
    import open_clip

    spec = tiny_clip.TinyClipSpec(image_size=32, width=32, layers=1)
    name = tiny_clip.register_tiny_clip_config(spec, folder=tmp_path)
    assert name in open_clip.list_models() and name.startswith("auditor-tiny-clip-32-")
    assert json.loads((tmp_path / f"{name}.json").read_text())["vision_cfg"]["image_size"] == 32
    model = tiny_clip.build_tiny_clip(spec)
    with torch.no_grad():
        feats = model.encode_image(torch.rand(2, 3, 32, 32), normalize=True)
    assert feats.shape == (2, spec.embed_dim)


def test_captions_name_the_cues():
    split = load_split(WorldSpec(image_size=32, n_train=10, n_val=5, n_test=5), "train")
    for i in range(len(split)):
        text = " ".join(tiny_clip.caption_variants(split, i))
        assert split.class_names[split.true_labels[i]] in text
        assert ("striped background" in text) == bool(split.cue_flag("stripes")[i])
        assert ("warm orange light" in text) == bool(split.cue_flag("warm")[i])
        assert ("a small tree" in text) == bool(split.cue_flag("tree")[i])


def test_trained_checkpoint_reloads_and_learned_the_cues():
    import open_clip

    name, path = tiny_clip.load_or_train_tiny_clip(tiny_clip.TEST_SPEC)
    metrics = json.loads(tiny_clip.tiny_clip_paths(tiny_clip.TEST_SPEC)[1].read_text())
    assert metrics["stripes_auc"] > 0.9 and metrics["warm_auc"] > 0.9 and metrics["colour_accuracy"] > 0.25  # chance: 1/8
    model, _, _preprocess = open_clip.create_model_and_transforms(name, pretrained=str(path))
    model.eval()
    again, _, _ = open_clip.create_model_and_transforms(name, pretrained=str(path))
    again.eval()
    tokens = open_clip.get_tokenizer(name)(["a photo with warm orange light"])
    with torch.no_grad():
        np.testing.assert_array_equal(model.encode_text(tokens).numpy(), again.encode_text(tokens).numpy())
    assert path.stat().st_size < 20_000_000
