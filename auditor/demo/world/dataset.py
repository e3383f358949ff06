"""Torch datasets over a generated :class:`~auditor.demo.world.generator.WorldSplit`."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from auditor.demo.world.generator import WorldSplit


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` images -> float32 ``(N, 3, H, W)`` in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)


class WorldDataset(Dataset):
    """Yields ``(image, label)`` or ``(image, label, mask)`` from a world split.

    Images are float32 ``(3, H, W)`` in [0, 1]; masks are bool ``(H, W)``.

    Args:
        split: the generated split.
        with_masks: also yield the ground-truth object mask.
    """

    def __init__(self, split: WorldSplit, with_masks: bool = True):
        self.split = split
        self.with_masks = with_masks

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        image = torch.from_numpy(self.split.images[index]).permute(2, 0, 1).float().div_(255.0)
        label = int(self.split.labels[index])
        if self.with_masks:
            return image, label, torch.from_numpy(np.ascontiguousarray(self.split.masks[index]))
        return image, label
