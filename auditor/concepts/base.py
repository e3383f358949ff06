"""ConceptEncoder interface and registry (CLIP-like text and image encoders)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from auditor._registry import Registry


class ConceptEncoder(Protocol):
    """Embeds text prompts and images in one space.

    ``encode_text(prompts) -> float32 (P, E)`` and ``encode_images(images) -> float32 (N, E)``,
    both L2-normalised; images are float ``(N, 3, H, W)`` in [0, 1].
    """

    def encode_text(self, prompts: Sequence[str]) -> np.ndarray: ...

    def encode_images(self, images: torch.Tensor) -> np.ndarray: ...


CONCEPT_ENCODERS: Registry[ConceptEncoder] = Registry("concept encoder")
