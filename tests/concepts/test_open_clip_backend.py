"""The "open_clip" concept encoder on the project's tiny CLIP (no downloads)."""

import numpy as np
import pytest
import torch

from auditor.concepts.base import CONCEPT_ENCODERS
from auditor.concepts.open_clip_backend import OpenClipEncoder
from auditor.errors import ConfigError, InvalidInputError, MissingWeightsError


def test_registered_and_normalised(tiny_clip, world32):
    name, path = tiny_clip
    encoder = CONCEPT_ENCODERS.create("open_clip", model_name=name, pretrained=str(path), device="cpu")
    text = encoder.encode_text(["a photo with striped background", "a photo of water"])
    _, split = world32
    images = torch.from_numpy(split.images[:5]).permute(0, 3, 1, 2).float() / 255
    feats = encoder.encode_images(images)
    assert text.dtype == np.float32 and feats.dtype == np.float32
    assert text.shape == (2, encoder.embed_dim) and feats.shape == (5, encoder.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)


def test_same_outputs_as_open_clip_loaded_directly(tiny_clip, clip_encoder, world32):
    import open_clip

    name, path = tiny_clip
    model, _, _ = open_clip.create_model_and_transforms(name, pretrained=str(path))
    model.eval()
    tokens = open_clip.get_tokenizer(name)(["a photo of a circle"])
    with torch.no_grad():
        direct = model.encode_text(tokens, normalize=True).numpy()
    np.testing.assert_allclose(clip_encoder.encode_text(["a photo of a circle"]), direct, atol=1e-5)


def test_retrieves_the_worlds_cues(clip_encoder, world32):
    from sklearn.metrics import roc_auc_score

    _, split = world32
    images = torch.from_numpy(split.images).permute(0, 3, 1, 2).float() / 255
    feats = clip_encoder.encode_images(images)
    for cue, prompt in [("stripes", "a photo with striped background"), ("warm", "a photo with warm orange light")]:
        sims = feats @ clip_encoder.encode_text([prompt])[0]
        assert roc_auc_score(split.cue_flag(cue), sims) > 0.85, cue


def test_image_size_mismatch_is_an_error_unless_resizing(tiny_clip, clip_encoder):
    with pytest.raises(InvalidInputError, match="64x64 but CLIP model .* expects 32x32"):
        clip_encoder.encode_images(torch.rand(2, 3, 64, 64))
    name, path = tiny_clip
    resizing = OpenClipEncoder(name, str(path), resize=True)
    assert resizing.encode_images(torch.rand(2, 3, 64, 64)).shape == (2, resizing.embed_dim)
    with pytest.raises(InvalidInputError, match=r"\(N, 3, H, W\)"):
        clip_encoder.encode_images(torch.rand(3, 32, 32))


def test_missing_weights_are_clear_and_never_downloaded(monkeypatch):
    import open_clip.factory

    def no_download(*args, **kwargs):  # any download attempt fails the test
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", no_download)
    with pytest.raises(MissingWeightsError, match="no weights given"):
        OpenClipEncoder("ViT-B-32", None)
    with pytest.raises(MissingWeightsError, match="does not exist"):
        OpenClipEncoder("ViT-B-32", "/no/such/clip.pt")
    with pytest.raises(MissingWeightsError, match="not on disk"):
        OpenClipEncoder("ViT-B-32", "openai")
    with pytest.raises(ConfigError, match="Did you mean"):
        OpenClipEncoder("ViT-B-3", "x.pt")
    with pytest.raises(ConfigError, match="neither a file nor an open_clip tag"):
        OpenClipEncoder("ViT-B-32", "not-a-tag")


def test_wrong_checkpoint_type(tiny_clip, tmp_path):
    name, _ = tiny_clip
    wrong = tmp_path / "not_clip.pt"
    torch.save({"layer.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(InvalidInputError, match="does not match open_clip model"):
        OpenClipEncoder(name, str(wrong))


def test_tiny_alias_uses_the_zoo(tiny_clip):
    encoder = OpenClipEncoder("tiny-test")
    assert (encoder.model_name, encoder.pretrained) == (tiny_clip[0], str(tiny_clip[1]))
    assert encoder.image_size == (32, 32)
