"""ImageSource: a validated, index-addressable view of the user's dataset.

The user's dataset yields ``(image, label)``, ``(image, label, mask)`` or a dict with
``image``/``label`` (and optionally ``mask``) keys. Images are passed to the model
exactly as yielded; ``unit_images`` converts them to RGB in [0, 1] for CLIP, SAM and
the report.

An item the dataset cannot produce (a corrupt, zero-byte or unreadable image file: any
exception raised by ``dataset[i]``) is skipped, logged with its index and path, and
recorded as a :class:`SkippedImage`; :func:`auditor.features.extract_features` counts
them and stops when too many are unreadable. A malformed item (wrong type or shape) is
still an error: it is the dataset's layout, not one bad file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from auditor.errors import InvalidInputError

logger = logging.getLogger(__name__)

_FIRST_ITEM_TRIES = 16
"""How many leading items ImageSource tries before concluding the dataset is unreadable."""


@dataclass(frozen=True)
class SkippedImage:
    """One dataset item that could not be read and was left out of the audit.

    Attributes:
        index: position in the dataset.
        path: the image file, when the dataset records it (torchvision ImageFolder,
            auditor's folder/CSV datasets), else None.
        reason: the exception, as ``"TypeName: message"``.
    """

    index: int
    path: str | None
    reason: str

    def to_dict(self) -> dict:
        """``{"index", "path", "reason"}`` (JSON-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SkippedImage:
        """Inverse of :meth:`to_dict`."""
        return cls(int(data["index"]), data.get("path"), str(data.get("reason", "")))

    def describe(self) -> str:
        """``"image 3 ('cat/3.png'): OSError: ..."`` for messages."""
        where = f" ({self.path!r})" if self.path else ""
        return f"image {self.index}{where}: {self.reason}"


def image_path(dataset: Any, index: int) -> str | None:
    """The file behind ``dataset[index]`` where the dataset records it, else None.

    Understands ``torch.utils.data.Subset``, datasets with an ``image_path(index)``
    method (auditor's own), and torchvision's ``samples`` / ``imgs`` lists.

    Args:
        dataset: a map-style dataset.
        index: an index into it.

    Returns:
        The path as a string, or None.
    """
    try:
        if isinstance(dataset, Subset):
            return image_path(dataset.dataset, int(dataset.indices[index]))
        method = getattr(dataset, "image_path", None)
        if callable(method):
            return str(method(index))
        for attribute in ("samples", "imgs"):
            entries = getattr(dataset, attribute, None)
            if isinstance(entries, (list, tuple)) and 0 <= index < len(entries):
                entry = entries[index]
                return str(entry[0] if isinstance(entry, (tuple, list)) else entry)
    except Exception:  # a path is a courtesy for messages; never fail on it
        return None
    return None


AUTO_WORKERS_MAX = 8
"""``num_workers="auto"`` never starts more DataLoader workers than this."""


def resolve_num_workers(num_workers: int | str, n_items: int, batch_size: int) -> int:
    """DataLoader workers for ``num_workers`` (an int, or "auto").

    "auto" keeps one core for the main process (the model) and gives the rest to image
    loading, at most :data:`AUTO_WORKERS_MAX`; a dataset of at most two batches is read
    in the main process (starting workers would cost more than it saves).

    Args:
        num_workers: workers, or "auto".
        n_items: the dataset's length.
        batch_size: images per batch.

    Returns:
        A worker count >= 0.

    Raises:
        InvalidInputError: a negative count or an unknown string.
    """
    if num_workers == "auto":
        if n_items <= 2 * batch_size:
            return 0
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # macOS, Windows
            cores = os.cpu_count() or 1
        return max(0, min(cores - 1, AUTO_WORKERS_MAX))
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise InvalidInputError(f"num_workers must be a count >= 0 or 'auto'; got {num_workers!r}")
    return num_workers


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


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
        raise InvalidInputError(
            f"dataset item {index}: image has shape {tuple(image.shape)}; expected (C, H, W). "
            "Return one image per item (add a channel axis to grey images with image.unsqueeze(0))"
        )
    label = int(label.item() if isinstance(label, torch.Tensor) else label)
    if mask is not None:
        mask = torch.as_tensor(np.asarray(mask)).squeeze()
        if mask.shape != image.shape[-2:]:
            raise InvalidInputError(
                f"dataset item {index}: mask has shape {tuple(mask.shape)} but the image is {tuple(image.shape[-2:])}; "
                "masks must match the image's height and width: resize the mask with the same geometry as the image "
                "in the dataset's transform (nearest neighbour)"
            )
        mask = mask.bool()
    return image, label, mask


def _size(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


class _Normalised(Dataset):
    """Dataset items as ``(image, label, mask, index)``; an item the dataset fails to produce becomes a SkippedImage."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            item = self.dataset[index]
        except Exception as error:  # corrupt / zero-byte / unreadable file, or any per-item failure
            return SkippedImage(int(index), image_path(self.dataset, int(index)), _reason(error))
        image, label, mask = _split_item(item, index)
        return image, label, mask, int(index)


class _Collate:
    """Stack readable items into a batch and set the skipped ones aside; name the file when sizes differ."""

    def __init__(self, dataset: Dataset, name: str):
        self.dataset = dataset
        self.name = name
        self.reference: tuple[int, tuple[int, ...]] | None = None  # (index, shape) every image must match

    def __call__(self, items: list) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None, np.ndarray, list[SkippedImage]]:
        skipped = [i for i in items if isinstance(i, SkippedImage)]
        kept = [i for i in items if not isinstance(i, SkippedImage)]
        if not kept:
            return None, torch.zeros(0, dtype=torch.long), None, np.zeros(0, np.int64), skipped
        first = kept[0]
        ref_index, ref_shape = self.reference or (first[3], tuple(first[0].shape))
        for item in kept:
            if tuple(item[0].shape) != ref_shape:
                raise InvalidInputError(
                    f"{self.name} {self._where(item[3])} is {_size(item[0].shape)} (C x H x W) but {self._where(ref_index)} "
                    f"is {_size(ref_shape)}; images must all have one size. Set `data.image_size` "
                    "(CLI: --image-size) to resize and centre-crop every image, or resize them in the dataset's transform"
                )
            if (item[2] is None) != (first[2] is None):
                raise InvalidInputError(
                    f"{self.name} {self._where(item[3] if item[2] is None else first[3])} has no mask but other images do; "
                    "give every image a mask or none"
                )
        images = torch.stack([i[0] for i in kept])
        labels = torch.tensor([i[1] for i in kept], dtype=torch.long)
        masks = None if first[2] is None else torch.stack([i[2] for i in kept])
        return images, labels, masks, np.array([i[3] for i in kept], np.int64), skipped

    def _where(self, index: int) -> str:
        path = image_path(self.dataset, index)
        return f"image {index} ({path!r})" if path else f"image {index}"


class ImageSource:
    """Index-addressable access to images, labels and (optional) masks of a dataset.

    Items the dataset fails to produce are skipped (see :attr:`skipped`), never fatal here;
    :func:`auditor.features.extract_features` decides when too many are.

    Args:
        dataset: a map-style torch Dataset.
        batch_size: images per batch when iterating.
        num_workers: DataLoader workers, or "auto" (see :func:`resolve_num_workers`).
        mean: per-channel mean the images were normalised with (None: already in [0, 1]).
        std: per-channel std matching ``mean``.
        name: "train" or "val", used in messages.

    Raises:
        InvalidInputError: empty dataset, no ``__len__``, malformed first item, or none of
            the first items readable.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int = 64,
        num_workers: int | str = 0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        name: str = "train",
    ):
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise InvalidInputError(
                f"the {name} dataset ({type(dataset).__name__}) must be a map-style Dataset with __len__ and __getitem__; "
                "wrap an iterable dataset in a list-backed Dataset"
            )
        if len(dataset) == 0:
            raise InvalidInputError(
                f"the {name} dataset ({type(dataset).__name__}) is empty (len 0); an audit needs labelled images: "
                "check the dataset's path and filters"
            )
        self.dataset = dataset
        self.name = name
        self.batch_size = batch_size
        self.num_workers = resolve_num_workers(num_workers, len(dataset), batch_size)
        self._skipped: dict[int, SkippedImage] = {}
        self._normalised = _Normalised(dataset)
        self._collate = _Collate(dataset, name)
        first = self._first_readable()
        self._collate.reference = (first[3], tuple(first[0].shape))
        self.has_masks = first[2] is not None
        self.image_shape = tuple(first[0].shape)
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def _first_readable(self):
        tries = min(len(self.dataset), _FIRST_ITEM_TRIES)
        for index in range(tries):
            item = self._normalised[index]
            if not isinstance(item, SkippedImage):
                return item
            self._note(item)
        failures = "; ".join(s.describe() for s in self.skipped[:3])
        raise InvalidInputError(
            f"none of the first {tries} {self.name} images can be read ({failures}); check the files and the "
            "dataset's transform"
        )

    def _note(self, skipped: SkippedImage) -> None:
        if skipped.index not in self._skipped:
            logger.warning("skipping unreadable %s %s", self.name, skipped.describe())
        self._skipped[skipped.index] = skipped

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def items(self) -> Dataset:
        """The dataset as a picklable view whose item ``i`` is ``(image, label, mask, i)`` (image a float tensor of
        :attr:`image_shape`, mask a bool tensor or None) or a :class:`SkippedImage` when the dataset fails on it."""
        return self._normalised

    @property
    def collate_fn(self) -> Callable[[list], tuple]:
        """Picklable batch builder for :attr:`items`: ``items -> (images | None, labels, masks | None, kept indices,
        skipped)``; raises InvalidInputError naming the file when an image's size differs from the first one's."""
        return self._collate

    @property
    def skipped(self) -> tuple[SkippedImage, ...]:
        """The unreadable items met so far (by :meth:`batches`, :meth:`load` or recorded), by index."""
        return tuple(self._skipped[i] for i in sorted(self._skipped))

    def record_skipped(self, skipped: Iterable[SkippedImage]) -> None:
        """Remember items known to be unreadable (e.g. from a reused feature cache)."""
        for item in skipped:
            self._skipped[int(item.index)] = item

    def batches(self, indices: Sequence[int] | None = None) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """Yield ``(indices, images, labels, masks)`` batches in dataset order (no shuffling).

        Unreadable items are left out (logged and added to :attr:`skipped`), so a batch
        can be shorter than ``batch_size``; use the yielded ``indices`` (int64 ``(n,)``),
        not a running count, to place results. Batches with no readable item are not yielded.

        Raises:
            InvalidInputError: an image whose size differs from the first image's (names the file and both sizes).
        """
        indices = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        subset = Subset(self._normalised, indices.tolist())
        workers = self.num_workers if len(indices) > 2 * self.batch_size else 0  # starting workers costs more than a few images
        loader = DataLoader(subset, batch_size=self.batch_size, shuffle=False, num_workers=workers, collate_fn=self._collate)
        for images, labels, masks, kept, skipped in loader:
            for item in skipped:
                self._note(item)
            if len(kept):
                yield kept, images, labels, masks

    def index_batches(
        self, batches: Sequence[Sequence[int]], pin_memory: bool = False
    ) -> Iterator[tuple[np.ndarray, np.ndarray, torch.Tensor | None, torch.Tensor, torch.Tensor | None, list[SkippedImage]]]:
        """Yield one ``(covered, kept, images, labels, masks, skipped)`` per given batch, in order.

        Unlike :meth:`batches`, the caller chooses each batch's indices (so batches can
        follow shard boundaries) and every batch is yielded, even one whose items are all
        unreadable (then ``images`` is None): ``covered`` (int64) is the batch's indices,
        ``kept`` (int64) the readable ones, in the order of the rows of ``images``, and
        ``skipped`` the batch's unreadable items (also logged and added to :attr:`skipped`).

        Args:
            batches: lists of dataset indices.
            pin_memory: page-lock the batches (faster, non-blocking copies to CUDA).

        Raises:
            InvalidInputError: an image whose size differs from the first image's.
        """
        batches = [np.asarray(b, np.int64) for b in batches]
        loader = DataLoader(self._normalised, batch_sampler=[b.tolist() for b in batches], num_workers=self.num_workers,
                            collate_fn=self._collate, pin_memory=pin_memory)
        for covered, (images, labels, masks, kept, skipped) in zip(batches, loader):
            for item in skipped:
                self._note(item)
            yield covered, kept, images, labels, masks, skipped

    def load(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Images ``(n, C, H, W)``, labels ``(n,)`` and masks ``(n, H, W)`` or None, for ``indices``.

        Raises:
            InvalidInputError: an index whose image is unreadable (skipped), or images of different sizes.
        """
        items = []
        for i in indices:
            i = int(i)
            item = self._skipped.get(i) or self._normalised[i]
            if isinstance(item, SkippedImage):
                self._note(item)
                raise InvalidInputError(
                    f"{self.name} {item.describe()} cannot be read and was skipped; leave rows with label < 0 "
                    "(unreadable images) out before loading images"
                )
            items.append(item)
        images, labels, masks, _, _ = self._collate(items)
        return images, labels, masks

    def unit_images(self, images: torch.Tensor) -> torch.Tensor:
        """Convert model-ready images to RGB float in [0, 1] (undoing normalisation; grey -> RGB)."""
        images = images.float()
        if self.mean is not None:
            images = images * self.std.to(images.device) + self.mean.to(images.device)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return images.clamp(0, 1)
