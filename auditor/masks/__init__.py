"""Object-mask providers: "dataset" (the dataset's own masks), "sam" (segment-anything)."""

from auditor.masks.base import MASK_PROVIDERS, MaskProvider
from auditor.masks.dataset import DatasetMaskProvider

__all__ = ["MASK_PROVIDERS", "MaskProvider", "DatasetMaskProvider"]
