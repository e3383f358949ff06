import numpy as np
import pytest
import torch

from auditor.data import ImageSource
from auditor.errors import InvalidInputError, NumericalError
from auditor.features import (
    FeatureCache,
    class_feature_importance,
    extract_features,
    top_features,
)
from auditor.model import ModelAdapter
from tests.conftest import PlantedDataset, TwoChannelNet


def test_importance_is_mean_activation_times_head_weight():
    activations = np.array([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0]])
    labels = np.array([0, 0, 1])
    weight = np.array([[1.0, -1.0], [0.5, 2.0]])
    importance = class_feature_importance(activations, labels, weight)
    assert np.allclose(importance, [[2.0, -3.0], [5.0, 0.0]])
    assert top_features(importance, 5) == {0: [0], 1: [0]}


def test_top_features_orders_and_truncates():
    importance = np.array([[0.1, 0.5, 0.3, -1.0]])
    assert top_features(importance, 2) == {0: [1, 2]}


def test_extract_features_writes_memmaps_and_reuses_them(tmp_path):
    source = ImageSource(PlantedDataset(n=10), batch_size=4)
    adapter = ModelAdapter(TwoChannelNet())
    cache = extract_features(adapter, source, tmp_path, progress=False)
    assert isinstance(cache.activations, np.memmap) and cache.activations.shape == (10, 2)
    assert (tmp_path / "activations.npy").exists() and (tmp_path / "complete.json").exists()
    images, _, _ = source.load(range(10))
    assert np.allclose(cache.activations, adapter.forward(images).features.numpy(), atol=1e-6)
    assert (cache.predictions == cache.logits.argmax(1)).all()
    mtime = (tmp_path / "activations.npy").stat().st_mtime_ns
    again = extract_features(adapter, source, tmp_path, progress=False)
    assert (tmp_path / "activations.npy").stat().st_mtime_ns == mtime
    assert np.array_equal(again.activations, cache.activations)


def test_label_outside_head_range_is_rejected(tmp_path):
    dataset = PlantedDataset(n=6)
    dataset.labels[3] = 7
    with pytest.raises(InvalidInputError, match="label 7, outside the head's range 0..1"):
        extract_features(ModelAdapter(TwoChannelNet()), ImageSource(dataset), tmp_path, progress=False)


def test_from_arrays():
    cache = FeatureCache.from_arrays(np.zeros((3, 3)), np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 0.0]]), np.array([1, 1, -1]))
    assert cache.predictions.tolist() == [1, 0, -1] and cache.correct.tolist() == [True, False, False]
    assert cache.valid.tolist() == [True, True, False]


def test_importance_ignores_skipped_rows():
    activations = np.array([[1.0, 2.0], [100.0, 100.0], [3.0, 4.0]])
    importance = class_feature_importance(activations, np.array([0, -1, 0]), np.eye(2))
    assert np.allclose(importance, [[2.0, 0.0], [0.0, 0.0]])  # row 1 (label -1) counts for no class


class Unreadable(torch.utils.data.Dataset):
    """PlantedDataset whose items in ``bad`` raise like a corrupt file does."""

    def __init__(self, n: int, bad: set[int]):
        self.inner, self.bad = PlantedDataset(n=n, with_masks=False), bad
        self.samples = [(f"img/{i:03d}.png", 0) for i in range(n)]  # torchvision ImageFolder layout

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        if i in self.bad:
            raise OSError(f"image file is truncated ({i})")
        return self.inner[i]


def test_skipped_images_get_label_minus_one_and_are_remembered_by_the_cache(tmp_path, caplog):
    caplog.set_level("INFO", logger="auditor.features")
    source = ImageSource(Unreadable(20, {3, 17}), batch_size=8)
    adapter = ModelAdapter(TwoChannelNet())
    cache = extract_features(adapter, source, tmp_path, progress=False, max_skipped_fraction=0.1)
    assert [(s.index, s.path) for s in cache.skipped] == [(3, "img/003.png"), (17, "img/017.png")]
    assert cache.labels[[3, 17]].tolist() == [-1, -1] and cache.predictions[[3, 17]].tolist() == [-1, -1]
    assert not cache.activations[[3, 17]].any() and not cache.logits[[3, 17]].any()
    assert (cache.labels[cache.valid] == 0).all() and cache.valid.sum() == 18
    images, _, _ = source.load([0, 4, 16])
    assert np.allclose(cache.activations[[0, 4, 16]], adapter.forward(images).features.numpy(), atol=1e-6)
    assert "20/20 images" in caplog.text and "images/s, 2 skipped" in caplog.text

    fresh = ImageSource(Unreadable(20, {3, 17}), batch_size=8)
    again = extract_features(adapter, fresh, tmp_path, progress=False, max_skipped_fraction=0.1)
    assert again.skipped == cache.skipped and fresh.skipped == cache.skipped  # a reused cache still reports them
    with pytest.raises(InvalidInputError, match="cannot be read and was skipped"):
        fresh.load([17])


def test_one_unreadable_image_in_a_hundred_is_tolerated_by_default_two_are_not(tmp_path):
    adapter = ModelAdapter(TwoChannelNet())
    cache = extract_features(adapter, ImageSource(Unreadable(100, {50}), batch_size=50), tmp_path / "one", progress=False)
    assert [s.index for s in cache.skipped] == [50]
    with pytest.raises(InvalidInputError) as info:
        extract_features(adapter, ImageSource(Unreadable(100, {5, 60}), batch_size=50), tmp_path / "three", progress=False)
    message = str(info.value)
    assert "2 of 100 train images could not be read (2.0% of the split" in message
    assert "'img/005.png'" in message and "OSError: image file is truncated (5)" in message
    assert "`data.max_skipped_fraction` = 0.01" in message and "raise `data.max_skipped_fraction`" in message
    assert not (tmp_path / "three" / "complete.json").exists()


def test_too_many_unreadable_images_stop_the_pass_early(tmp_path):
    dataset = Unreadable(40, {0, 1, 2, 3, 4, 5})
    with pytest.raises(InvalidInputError, match=r"6 of 40 train images could not be read in the first 8 .*image 0 \('img/000.png'\)"):
        extract_features(ModelAdapter(TwoChannelNet()), ImageSource(dataset, batch_size=8), tmp_path, progress=False,
                         max_skipped_fraction=0.1)


def test_nan_activations_name_the_images(tmp_path):
    dataset = PlantedDataset(n=6, with_masks=False)
    dataset.images[4] = torch.full_like(dataset.images[4], float("nan"))
    with pytest.raises(NumericalError, match=r"for 1 train images \(first: \[4\]\).*`data.mean`"):
        extract_features(ModelAdapter(TwoChannelNet()), ImageSource(dataset), tmp_path, progress=False)
