"""ImageSource: a validated, index-addressable view of the user's dataset.

The user's dataset yields ``(image, label)``, ``(image, label, mask)`` or a dict with
``image``/``label`` (and optionally ``mask``) keys. Images are passed to the model
exactly as yielded; ``unit_images`` converts them to RGB in [0, 1] for CLIP, SAM and
the report.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from auditor.errors import InvalidInputError

logger = logging.getLogger(__name__)


def _split_item(item: Any, index: int) -> tuple[torch.Tensor, int, torch.Tensor | None]:
    if isinstance(item, dict):
        if "image" not in item or "label" not in item:
            raise InvalidInputError(
                f"dataset item {index} is a dict with keys {sorted(item)}; expected 'image' and 'label' (and optionally 'mask')"
            )
        image, label, mask = item["image"], item["label"], item.get("mask")
    elif isinstance(item, (tuple, list)) and len(item) in (2, 3):
        image, label = item[0], item[1]
        mask = item[2] if len(item) == 3 else None
    else:
        raise InvalidInputError(
            f"dataset item {index} is {type(item).__name__}; expected (image, label), (image, label, mask) or a dict"
        )
    if not isinstance(image, torch.Tensor):
        raise InvalidInputError(
            f"dataset item {index}: image is {type(image).__name__}; expected a torch.Tensor (C, H, W). "
            "Add a transform such as torchvision.transforms.ToTensor() to the dataset."
        )
    if image.ndim != 3:
        raise InvalidInputError(f"dataset item {index}: image has shape {tuple(image.shape)}; expected (C, H, W)")
    label = int(label.item() if isinstance(label, torch.Tensor) else label)
    if mask is not None:
        mask = torch.as_tensor(np.asarray(mask)).squeeze()
        if mask.shape != image.shape[-2:]:
            raise InvalidInputError(
                f"dataset item {index}: mask has shape {tuple(mask.shape)} but the image is {tuple(image.shape[-2:])}; "
                "masks must match the image's height and width"
            )
        mask = mask.bool()
    return image, label, mask


def _collate(items: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    images = torch.stack([i[0] for i in items])
    labels = torch.tensor([i[1] for i in items], dtype=torch.long)
    masks = None if items[0][2] is None else torch.stack([i[2] for i in items])
    return images, labels, masks


class _Normalised(Dataset):
    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return _split_item(self.dataset[index], index)


class ImageSource:
    """Index-addressable access to images, labels and (optional) masks of a dataset.

    Args:
        dataset: a map-style torch Dataset.
        batch_size: images per batch when iterating.
        num_workers: DataLoader workers.
        mean: per-channel mean the images were normalised with (None: already in [0, 1]).
        std: per-channel std matching ``mean``.
        name: "train" or "val", used in messages.

    Raises:
        InvalidInputError: empty dataset, no ``__len__``, malformed first item.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int = 64,
        num_workers: int = 0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        name: str = "train",
    ):
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise InvalidInputError(f"the {name} dataset must be a map-style Dataset with __len__ and __getitem__")
        if len(dataset) == 0:
            raise InvalidInputError(f"the {name} dataset is empty; an audit needs labelled images")
        self.dataset = dataset
        self.name = name
        self.batch_size = batch_size
        self.num_workers = num_workers
        first_image, _, first_mask = _split_item(dataset[0], 0)
        self.has_masks = first_mask is not None
        self.image_shape = tuple(first_image.shape)
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self._labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self, indices: Sequence[int] | None = None) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """Yield ``(indices, images, labels, masks)`` batches in dataset order (no shuffling)."""
        indices = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        subset = Subset(_Normalised(self.dataset), indices.tolist())
        loader = DataLoader(subset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers, collate_fn=_collate)
        start = 0
        for images, labels, masks in loader:
            yield indices[start : start + len(labels)], images, labels, masks
            start += len(labels)

    def load(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Images ``(n, C, H, W)``, labels ``(n,)`` and masks ``(n, H, W)`` or None, for ``indices``."""
        items = [_split_item(self.dataset[int(i)], int(i)) for i in indices]
        return _collate(items)

    def unit_images(self, images: torch.Tensor) -> torch.Tensor:
        """Convert model-ready images to RGB float in [0, 1] (undoing normalisation; grey -> RGB)."""
        images = images.float()
        if self.mean is not None:
            images = images * self.std.to(images.device) + self.mean.to(images.device)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return images.clamp(0, 1)
