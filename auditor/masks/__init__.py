"""Object-mask providers: "dataset" (the dataset's own masks), "sam" (segment-anything chosen by CLIP), "box" (SAM from boxes)."""

from auditor.masks.base import MASK_PROVIDERS, MaskProvider
from auditor.masks.dataset import DatasetMaskProvider
from auditor.masks.sam import (  # registers "sam" and "box"; SAM loads lazily
    SamBoxMaskProvider,
    SamMaskProvider,
)

__all__ = ["MASK_PROVIDERS", "DatasetMaskProvider", "MaskProvider", "SamBoxMaskProvider", "SamMaskProvider"]
