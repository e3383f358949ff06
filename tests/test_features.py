import numpy as np
import pytest
import torch

from auditor.data import ImageSource
from auditor.errors import InvalidInputError
from auditor.features import FeatureCache, class_feature_importance, extract_features, top_features
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
    cache = FeatureCache.from_arrays(np.zeros((2, 3)), np.array([[0.0, 1.0], [2.0, 0.0]]), np.array([1, 1]))
    assert cache.predictions.tolist() == [1, 0] and cache.correct.tolist() == [True, False]
