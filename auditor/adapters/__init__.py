"""Adapters for models and datasets as practitioners have them (timm, torchvision, HF, folders, CSV)."""

from auditor.adapters.data import load_dataset, write_image_folder
from auditor.adapters.models import (
    Preprocessing,
    TorchScriptClassifier,
    guess_feature_layer,
    guess_head,
    guess_head_name,
    load_model,
    model_preprocessing,
)

__all__ = [
    "Preprocessing", "TorchScriptClassifier", "guess_feature_layer", "guess_head", "guess_head_name", "load_dataset",
    "load_model", "model_preprocessing", "write_image_folder",
]
