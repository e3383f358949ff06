"""Fixtures for the mask tests: tiny CLIP and tiny SAM (test configurations), trained once and cached."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest


@pytest.fixture(scope="session")
def tiny_clip():
    """``(model_name, checkpoint_path)`` of the test-size tiny CLIP (32 px)."""
    from auditor.zoo.tiny_clip import TEST_SPEC, load_or_train_tiny_clip

    return load_or_train_tiny_clip(TEST_SPEC)


@pytest.fixture(scope="session")
def clip_encoder(tiny_clip):
    """The "open_clip" encoder on the tiny CLIP."""
    from auditor.concepts.open_clip_backend import OpenClipEncoder

    name, path = tiny_clip
    return OpenClipEncoder(name, str(path))


@pytest.fixture(scope="session")
def world32():
    """A small 32 px world: (spec, val split)."""
    from auditor.world.generator import WorldSpec
    from auditor.world.train import load_split

    spec = WorldSpec(image_size=32, n_train=60, n_val=60, n_test=20)
    return spec, load_split(spec, "val")


@pytest.fixture(scope="session")
def tiny_sam_path():
    """Checkpoint of the test-size tiny SAM."""
    from auditor.zoo.tiny_sam import TEST_SAM_SPEC, load_or_train_tiny_sam

    return load_or_train_tiny_sam(TEST_SAM_SPEC)


@pytest.fixture(scope="session")
def tiny_sam(tiny_sam_path):
    """The test-size tiny SAM module."""
    from auditor.zoo.tiny_sam import load_tiny_sam

    return load_tiny_sam(tiny_sam_path)
