"""Load image datasets as they come: ImageFolder, a folder plus a CSV of labels, HF datasets on disk.

``load_dataset(spec)`` returns a map-style torch ``Dataset`` yielding ``(image, label)``
or ``(image, label, mask)`` (the layout :class:`auditor.data.ImageSource` reads) and the
class names. Masks are optional and sit beside the images: a folder mirroring the image
folder's relative paths (any image extension, matched by file stem; non-zero = object),
or a mask column of a Hugging Face dataset.

Spec forms (a string is a path whose kind is detected; a dict names it):

* ``"data/train"``: a torchvision ``ImageFolder`` (one sub-folder per class) or a Hugging
  Face dataset saved with ``save_to_disk`` (detected by its ``dataset_info.json`` /
  ``dataset_dict.json``).
* ``{"type": "imagefolder", "path": ..., "masks": <folder>, "classes": [...]}``: class
  index i is the i-th folder in ``classes`` (default: folder names sorted, as torchvision's
  ImageFolder does; list them when the model was trained with another order).
* ``{"type": "csv", "images": <folder>, "csv": <file>, "image_column": "image",
  "label_column": "label", "masks": <folder>, "class_names": [...]}``
* ``{"type": "hf", "path": <folder>, "split": "train", "image_column": "image",
  "label_column": "label", "mask_column": None}``
"""

from __future__ import annotations

import csv
import difflib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from auditor.errors import InvalidInputError, MissingDependencyError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DATASET_TYPES = ("imagefolder", "csv", "hf")
_KEYS = {
    "imagefolder": {"type", "path", "masks", "classes"},
    "csv": {"type", "images", "csv", "image_column", "label_column", "masks", "class_names"},
    "hf": {"type", "path", "split", "image_column", "label_column", "mask_column", "class_names"},
}

Transform = Callable[[Image.Image], torch.Tensor]


def _default_transform(image: Image.Image) -> torch.Tensor:
    import torchvision.transforms.functional as F

    return F.to_tensor(image.convert("RGB"))


def _mask_follow(transform: Transform, mask: Image.Image, image: torch.Tensor) -> torch.Tensor:
    """The mask under the same geometry: the transform's own ``mask`` method, else a nearest resize."""
    follow = getattr(transform, "mask", None)
    if callable(follow):
        return follow(mask)
    resized = mask.convert("L").resize((image.shape[-1], image.shape[-2]), Image.NEAREST)
    return torch.from_numpy(np.asarray(resized) > 0)


def _find_mask(masks_dir: Path | None, relative: Path) -> Path | None:
    if masks_dir is None:
        return None
    folder = masks_dir / relative.parent
    for ext in (".png", *IMAGE_EXTENSIONS):
        candidate = folder / f"{relative.stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


class FileImageDataset(Dataset):
    """Images on disk with integer labels and optional masks beside them.

    Args:
        root: folder the image paths are relative to.
        files: image paths relative to ``root``.
        labels: one class index per file.
        transform: PIL image -> float tensor ``(C, H, W)`` (``ToTensor`` when None).
        masks_dir: folder mirroring ``root`` with one mask per image, or None.

    Raises:
        InvalidInputError: a masks folder lacking the first image's mask.
    """

    def __init__(self, root: Path, files: list[Path], labels: list[int], transform: Transform | None = None, masks_dir: Path | None = None):
        self.root = Path(root)
        self.files = list(files)
        self.labels = [int(v) for v in labels]
        self.transform = transform or _default_transform
        self.masks_dir = None if masks_dir is None else Path(masks_dir)
        if self.masks_dir is not None:
            if not self.masks_dir.is_dir():
                raise InvalidInputError(f"masks folder {str(self.masks_dir)!r} does not exist")
            missing = [f for f in self.files if _find_mask(self.masks_dir, f) is None]
            if missing:
                raise InvalidInputError(
                    f"{len(missing)} of {len(self.files)} images have no mask in {str(self.masks_dir)!r} "
                    f"(first: {str(missing[0])!r}); masks must mirror the image paths (same sub-folder and file stem)"
                )

    def __len__(self) -> int:
        return len(self.files)

    def image_path(self, index: int) -> str:
        """The file of item ``index`` (used to name unreadable or odd-sized images in messages)."""
        return str(self.root / self.files[index])

    def __getitem__(self, index: int):
        relative = self.files[index]
        with Image.open(self.root / relative) as raw:
            image = self.transform(raw.convert("RGB"))
        label = self.labels[index]
        if self.masks_dir is None:
            return image, label
        with Image.open(_find_mask(self.masks_dir, relative)) as raw_mask:
            mask = _mask_follow(self.transform, raw_mask, image)
        return image, label, mask


def _image_files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _imagefolder(spec: dict, transform: Transform | None) -> tuple[Dataset, list[str]]:
    root = Path(spec["path"]).expanduser()
    if not root.is_dir():
        raise InvalidInputError(f"image folder {str(root)!r} does not exist")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes = list(spec.get("classes") or found)
    missing = [name for name in classes if name not in found]
    if missing:
        raise InvalidInputError(f"`classes` names folders {missing[:5]} that are not in {str(root)!r} (found: {found[:10]})")
    files, labels = [], []
    for index, name in enumerate(classes):
        found = _image_files(root / name)
        files += [Path(name) / f for f in found]
        labels += [index] * len(found)
    if not files:
        raise InvalidInputError(
            f"image folder {str(root)!r} has no images ({', '.join(IMAGE_EXTENSIONS)}) in class sub-folders "
            f"(found sub-folders: {classes[:10]}); expected <folder>/<class name>/<image>"
        )
    empty = [name for name in classes if not any(f.parts[0] == name for f in files)]
    if empty:
        logger.warning("class folders without images in %s: %s", root, empty)
    masks = spec.get("masks")
    return FileImageDataset(root, files, labels, transform, Path(masks).expanduser() if masks else None), classes


def _csv(spec: dict, transform: Transform | None) -> tuple[Dataset, list[str]]:
    for key in ("images", "csv"):
        if not spec.get(key):
            raise InvalidInputError(f"a 'csv' dataset needs `{key}`; got keys {sorted(spec)}")
    root, table = Path(spec["images"]).expanduser(), Path(spec["csv"]).expanduser()
    if not root.is_dir():
        raise InvalidInputError(f"image folder {str(root)!r} does not exist")
    if not table.is_file():
        raise InvalidInputError(f"labels CSV {str(table)!r} does not exist")
    image_column, label_column = spec.get("image_column", "image"), spec.get("label_column", "label")
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise InvalidInputError(f"labels CSV {str(table)!r} has no rows")
    for column in (image_column, label_column):
        if column not in rows[0]:
            raise InvalidInputError(f"labels CSV {str(table)!r} has no column {column!r}; columns: {list(rows[0])}")
    raw = [row[label_column].strip() for row in rows]
    class_names = spec.get("class_names")
    if all(v.lstrip("-").isdigit() for v in raw):
        labels = [int(v) for v in raw]
        class_names = list(class_names) if class_names else [str(i) for i in range(max(labels) + 1)]
    else:
        class_names = list(class_names) if class_names else sorted(set(raw))
        unknown = sorted(set(raw) - set(class_names))
        if unknown:
            raise InvalidInputError(f"labels {unknown[:5]} in {str(table)!r} are not in `class_names` {class_names}")
        labels = [class_names.index(v) for v in raw]
    files = [Path(row[image_column]) for row in rows]
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        raise InvalidInputError(f"{len(missing)} images listed in {str(table)!r} are not in {str(root)!r} (first: {str(missing[0])!r})")
    masks = spec.get("masks")
    return FileImageDataset(root, files, labels, transform, Path(masks).expanduser() if masks else None), class_names


class HFImageDataset(Dataset):
    """A Hugging Face ``datasets.Dataset`` with image/label (and optional mask) columns as torch items.

    Args:
        dataset: the HF dataset.
        image_column, label_column: column names.
        mask_column: column of masks (PIL images or arrays), or None.
        transform: PIL image -> tensor (``ToTensor`` when None).
    """

    def __init__(self, dataset: Any, image_column: str, label_column: str, mask_column: str | None, transform: Transform | None):
        self.dataset = dataset
        self.image_column, self.label_column, self.mask_column = image_column, label_column, mask_column
        self.transform = transform or _default_transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        row = self.dataset[int(index)]
        image = row[self.image_column]
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image, dtype=np.uint8))
        tensor = self.transform(image.convert("RGB"))
        label = int(row[self.label_column])
        if self.mask_column is None:
            return tensor, label
        mask = row[self.mask_column]
        if not isinstance(mask, Image.Image):
            mask = Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255)
        return tensor, label, _mask_follow(self.transform, mask, tensor)


def _hf(spec: dict, transform: Transform | None) -> tuple[Dataset, list[str]]:
    try:
        import datasets
    except ImportError:
        raise MissingDependencyError("Hugging Face datasets need the datasets package; install it with `pip install datasets`") from None
    path = Path(spec["path"]).expanduser()
    if not path.is_dir():
        raise InvalidInputError(f"Hugging Face dataset folder {str(path)!r} does not exist (save one with `Dataset.save_to_disk`)")
    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as error:
        raise InvalidInputError(f"{str(path)!r} is not a dataset saved with `save_to_disk`: {error}") from None
    if isinstance(loaded, datasets.DatasetDict):
        split = spec.get("split") or ("train" if "train" in loaded else next(iter(loaded)))
        if split not in loaded:
            raise InvalidInputError(f"split {split!r} is not in {str(path)!r}; splits: {list(loaded)}")
        loaded = loaded[split]
    columns = loaded.column_names
    image_column, label_column = spec.get("image_column", "image"), spec.get("label_column", "label")
    mask_column = spec.get("mask_column")
    for column in (image_column, label_column, mask_column):
        if column is not None and column not in columns:
            hint = difflib.get_close_matches(column, columns, n=1)
            raise InvalidInputError(
                f"Hugging Face dataset {str(path)!r} has no column {column!r}; columns: {columns}."
                + (f" Did you mean {hint[0]!r}?" if hint else "")
            )
    if len(loaded) == 0:
        raise InvalidInputError(f"Hugging Face dataset {str(path)!r} has no rows")
    feature = loaded.features[label_column]
    class_names = spec.get("class_names") or getattr(feature, "names", None)
    if not class_names:
        labels = np.asarray(loaded[label_column])
        class_names = [str(i) for i in range(int(labels.max()) + 1)]
    return HFImageDataset(loaded, image_column, label_column, mask_column, transform), list(class_names)


def _detect(path: Path) -> str:
    if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return "hf"
    return "imagefolder"


def load_dataset(spec: str | Path | dict, transform: Transform | None = None) -> tuple[Dataset, list[str]]:
    """Open an image dataset from disk as a torch Dataset with its class names.

    Args:
        spec: a folder path (ImageFolder or a saved HF dataset, detected) or a dict with
            ``type`` ("imagefolder", "csv", "hf") and that type's keys (module docstring).
        transform: PIL image -> float tensor ``(C, H, W)``; ``ToTensor()`` when None.
            A transform with a ``mask(pil) -> bool (H, W)`` method (such as
            :class:`auditor.adapters.models.Preprocessing`) also moves the masks; other
            transforms get masks resized to the image tensor's size.

    Returns:
        ``(dataset, class_names)``: items ``(image, label)`` or ``(image, label, mask)``.

    Raises:
        InvalidInputError: missing folder or file, no images, unknown key or type, labels
            not in ``class_names``, images without masks.
        MissingDependencyError: HF datasets without the ``datasets`` package.

    Example:
        >>> dataset, classes = load_dataset({"type": "imagefolder", "path": "data/val"})  # doctest: +SKIP
    """
    if isinstance(spec, (str, Path)):
        path = Path(spec).expanduser()
        if not path.exists():
            raise InvalidInputError(f"dataset path {str(path)!r} does not exist")
        if path.is_file():
            raise InvalidInputError(
                f"dataset path {str(path)!r} is a file; give an image folder, a saved HF dataset folder, "
                "or a mapping {type: csv, images: <folder>, csv: <file>}"
            )
        spec = {"type": _detect(path), "path": str(path)}
    if not isinstance(spec, dict):
        raise InvalidInputError(f"dataset spec must be a path or a mapping; got {type(spec).__name__}")
    kind = spec.get("type") or ("csv" if "csv" in spec else None) or (_detect(Path(spec["path"])) if spec.get("path") else None)
    if kind not in DATASET_TYPES:
        raise InvalidInputError(f"dataset `type` must be one of {list(DATASET_TYPES)}; got {kind!r}")
    unknown = sorted(set(spec) - _KEYS[kind])
    if unknown:
        hint = difflib.get_close_matches(unknown[0], sorted(_KEYS[kind]), n=1)
        raise InvalidInputError(
            f"unknown key {unknown[0]!r} in a {kind!r} dataset spec; allowed keys: {sorted(_KEYS[kind])}."
            + (f" Did you mean {hint[0]!r}?" if hint else "")
        )
    if kind in ("imagefolder", "hf") and not spec.get("path"):
        raise InvalidInputError(f"a {kind!r} dataset needs `path`")
    loader = {"imagefolder": _imagefolder, "csv": _csv, "hf": _hf}[kind]
    dataset, class_names = loader(spec, transform)
    logger.info("dataset %s: %d images, %d classes", spec.get("path") or spec.get("images"), len(dataset), len(class_names))
    return dataset, class_names


def write_image_folder(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    root: str | Path,
    masks: np.ndarray | None = None,
    masks_root: str | Path | None = None,
) -> Path:
    """Save images as an ImageFolder (``root/<class>/<i>.png``) with optional masks beside them.

    Useful to try the CLI on generated data (``auditor.demo.world``) or to export a dataset.

    Args:
        images: uint8 ``(N, H, W, 3)``.
        labels: int ``(N,)`` class indices.
        class_names: one folder name per class.
        root: the ImageFolder root (created).
        masks: bool ``(N, H, W)`` object masks, or None.
        masks_root: where the masks go, mirroring ``root`` (``<root>_masks`` when None).

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    masks_dir = Path(masks_root) if masks_root is not None else root.with_name(root.name + "_masks")
    for name in class_names:
        (root / name).mkdir(parents=True, exist_ok=True)
        if masks is not None:
            (masks_dir / name).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        relative = Path(class_names[int(label)]) / f"{i:05d}.png"
        Image.fromarray(np.asarray(image, np.uint8)).save(root / relative)
        if masks is not None:
            Image.fromarray(np.asarray(masks[i], bool).astype(np.uint8) * 255).save(masks_dir / relative)
    return root
