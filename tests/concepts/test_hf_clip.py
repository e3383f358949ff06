"""The "hf_clip" concept encoder on a tiny CLIPModel saved to disk (hub offline)."""

import json

import numpy as np
import pytest
import torch

from auditor.concepts.base import CONCEPT_ENCODERS
from auditor.concepts.hf_clip import HfClipEncoder
from auditor.demo.zoo.hf_clip import save_tiny_hf_clip
from auditor.errors import InvalidInputError, MissingWeightsError


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    return save_tiny_hf_clip(tmp_path_factory.mktemp("hf_clip"), image_size=32)


def test_loads_offline_and_matches_transformers(hf_folder):
    from transformers import CLIPModel

    encoder = CONCEPT_ENCODERS.create("hf_clip", model_name=str(hf_folder), pretrained=None, device="cpu")
    text = encoder.encode_text(["a photo of water", "a tree"])
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    feats = encoder.encode_images(images)
    assert text.shape == (2, 64) and feats.shape == (3, 64) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)
    model = CLIPModel.from_pretrained(str(hf_folder), local_files_only=True).eval()
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor.from_pretrained(str(hf_folder), local_files_only=True)
    mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    with torch.no_grad():
        direct = model.get_image_features(pixel_values=(images - mean) / std)
    direct = getattr(direct, "pooler_output", direct)
    np.testing.assert_allclose(feats, torch.nn.functional.normalize(direct, dim=-1).numpy(), atol=1e-5)


def test_tokenizer_is_the_real_clip_vocabulary(hf_folder):
    encoder = HfClipEncoder(str(hf_folder))
    ids = encoder.tokenizer("a photo of a dog")["input_ids"]
    assert ids == [49406, 320, 1125, 539, 320, 1929, 49407]


def test_size_mismatch(hf_folder):
    encoder = HfClipEncoder(str(hf_folder))
    with pytest.raises(InvalidInputError, match="expects 32x32"):
        encoder.encode_images(torch.rand(1, 3, 64, 64))
    assert HfClipEncoder(str(hf_folder), resize=True).encode_images(torch.rand(1, 3, 64, 64)).shape == (1, 64)


def test_missing_and_wrong_folders(tmp_path, hf_folder):
    with pytest.raises(MissingWeightsError, match="no config.json"):
        HfClipEncoder(str(tmp_path / "absent"))
    with pytest.raises(MissingWeightsError, match="no local copy"):
        HfClipEncoder("openai/clip-vit-base-patch32")
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(InvalidInputError, match="not CLIP"):
        HfClipEncoder(str(other))


def test_broken_tokenizer_is_refused(tmp_path, hf_folder):
    import shutil

    from transformers import CLIPTokenizer

    broken = tmp_path / "broken"
    shutil.copytree(hf_folder, broken)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (broken / f).unlink()
    CLIPTokenizer(vocab={"<|endoftext|>": 0, "<|startoftext|>": 1}, merges=[]).save_pretrained(broken)
    with pytest.raises(InvalidInputError, match="tokenizer .* is unusable"):
        HfClipEncoder(str(broken))
