"""Shared fixtures: tiny hand-built models and generated data with known answers."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

# Trained tiny models are cached here between test runs (CI trains them once per run).
os.environ.setdefault("AUDITOR_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "auditor"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)  # tests use tiny tensors; one thread avoids oversubscription

# FiftyOne reads its config when first imported: a private database folder (about 300 MB once MongoDB has
# started), removed when the test process exits. The handler is registered before FiftyOne is imported, so it
# runs after FiftyOne's own exit handler has stopped the database (atexit runs handlers last-in, first-out).
if "FIFTYONE_DATABASE_DIR" not in os.environ:
    os.environ["FIFTYONE_DATABASE_DIR"] = tempfile.mkdtemp(prefix="auditor-fiftyone-db-")
    atexit.register(shutil.rmtree, os.environ["FIFTYONE_DATABASE_DIR"], ignore_errors=True)
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")


class TwoChannelNet(nn.Module):
    """Feature 0 = mean of relu(ch0 - ch2), feature 1 = mean of relu(ch1 - ch2) (1x1 conv, ReLU, GAP).

    With images whose object lives in channel 0 and whose background cue lives in
    channel 1 (channel 2 a constant), feature 0 is core and feature 1 spurious by
    construction; a colourless (grey) fill removes both.
    """

    def __init__(self, head_weight: torch.Tensor | None = None):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0] = 1.0
            self.conv.weight[0, 2] = -1.0
            self.conv.weight[1, 1] = 1.0
            self.conv.weight[1, 2] = -1.0
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(head_weight if head_weight is not None else torch.tensor([[1.0, 1.0], [-1.0, -1.0]]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.relu(self.conv(x))), 1))


class PlantedDataset(Dataset):
    """16x16 images: a bright square object in channel 0, a striped background cue in channel 1.

    Class 0 images have the object; the background texture is present in a
    fraction of images given by ``texture``; masks mark the object.
    """

    def __init__(self, n: int = 40, size: int = 16, seed: int = 0, with_masks: bool = True):
        rng = np.random.default_rng(seed)
        self.images, self.masks = [], []
        for _ in range(n):
            image = np.zeros((3, size, size), np.float32)
            mask = np.zeros((size, size), bool)
            x, y = rng.integers(2, size - 7, size=2)
            mask[y : y + 5, x : x + 5] = True
            image[0][mask] = rng.uniform(0.6, 1.0)
            stripes = (np.arange(size)[None, :] // 2 + rng.integers(2)) % 2
            texture = rng.uniform(0.6, 0.9) * np.broadcast_to(stripes, (size, size))
            image[1] = np.where(mask, 0, texture)
            image[2] = 0.2
            image[0] = np.maximum(image[0], 0.2 * ~mask)
            self.images.append(torch.from_numpy(image))
            self.masks.append(torch.from_numpy(mask))
        self.labels = [0] * n
        self.with_masks = with_masks

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        if self.with_masks:
            return self.images[i], self.labels[i], self.masks[i]
        return self.images[i], self.labels[i]


class TwoClassPlanted(Dataset):
    """Class 0: the planted images (object in channel 0, striped cue in channel 1 around it);
    class 1: the same kind of object on the same backdrop without the stripes (a clean class)."""

    def __init__(self, n: int = 24):
        cue, clean = PlantedDataset(n=n, seed=0), PlantedDataset(n=n, seed=1)
        self.items = [(cue.images[i], 0, cue.masks[i]) for i in range(n)]
        for i in range(n):
            image = clean.images[i].clone()
            image[1] = 0.0
            self.items.append((image, 1, clean.masks[i]))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.fixture(scope="session")
def tiny_clip():
    """``(model_name, checkpoint_path)`` of the test-size tiny CLIP (32 px), trained once and cached."""
    from auditor.demo.zoo.tiny_clip import TEST_SPEC, load_or_train_tiny_clip

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
    from auditor.demo.world.generator import WorldSpec
    from auditor.demo.world.train import load_split

    spec = WorldSpec(image_size=32, n_train=60, n_val=60, n_test=20)
    return spec, load_split(spec, "val")


@pytest.fixture
def two_channel_net() -> TwoChannelNet:
    return TwoChannelNet().eval()


@pytest.fixture
def planted_dataset() -> PlantedDataset:
    return PlantedDataset()


def state_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of a model's state_dict, for asserting it was not changed."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_untouched(model: nn.Module, snapshot: dict[str, torch.Tensor], training: bool) -> None:
    """The model has the same weights, no leftover hooks, and its training flag as before."""
    for name, value in model.state_dict().items():
        assert torch.equal(value, snapshot[name]), f"{name} changed"
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks
    assert model.training == training


class ProjNet(nn.Module):
    """A `proj` Linear embedding followed by a convolutional head (1x1 conv over a 1x1 map)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(12, 32)
        self.head = nn.Conv2d(32, 5, 1)

    def forward(self, x):
        return self.head(self.proj(x.flatten(1))[:, :, None, None]).flatten(1)
