"""AuditContext: what every stage after the core pipeline may read."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from auditor.config import AuditConfig
from auditor.data import ImageSource
from auditor.features import FeatureCache
from auditor.model import ModelAdapter
from auditor.results import FeatureVerdict, GapEstimate


@dataclass
class AuditContext:
    """State shared by the audit's stages.

    Attributes:
        config: the resolved configuration.
        adapter: the user's model behind hooks (never modified).
        train: the training images; ``val`` the validation images (or None).
        train_cache, val_cache: cached activations/logits/labels/predictions.
        class_names: one name per head output.
        importance: float32 ``(K, D)`` mean activation x head weight.
        important_features: class -> important feature indices, most important first.
        verdicts: one per (class, important feature).
        spuriosity: split name ("train"/"val") -> float ``(N,)`` (NaN where the class has no spurious feature).
        gaps: class -> gap on the evaluation split (val when given, else train).
        work_dir: folder for caches (features, masks, embeddings).
        rng: the audit's random generator (spawn children from it, never use global RNG).
        mask_provider: the object-mask backend in use (or None).
        concept_encoder: the CLIP backend in use (or None).
        sections: extra report sections, filled by the optional stages.
    """

    config: AuditConfig
    adapter: ModelAdapter
    train: ImageSource
    val: ImageSource | None
    train_cache: FeatureCache
    val_cache: FeatureCache | None
    class_names: list[str]
    work_dir: Path
    rng: np.random.Generator
    importance: np.ndarray | None = None
    important_features: dict[int, list[int]] = field(default_factory=dict)
    verdicts: list[FeatureVerdict] = field(default_factory=list)
    spuriosity: dict[str, np.ndarray] = field(default_factory=dict)
    gaps: dict[int, GapEstimate] = field(default_factory=dict)
    mask_provider: Any = None
    concept_encoder: Any = None
    sections: dict[str, Any] = field(default_factory=dict)

    @property
    def eval_split(self) -> str:
        """"val" when validation data was given, else "train"."""
        return "val" if self.val is not None else "train"

    def source(self, split: str) -> ImageSource:
        """The ImageSource of ``split``."""
        return self.val if split == "val" and self.val is not None else self.train

    def cache(self, split: str) -> FeatureCache:
        """The FeatureCache of ``split``."""
        return self.val_cache if split == "val" and self.val_cache is not None else self.train_cache

    def spurious_features(self, class_index: int) -> list[int]:
        """Feature indices judged spurious for ``class_index``."""
        return [v.feature for v in self.verdicts if v.class_index == class_index and v.label == "spurious"]
