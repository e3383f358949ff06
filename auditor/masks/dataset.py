"""Masks the dataset itself provides: items ``(image, label, mask)`` or dicts with a "mask" key."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from auditor.data import ImageSource
from auditor.errors import InvalidInputError
from auditor.masks.base import MASK_PROVIDERS


@MASK_PROVIDERS.register("dataset")
class DatasetMaskProvider:
    """Reads each image's object mask from the dataset.

    Args:
        source: the ImageSource whose dataset yields masks.

    Raises:
        InvalidInputError: when the dataset yields no masks.
    """

    def __init__(self, source: ImageSource):
        if not source.has_masks:
            raise InvalidInputError(
                f"the {source.name} dataset yields no masks; return (image, label, mask) items or use `masks.provider: sam`"
            )
        self.source = source

    def masks(self, images: torch.Tensor, labels: Sequence[int], indices: Sequence[int]) -> np.ndarray:
        """bool ``(N, H, W)`` masks of the images at ``indices``."""
        _, _, masks = self.source.load(indices)
        return masks.numpy().astype(bool)
