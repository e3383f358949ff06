import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from auditor.config import AuditConfig
from auditor.data import ImageSource
from auditor.discovery import (
    cluster_embeddings,
    cluster_purity,
    collect_confident,
    load_folder_images,
    remove_objects,
    run_discovery,
)
from auditor.errors import ConfigError, InvalidInputError
from auditor.model import ModelAdapter
from auditor.results import FeatureVerdict
from auditor.vae import train_vae
from tests.conftest import TwoChannelNet, assert_untouched, state_snapshot


def test_remove_objects_fills_with_the_background_mean():
    images = torch.zeros(2, 3, 4, 4)
    images[0, 0] = 0.5
    images[0, :, 1, 1] = 1.0  # the object
    masks = np.zeros((2, 4, 4), bool)
    masks[0, 1, 1] = True
    out = remove_objects(images, masks, dilate=0)
    assert torch.allclose(out[0, 0], torch.full((4, 4), 0.5))
    assert torch.allclose(out[0, 1], torch.zeros(4, 4))
    assert torch.equal(out[1], images[1])  # empty mask: unchanged
    with pytest.raises(InvalidInputError, match="masks have shape"):
        remove_objects(images, masks[:, :3])


def test_collect_confident_and_purity():
    probs = np.array([[0.9, 0.1], [0.55, 0.45], [0.2, 0.8], [0.1, 0.9]])
    collected = collect_confident(probs, 0.6)
    assert collected[0].tolist() == [0] and collected[1].tolist() == [2, 3]
    assert cluster_purity([2, 3], np.array([0, 0, 1, 0], bool)) == 0.5


def test_cluster_embeddings_finds_separated_groups():
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 0.1, (15, 3)), rng.normal(3, 0.1, (25, 3))]
    labels = cluster_embeddings(x, 4)
    assert labels[15:].tolist() == [0] * 25 and labels[:15].tolist() == [1] * 15  # 0 = the larger cluster
    assert cluster_embeddings(x[:3], 4).tolist() == [0, 0, 0]  # too few images to split


def test_load_folder_images(tmp_path):
    Image.fromarray(np.full((8, 6, 3), 255, np.uint8)).save(tmp_path / "b.png")
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "a.jpg")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    images, names = load_folder_images(tmp_path, (4, 4))
    assert names == ["a.jpg", "b.png"] and images.shape == (2, 3, 4, 4)
    assert float(images[0].max()) == 0.0 and float(images[1].min()) == 1.0
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_folder_images(tmp_path / "missing", (4, 4))


def test_vae_embeddings_separate_two_kinds_of_image():
    rng = np.random.default_rng(0)
    red = torch.zeros(20, 3, 16, 16)
    red[:, 0] = 0.9
    blue = torch.zeros(20, 3, 16, 16)
    blue[:, 2] = 0.9
    images = (torch.cat([red, blue]) + torch.from_numpy(rng.normal(0, 0.05, (40, 3, 16, 16)).astype(np.float32))).clamp(0, 1)
    vae = train_vae(images, size=16, epochs=15, seed=0)
    z = vae.embed(images)
    assert z.shape == (40, 8)
    labels = cluster_embeddings(z, 3)
    assert len(set(labels[:20])) == 1 and len(set(labels[20:])) == 1 and labels[0] != labels[20]
    again = train_vae(images, size=16, epochs=15, seed=0).embed(images)
    np.testing.assert_allclose(z, again, rtol=1e-4, atol=1e-5)  # seeded: same embeddings


class CueDataset(Dataset):
    """16x16 images: a class-0 object in channel 0 (masked); class 1 has a channel-1 cue, striped or flat.

    With TwoChannelNet and head [[4, -4], [-4, 4]], an image without its object is called
    class 1 exactly when it carries a cue; the two cue kinds look different.
    """

    def __init__(self, n=48):
        rng = np.random.default_rng(0)
        self.items, self.kind = [], []
        for i in range(n):
            label = i % 2
            image = torch.full((3, 16, 16), 0.2)
            mask = torch.zeros(16, 16, dtype=torch.bool)
            y, x = rng.integers(1, 10, size=2)
            mask[y : y + 5, x : x + 5] = True
            image[0][mask] = 1.0 if label == 0 else 0.6
            kind = "none" if label == 0 else ("stripes" if i % 4 == 1 else "flat")
            if kind == "stripes":
                image[1] = torch.where(torch.arange(16)[None, :] % 4 < 2, 1.0, 0.2).expand(16, 16)
            elif kind == "flat":
                image[1] = 0.7
            image[1][mask] = 0.2
            self.items.append((image, label, mask))
            self.kind.append(kind)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_run_discovery_finds_one_pure_cluster_per_cue_kind():
    dataset = CueDataset()
    model = TwoChannelNet(head_weight=torch.tensor([[4.0, -4.0], [-4.0, 4.0]])).train()
    snapshot = state_snapshot(model)
    adapter = ModelAdapter(model)
    source = ImageSource(dataset, batch_size=16)
    config = AuditConfig(seed=0, progress=False).replace(**{"discovery.enabled": True, "discovery.max_clusters": 3})
    evidence = dict(importance=1.0, heat_inside=0.0, object_area=0.1, density_ratio=0.1, object_drop=0.0,
                    background_drop=0.9, heat_says_spurious=True, ablation_says_spurious=True, confirmed=True)
    verdicts = [FeatureVerdict(1, 1, "spurious", **evidence)]
    section = run_discovery(adapter, source, "train", None, None, verdicts, ["object", "cue"], config.concepts,
                            config.discovery, config.seed).section
    assert section["embedding"] == "vae" and section["pool"] == {"kind": "objects_removed", "split": "train", "n_images": 48}
    assert section["classes"][0]["n_collected"] == 0  # no cue for class 0: nothing without the object looks like it
    cue = section["classes"][1]
    assert cue["n_collected"] == 24
    kinds = np.array(dataset.kind)
    assert sum(cl["size"] for cl in cue["clusters"]) == 24
    assert all(len(set(kinds[cl["members"]])) == 1 for cl in cue["clusters"])  # every cluster is one cue kind
    assert {kinds[cl["members"][0]] for cl in cue["clusters"]} == {"flat", "stripes"}
    assert all(cl["agrees_with_audit"] and cl["exemplars"][0]["image"].startswith("data:image/png") for cl in cue["clusters"])
    assert_untouched(model, snapshot, training=True)


def test_run_discovery_clip_without_backend_is_a_config_error():
    dataset = CueDataset(8)
    adapter = ModelAdapter(TwoChannelNet(head_weight=torch.tensor([[4.0, -4.0], [-4.0, 4.0]])))
    source = ImageSource(dataset)
    config = AuditConfig(progress=False).replace(**{"discovery.embedding": "clip"})
    with pytest.raises(ConfigError, match="no CLIP backend"):
        run_discovery(adapter, source, "train", None, None, [], ["a", "b"], config.concepts, config.discovery, config.seed)


class FakeClip:
    """A stand-in CLIP: images embed as their mean (R, G, B) colour; text as the colour it names."""

    def encode_images(self, images):
        v = images.float().mean((2, 3)).numpy() + 1e-6
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def encode_text(self, prompts):
        out = np.array([[0.0, 1.0, 0.0] if "green" in p else [1.0, 0.0, 0.3] for p in prompts], np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_run_discovery_with_a_clip_backend_names_the_cue():
    dataset = CueDataset()
    adapter = ModelAdapter(TwoChannelNet(head_weight=torch.tensor([[4.0, -4.0], [-4.0, 4.0]])))
    source = ImageSource(dataset, batch_size=16)
    config = AuditConfig(seed=0, progress=False).replace(**{"concepts.n_names": 1})
    section = run_discovery(adapter, source, "train", None, FakeClip(), [], ["object", "cue"], config.concepts,
                            config.discovery, config.seed).section
    assert section["embedding"] == "clip"
    clusters = section["classes"][1]["clusters"]
    assert clusters and all(cl["concepts"] == ["green colour"] for cl in clusters)
