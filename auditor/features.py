"""Feature cache (one forward pass, memmapped on disk) and per-class feature importance.

The pass writes fixed-size shards, each committed atomically, so an interrupted pass
resumes bit-identically from the last complete shard; the cache is keyed by a
fingerprint of the weights, data, head and feature layer (:func:`cache_fingerprint`).
``engine: ray`` runs the same pass on a Ray cluster (:mod:`auditor.engines.ray_engine`).

Unreadable images (see :class:`auditor.data.SkippedImage`) keep their row in the cache
with label -1, prediction -1 and zero activations/logits; every consumer ignores rows
with label < 0 (:attr:`FeatureCache.valid`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from auditor.config import FeatureConfig
from auditor.data import ImageSource, SkippedImage, image_path
from auditor.errors import InvalidInputError, NumericalError
from auditor.model import ModelAdapter

logger = logging.getLogger(__name__)

_ARRAYS = {"activations": np.float32, "logits": np.float32, "labels": np.int64, "predictions": np.int64}
PROGRESS_EVERY = 2000
"""extract_features logs a progress line (INFO) every this many images."""


@dataclass(frozen=True)
class FeatureCache:
    """Cached outputs of one pass over a split.

    Attributes:
        activations: float32 ``(N, D)``, the head's input per image (zeros for skipped images).
        logits: float32 ``(N, K)`` (zeros for skipped images).
        labels: int64 ``(N,)``; -1 for images that could not be read.
        predictions: int64 ``(N,)``, argmax of the logits; -1 for skipped images.
        directory: where the memmaps live, or None for in-memory arrays.
        skipped: the unreadable images, by index.
    """

    activations: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    directory: Path | None = None
    skipped: tuple[SkippedImage, ...] = ()

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def valid(self) -> np.ndarray:
        """bool ``(N,)``: the row holds a readable image (label >= 0)."""
        return np.asarray(self.labels) >= 0

    @property
    def correct(self) -> np.ndarray:
        """bool ``(N,)``: prediction equals label (False for skipped rows)."""
        return (self.predictions == self.labels) & self.valid

    @classmethod
    def from_arrays(cls, activations: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> FeatureCache:
        """An in-memory cache built from arrays (predictions are the logits' argmax; -1 where label < 0)."""
        logits = np.asarray(logits, np.float32)
        labels = np.asarray(labels, np.int64)
        predictions = np.where(labels >= 0, logits.argmax(1), -1).astype(np.int64)
        return cls(np.asarray(activations, np.float32), logits, labels, predictions)


CACHE_VERSION = 3
"""Layout version of the feature cache; a cache of another version is recomputed (3: masks left out of the
data hash)."""

FINGERPRINT_SAMPLES = 16
"""Dataset items hashed (evenly spaced) into the cache's fingerprint."""

SHARD_DIR = "shards"


@dataclass(frozen=True)
class ExtractionOptions:
    """How the forward pass runs (not what it computes: results stay identical on CPU).

    Attributes:
        shard_size: images per committed shard.
        autocast: "off", "bf16" or "fp16" (torch.autocast during the forward pass).
        channels_last: run the model and the batches in channels-last memory format.
        engine: "local" (this process, DataLoader workers) or "ray" (a Ray Data pipeline).
        ray_address: Ray cluster to join ("auto", "ray://host:10001"), or None (a cluster
            already initialised in this process, else a local one).
        ray_actors: model actors in the pool (None: one per GPU, or one per CPU slot).
        shard_store: where shards are committed: None (the split's cache folder), or a shared
            path or fsspec URL (``s3://bucket/audit``, ``file:///mnt/shared/audit``, ``memory://x``),
            under which each split gets its own folder.
    """

    shard_size: int = 4096
    autocast: str = "off"
    channels_last: bool = False
    engine: str = "local"
    ray_address: str | None = None
    ray_actors: int | None = None
    shard_store: str | None = None

    @classmethod
    def from_config(cls, config: FeatureConfig | None, engine: str = "local") -> ExtractionOptions:
        """The options of a :class:`FeatureConfig` (defaults for None)."""
        if config is None:
            return cls(engine=engine)
        return cls(shard_size=config.shard_size, autocast=config.autocast, channels_last=config.channels_last,
                   engine=engine, ray_address=config.ray_address, ray_actors=config.ray_actors,
                   shard_store=config.shard_store)


def _open(directory: Path, n: int, d: int, k: int, mode: str) -> dict[str, np.memmap]:
    shapes = {"activations": (n, d), "logits": (n, k), "labels": (n,), "predictions": (n,)}
    return {name: np.lib.format.open_memmap(directory / f"{name}.npy", mode=mode, dtype=_ARRAYS[name], shape=shapes[name] if mode == "w+" else None) for name in _ARRAYS}


def _check_skipped(source: ImageSource, skipped: tuple[SkippedImage, ...], seen: int, max_fraction: float) -> None:
    n = len(source)
    if len(skipped) <= max_fraction * n:
        return
    skipped = tuple(sorted(skipped, key=lambda s: s.index))
    first = "; ".join(s.describe() for s in skipped[:5])
    so_far = f" in the first {seen}" if seen < n else ""
    raise InvalidInputError(
        f"{len(skipped)} of {n} {source.name} images could not be read{so_far} ({len(skipped) / n:.1%} of the split, more than "
        f"`data.max_skipped_fraction` = {max_fraction:g}); first: {first}. Fix or remove these files, or raise "
        "`data.max_skipped_fraction` to audit without them"
    )


# ----------------------------------------------------------------------------------------------------------------------
# Fingerprint


def weights_hash(model: torch.nn.Module) -> str:
    """A hash of the model's ``state_dict`` (names, dtypes, shapes and every byte of every tensor).

    Args:
        model: the module.

    Returns:
        A 32-character hex digest; equal for equal weights, different after any retraining.
    """
    digest = hashlib.blake2b(digest_size=16)
    for name, value in sorted(model.state_dict().items()):
        if not isinstance(value, torch.Tensor):  # extra state of custom modules
            digest.update(f"{name}|{value!r}|".encode())
            continue
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        try:
            flat = value.detach().cpu().contiguous().reshape(-1)
            digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
        except (RuntimeError, TypeError):  # quantized or other exotic tensors: hash their serialised form
            buffer = io.BytesIO()
            torch.save(value.detach().cpu(), buffer)
            digest.update(buffer.getvalue())
    return digest.hexdigest()


def data_hash(source: ImageSource, samples: int = FINGERPRINT_SAMPLES) -> str:
    """A hash of the dataset's length and of ``samples`` evenly spaced items (image bytes, label, path).

    Masks are left out: the cache holds activations, logits and predictions, none of which depends on a mask, so
    an audit that adds, drops or replaces the dataset's masks (dataset masks against SAM's) reuses the feature pass.

    Args:
        source: the images.
        samples: how many items to read and hash.

    Returns:
        A 32-character hex digest.
    """
    n = len(source)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{n}|".encode())
    for index in np.unique(np.linspace(0, n - 1, min(n, samples)).round().astype(np.int64)):
        item = source.items[int(index)]
        digest.update(f"{index}|{image_path(source.dataset, int(index))}|".encode())
        if isinstance(item, SkippedImage):
            digest.update(f"skipped|{item.reason}".encode())
            continue
        image, label, _mask, _ = item
        digest.update(f"{label}|{image.dtype}|{tuple(image.shape)}|".encode())
        digest.update(image.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_fingerprint(adapter: ModelAdapter, source: ImageSource, options: ExtractionOptions) -> dict:
    """What a feature cache is keyed by: weights, data sample, head, feature layer, shapes and numerics.

    Args:
        adapter: the model adapter.
        source: the images.
        options: the extraction options (shard size and numerics change the cache).

    Returns:
        A JSON-ready dict; a cache is reused only when its fingerprint is equal.
    """
    return {
        "version": CACHE_VERSION,
        "n": len(source),
        "d": adapter.n_features,
        "k": adapter.n_classes,
        "head": adapter.head_name,
        "feature_layer": adapter.feature_layer_name,
        "image_shape": list(source.image_shape),
        "weights": weights_hash(adapter.model),
        "data": data_hash(source),
        "shard_size": options.shard_size,
        "autocast": options.autocast,
        "channels_last": options.channels_last,
    }


_WHY = {
    "weights": "the model's weights changed (state_dict hash {old} -> {new})",
    "data": "the dataset changed (its length or sampled items differ)",
    "n": "the dataset's length changed ({old} -> {new})",
    "head": "the head changed ({old!r} -> {new!r})",
    "feature_layer": "the feature layer changed ({old!r} -> {new!r})",
    "version": "it was written by another version of auditor's cache layout",
}


def _stale_reason(old: Any, new: dict) -> str | None:
    if not isinstance(old, dict):
        return "its fingerprint is missing or unreadable"
    changed = [key for key in new if old.get(key) != new[key]]
    if not changed:
        return None
    return "; ".join(_WHY.get(key, key.replace("_", " ") + " changed ({old!r} -> {new!r})").format(old=old.get(key), new=new[key])
                     for key in changed)


# ----------------------------------------------------------------------------------------------------------------------
# Shards


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of the fixed-size shards covering ``range(n)`` (the last one shorter)."""
    return [(start, min(start + shard_size, n)) for start in range(0, n, shard_size)]


def shard_batches(start: int, stop: int, batch_size: int) -> list[np.ndarray]:
    """The forward-pass batches of one shard: never across a shard boundary, so a resumed pass runs the same batches."""
    return [np.arange(b, min(b + batch_size, stop), dtype=np.int64) for b in range(start, stop, batch_size)]


def shard_location(directory: str | Path, store: str | None = None) -> str:
    """Where a split's shards are committed: ``<directory>/shards``, or ``<store>/<split folder>/shards``.

    Args:
        directory: the split's local cache folder.
        store: a shared path or fsspec URL (None: the cache folder itself).
    """
    if not store:
        return str(Path(directory) / SHARD_DIR)
    return f"{str(store).rstrip('/')}/{Path(directory).name}/{SHARD_DIR}"


def _filesystem(location: str):
    """``(fsspec filesystem, path)`` of a shard location; plain paths are local files."""
    import fsspec

    return fsspec.core.url_to_fs(location)


def _is_local(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


def shard_path(location: str | Path, shard: int) -> str:
    """The committed file of shard number ``shard`` under a shard location (see :func:`shard_location`).

    A local cache folder (one holding ``shards/`` or not yet) is accepted too, for its default location.
    """
    location = str(location)
    if "://" not in location and Path(location).name != SHARD_DIR:
        location = shard_location(location)
    return f"{location.rstrip('/')}/shard-{shard:06d}.npz"


def commit_shard(location: str | Path, shard: int, arrays: dict[str, np.ndarray], skipped: list[SkippedImage]) -> str:
    """Write one complete shard atomically: a temporary file, then a rename into place.

    A reader sees either no shard or the whole shard, whatever moment the writer dies at;
    committing the same shard twice (a retried task) leaves one identical file. Local files
    are fsynced before the rename; other fsspec stores get the file whole, then a move.

    Args:
        location: the split's shard location (:func:`shard_location`; a path or fsspec URL).
        shard: shard number.
        arrays: ``indices`` (int64 ``(S,)``, the image indices covered), ``activations``
            float32 ``(S, D)``, ``logits`` float32 ``(S, K)``, ``labels`` and ``predictions`` int64 ``(S,)``.
        skipped: the unreadable images of the shard.

    Returns:
        The committed file's path.
    """
    final = shard_path(location, shard)
    fs, final_path = _filesystem(final)
    folder = final_path.rsplit("/", 1)[0]
    fs.makedirs(folder, exist_ok=True)
    temporary = f"{folder}/.shard-{shard:06d}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    buffer = io.BytesIO()
    np.savez(buffer, skipped=np.array(json.dumps([s.to_dict() for s in skipped])), **arrays)
    try:
        if _is_local(fs):
            with open(temporary, "wb") as handle:
                handle.write(buffer.getvalue())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final_path)
        else:
            fs.pipe_file(temporary, buffer.getvalue())
            fs.mv(temporary, final_path)
    finally:
        if fs.exists(temporary):
            fs.rm(temporary)
    return final


def _read_shard(path: str, start: int, stop: int, d: int, k: int) -> dict[str, Any] | None:
    """A committed shard's arrays, or None when the file does not hold exactly rows ``start..stop``."""
    try:
        fs, where = _filesystem(path)
        with np.load(io.BytesIO(fs.cat_file(where)), allow_pickle=False) as data:
            shard = {name: data[name] for name in ("indices", *_ARRAYS)}
            skipped = [SkippedImage.from_dict(s) for s in json.loads(str(data["skipped"]))]
    except Exception as error:  # truncated or foreign file: recompute it
        logger.warning("ignoring unreadable feature shard %s (%s); it will be recomputed", path, error)
        return None
    m = stop - start
    if (not np.array_equal(shard["indices"], np.arange(start, stop)) or shard["activations"].shape != (m, d)
            or shard["logits"].shape != (m, k)):
        logger.warning("ignoring feature shard %s: it does not cover images %d..%d with %d features", path, start, stop - 1, d)
        return None
    shard["skipped"] = skipped
    return shard


def committed_shards(location: str | Path, ranges: list[tuple[int, int]], d: int, k: int) -> dict[int, list[SkippedImage]]:
    """Shard number -> its skipped images, for every complete shard in ``location`` (temporary files are removed)."""
    location = str(location)
    if "://" not in location and Path(location).name != SHARD_DIR:
        location = shard_location(location)
    fs, folder = _filesystem(location)
    done: dict[int, list[SkippedImage]] = {}
    if not fs.isdir(folder):
        return done
    for leftover in fs.glob(f"{folder}/.*.tmp"):
        fs.rm(leftover)  # a writer died mid-shard; never read
    for shard, (start, stop) in enumerate(ranges):
        path = shard_path(location, shard)
        if fs.exists(_filesystem(path)[1]):
            record = _read_shard(path, start, stop, d, k)
            if record is None:
                fs.rm(_filesystem(path)[1])
            else:
                done[shard] = record["skipped"]
    return done


def _remove_shards(location: str) -> None:
    fs, folder = _filesystem(location)
    if fs.exists(folder):
        fs.rm(folder, recursive=True)


class ShardBuilder:
    """Collects one shard's batches (in any order, each at most once) and commits it when every batch is in.

    Validates each batch as it arrives (label range, finite outputs) so errors name the images.
    """

    def __init__(self, location: str | Path, shard: int, start: int, stop: int, d: int, k: int, n_batches: int,
                 source_name: str, head_name: str):
        m = stop - start
        self.location, self.shard, self.start, self.stop = location, shard, start, stop
        self.arrays = {"indices": np.arange(start, stop, dtype=np.int64), "activations": np.zeros((m, d), np.float32),
                       "logits": np.zeros((m, k), np.float32), "labels": np.full(m, -1, np.int64),
                       "predictions": np.full(m, -1, np.int64)}
        self.k, self.source_name, self.head_name = k, source_name, head_name
        self.pending = n_batches
        self.seen_batches: set[int] = set()
        self.skipped: dict[int, SkippedImage] = {}

    def add(self, batch: int, kept: np.ndarray, features: np.ndarray, logits: np.ndarray, labels: np.ndarray,
            skipped: list[SkippedImage]) -> bool:
        """Add batch number ``batch``; a batch already added (a retried task's duplicate) is ignored.

        Returns:
            True when the shard is complete (then call :meth:`commit`).

        Raises:
            InvalidInputError: a label outside ``[0, K)``.
            NumericalError: NaN or inf features or logits.
        """
        if batch in self.seen_batches:
            return False
        check_batch(kept, features, logits, labels, self.k, self.source_name, self.head_name)
        rows = np.asarray(kept, np.int64) - self.start
        self.arrays["activations"][rows] = features
        self.arrays["logits"][rows] = logits
        self.arrays["labels"][rows] = labels
        self.arrays["predictions"][rows] = logits.argmax(1) if len(rows) else []
        for item in skipped:
            self.skipped[item.index] = item
        self.seen_batches.add(batch)
        self.pending -= 1
        return self.pending == 0

    def commit(self) -> list[SkippedImage]:
        """Commit the shard atomically; returns its skipped images."""
        skipped = [self.skipped[i] for i in sorted(self.skipped)]
        commit_shard(self.location, self.shard, self.arrays, skipped)
        return skipped


def check_batch(kept: np.ndarray, features: np.ndarray, logits: np.ndarray, labels: np.ndarray, k: int,
                source_name: str, head_name: str) -> None:
    """Raise on labels outside the head's range or non-finite outputs, naming the images.

    Raises:
        InvalidInputError: a label outside ``[0, k)``.
        NumericalError: NaN or inf in ``features`` or ``logits``.
    """
    bad = (labels < 0) | (labels >= k)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidInputError(
            f"{source_name} image {kept[i]} has label {int(labels[i])}, outside the head's range 0..{k - 1} "
            f"(head {head_name!r} has {k} outputs); labels must be class indices of the model's output: "
            "check the dataset's label mapping, or `model.head` if that layer is not the classifier"
        )
    broken = ~(np.isfinite(features).all(1) & np.isfinite(logits).all(1))
    if broken.any():
        rows = [int(kept[i]) for i in np.flatnonzero(broken)[:5]]
        raise NumericalError(
            f"the model produced NaN or inf activations/logits for {int(broken.sum())} {source_name} images "
            f"(first: {rows}); check the input normalisation (`data.mean`/`data.std`) and the model's weights"
        )


# ----------------------------------------------------------------------------------------------------------------------
# The forward pass


_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@contextlib.contextmanager
def forward_settings(adapter: ModelAdapter, options: ExtractionOptions) -> Iterator[None]:
    """Channels-last weights (restored afterwards) for the duration, when asked for."""
    if not options.channels_last:
        yield
        return
    adapter.model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        adapter.model.to(memory_format=torch.contiguous_format)


def forward_batch(adapter: ModelAdapter, images: torch.Tensor, options: ExtractionOptions) -> tuple[np.ndarray, np.ndarray]:
    """Features float32 ``(n, D)`` and logits float32 ``(n, K)`` of one batch, with the options' numerics.

    The copy to the device is non-blocking (the batch is pinned on CUDA); autocast and
    channels-last apply only when the options ask for them.
    """
    device = adapter.device
    images = images.to(device, non_blocking=device.type == "cuda")
    if options.channels_last and images.ndim == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    if options.autocast != "off":
        with torch.autocast(device_type=device.type, dtype=_AUTOCAST[options.autocast]):
            out = adapter.forward(images, check_finite=False)
    else:
        out = adapter.forward(images, check_finite=False)
    return out.features.float().cpu().numpy(), out.logits.float().cpu().numpy()


class _Progress:
    """One bar over every split's images (shards done / total, images/s, time left) plus INFO log lines."""

    def __init__(self, bar: Any, name: str, n: int, n_shards: int, done_shards: int, done_images: int, n_skipped: int):
        self.bar, self.name, self.n, self.n_shards = bar, name, n, n_shards
        self.shards, self.images, self.skipped = done_shards, done_images, n_skipped
        self.started, self.start_images = time.perf_counter(), done_images
        self.next_log = (done_images // PROGRESS_EVERY + 1) * PROGRESS_EVERY
        if bar is not None:
            bar.update(done_images)
            self._postfix()

    def _postfix(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.name} shards {self.shards}/{self.n_shards}", refresh=False)

    def images_done(self, count: int, n_skipped: int) -> None:
        self.images += count
        self.skipped = n_skipped
        if self.bar is not None:
            self.bar.update(count)
        if self.next_log <= self.images < self.n:  # the last line comes from extract_features, with every shard done
            self.log()
            self.next_log = (self.images // PROGRESS_EVERY + 1) * PROGRESS_EVERY

    def shard_done(self) -> None:
        self.shards += 1
        self._postfix()

    def log(self) -> None:
        seconds = max(time.perf_counter() - self.started, 1e-9)
        logger.info("features (%s): %d/%d images, %.1f images/s, %d skipped, %d/%d shards", self.name, self.images, self.n,
                    (self.images - self.start_images) / seconds, self.skipped, self.shards, self.n_shards)


def _extract_local(adapter: ModelAdapter, source: ImageSource, location: str, ranges: list[tuple[int, int]],
                   pending: list[int], options: ExtractionOptions, skipped_so_far: dict[int, SkippedImage],
                   covered_so_far: int, max_skipped_fraction: float, progress: _Progress) -> None:
    """Compute and commit the ``pending`` shards in this process (DataLoader workers read the images)."""
    d, k = adapter.n_features, adapter.n_classes
    plan = []  # (shard, batch number, indices)
    for shard in pending:
        for number, batch in enumerate(shard_batches(*ranges[shard], source.batch_size)):
            plan.append((shard, number, batch))
    builders: dict[int, ShardBuilder] = {}
    covered = covered_so_far
    pin = adapter.device.type == "cuda"
    with forward_settings(adapter, options):
        batches = source.index_batches([p[2] for p in plan], pin_memory=pin)
        for (shard, number, _), (batch, kept, images, labels, _masks, batch_skipped) in zip(plan, batches):
            if shard not in builders:
                start, stop = ranges[shard]
                builders[shard] = ShardBuilder(location, shard, start, stop, d, k, len(shard_batches(start, stop, source.batch_size)),
                                               source.name, adapter.head_name)
            for item in batch_skipped:
                skipped_so_far[item.index] = item
            if images is None:
                features, logits = np.zeros((0, d), np.float32), np.zeros((0, k), np.float32)
                labels_np = np.zeros(0, np.int64)
            else:
                labels_np = labels.numpy()
                check_batch(kept, np.zeros((len(kept), 0)), np.zeros((len(kept), 0)), labels_np, k, source.name, adapter.head_name)
                features, logits = forward_batch(adapter, images, options)
            complete = builders[shard].add(number, kept, features, logits, labels_np, batch_skipped)
            covered += len(batch)
            _check_skipped(source, tuple(skipped_so_far.values()), covered, max_skipped_fraction)  # stop as soon as it is certain
            progress.images_done(len(batch), len(skipped_so_far))
            if complete:
                builders.pop(shard).commit()
                progress.shard_done()


def _consolidate(directory: Path, location: str, ranges: list[tuple[int, int]], n: int, d: int, k: int) -> None:
    """Copy every shard of ``location``, in order, into the split's memmaps in ``directory`` (one shard in memory at a time)."""
    arrays = _open(directory, n, d, k, "w+")
    for shard, (start, stop) in enumerate(ranges):
        record = _read_shard(shard_path(location, shard), start, stop, d, k)
        if record is None:
            raise RuntimeError(f"feature shard {shard} of {directory} vanished or broke during the pass; run the audit again")
        for name in _ARRAYS:
            arrays[name][start:stop] = record[name]
    for array in arrays.values():
        array.flush()
    del arrays


def _write_json(path: Path, data: dict) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    with open(temporary, "w") as handle:
        handle.write(json.dumps(data))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _clear(directory: Path, location: str) -> None:
    (directory / "complete.json").unlink(missing_ok=True)
    (directory / "fingerprint.json").unlink(missing_ok=True)
    _remove_shards(location)


def extract_features(
    adapter: ModelAdapter,
    source: ImageSource,
    directory: str | Path,
    progress: bool = True,
    max_skipped_fraction: float = 0.01,
    *,
    options: ExtractionOptions | None = None,
    bar: Any = None,
) -> FeatureCache:
    """One forward pass over ``source`` in committed shards, then activations, logits, labels, predictions as memmaps.

    The pass writes fixed-size shards (``options.shard_size`` images: their indices,
    activations, logits, labels, predictions and unreadable images), each committed
    atomically (temporary file, fsync, rename) once complete. An interrupted pass (even
    ``kill -9``) resumes from the committed shards, and since batches never straddle a
    shard the result is bit-identical to an uninterrupted pass; a half-written shard is a
    temporary file that is never read. When every shard is in, they are copied into the
    ``.npy`` memmaps and ``complete.json`` (which records the skipped images) is written.

    The cache is keyed by :func:`cache_fingerprint` (a hash of the weights, the dataset's
    length and a sample of its items, head, feature layer, shard size, numerics); a cache
    written by anything else is recomputed, with a WARNING saying what changed.

    Unreadable images are skipped (label and prediction -1, zero activations and logits);
    when more than ``max_skipped_fraction`` of the split is unreadable the pass stops as
    soon as that is certain. A progress line is logged every ``PROGRESS_EVERY`` images.

    Args:
        adapter: the model adapter.
        source: the images.
        directory: folder for the ``.npy`` memmaps and, unless ``options.shard_store`` names a
            shared path or fsspec URL, the shards (created if needed).
        progress: show a progress bar (when ``bar`` is None).
        max_skipped_fraction: largest share of unreadable images tolerated (0 = none).
        options: shard size, numerics and engine (defaults: :class:`ExtractionOptions`).
        bar: a tqdm bar shared across splits (:func:`run_features` passes one), or None.

    Returns:
        A :class:`FeatureCache` backed by read-only memmaps, with ``skipped`` filled in.

    Raises:
        InvalidInputError: a label outside the head's range ``[0, K)``; too many unreadable
            images (names the first few); images of different sizes in a batch.
        NumericalError: NaN or inf activations or logits (names the images).
        MissingDependencyError: ``options.engine == "ray"`` without Ray installed.
    """
    options = options or ExtractionOptions()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    n, d, k = len(source), adapter.n_features, adapter.n_classes
    fingerprint = cache_fingerprint(adapter, source, options)
    stored_path, done = directory / "fingerprint.json", directory / "complete.json"
    location = shard_location(directory, options.shard_store)
    if stored_path.exists() or done.exists() or _filesystem(location)[0].exists(_filesystem(location)[1]):
        try:
            stored = json.loads(stored_path.read_text())
        except (OSError, ValueError):
            stored = None
        why = _stale_reason(stored, fingerprint)
        if why:
            logger.warning("feature cache in %s is stale and is recomputed: %s", directory, why)
            _clear(directory, location)
    if done.exists():
        try:
            record = json.loads(done.read_text())
        except ValueError:
            record = {}
        if isinstance(record, dict) and record.get("fingerprint") == fingerprint:
            skipped = tuple(SkippedImage.from_dict(s) for s in record.get("skipped", []))
            logger.info("reusing cached features in %s (%d skipped images)", directory, len(skipped))
            source.record_skipped(skipped)
            _check_skipped(source, skipped, n, max_skipped_fraction)
            if bar is not None:
                bar.update(n)
            return FeatureCache(**_open(directory, n, d, k, "r"), directory=directory, skipped=skipped)
        done.unlink(missing_ok=True)
    if not stored_path.exists():
        _write_json(stored_path, fingerprint)
    ranges = shard_ranges(n, options.shard_size)
    committed = committed_shards(location, ranges, d, k)
    skipped_so_far = {s.index: s for items in committed.values() for s in items}
    source.record_skipped(skipped_so_far.values())
    covered = sum(ranges[s][1] - ranges[s][0] for s in committed)
    pending = [s for s in range(len(ranges)) if s not in committed]
    if committed:
        logger.info("resuming feature extraction in %s: %d of %d shards already committed", location, len(committed), len(ranges))
    _check_skipped(source, tuple(skipped_so_far.values()), covered, max_skipped_fraction)
    own_bar = bar is None
    if own_bar:
        bar = tqdm(total=n, desc="features", unit="img", disable=not progress)
    try:
        tracker = _Progress(bar, source.name, n, len(ranges), len(committed), covered, len(skipped_so_far))
        if pending:
            if options.engine == "ray":
                from auditor.engines.ray_engine import extract_shards_ray

                extract_shards_ray(adapter, source, location, ranges, pending, options, skipped_so_far, covered,
                                   max_skipped_fraction, tracker)
            else:
                _extract_local(adapter, source, location, ranges, pending, options, skipped_so_far, covered,
                               max_skipped_fraction, tracker)
        tracker.log()
    finally:
        if own_bar:
            bar.close()
    skipped = tuple(skipped_so_far[i] for i in sorted(skipped_so_far))
    source.record_skipped(skipped)
    _check_skipped(source, skipped, n, max_skipped_fraction)
    _consolidate(directory, location, ranges, n, d, k)
    _write_json(done, {"fingerprint": fingerprint, "skipped": [s.to_dict() for s in skipped]})
    _remove_shards(location)
    return FeatureCache(**_open(directory, n, d, k, "r"), directory=directory, skipped=skipped)


def class_feature_importance(activations: np.ndarray, labels: np.ndarray, head_weight: np.ndarray) -> np.ndarray:
    """Contribution of each feature to each class's logit: mean activation over the class x head weight.

    Rows with label < 0 (unreadable images) are ignored.

    Args:
        activations: float ``(N, D)``.
        labels: int ``(N,)`` in ``[0, K)``, or -1 for rows to ignore.
        head_weight: float ``(K, D)``.

    Returns:
        float32 ``(K, D)``; rows of classes with no image are zero.

    Raises:
        InvalidInputError: ``activations`` and ``head_weight`` disagree on D.

    Example:
        >>> class_feature_importance(np.array([[1., 0.], [0., 2.]]), np.array([0, 1]), np.eye(2)).tolist()
        [[1.0, 0.0], [0.0, 2.0]]
    """
    head_weight = np.asarray(head_weight, np.float32)
    labels = np.asarray(labels)
    k, d = head_weight.shape
    if activations.shape[1] != d:
        raise InvalidInputError(
            f"activations have {activations.shape[1]} features but the head expects {d}; the activations must be the "
            "input of the same head (`model.head`)"
        )
    importance = np.zeros((k, d), np.float32)
    for c in range(k):
        members = labels == c  # label -1 (skipped) matches no class
        if members.any():
            importance[c] = np.asarray(activations[members], np.float64).mean(0) * head_weight[c]
    return importance


def top_features(importance: np.ndarray, top_k: int) -> dict[int, list[int]]:
    """Per class, the ``top_k`` features with the largest positive contribution (fewer if fewer are positive).

    Args:
        importance: float ``(K, D)`` from :func:`class_feature_importance`.
        top_k: how many features per class at most.

    Returns:
        ``{class: [feature, ...]}``, largest contribution first.
    """
    result = {}
    for c, row in enumerate(importance):
        order = np.argsort(-row, kind="stable")[:top_k]
        result[c] = [int(i) for i in order if row[i] > 0]
    return result


@dataclass(frozen=True)
class FeatureResult:
    """Output of :func:`run_features`.

    Attributes:
        caches: split -> :class:`FeatureCache` ("train", and "val" when given).
        importance: float32 ``(K, D)`` mean activation x head weight on the training split.
        important_features: class -> important features, most important first (usable classes only).
        skipped_classes: class name -> why it was skipped (too few readable training images).
    """

    caches: dict[str, FeatureCache]
    importance: np.ndarray
    important_features: dict[int, list[int]]
    skipped_classes: dict[str, str]


def run_features(
    adapter: ModelAdapter,
    sources: dict[str, ImageSource],
    class_names: list[str],
    config: FeatureConfig,
    work_dir: str | Path,
    *,
    min_images: int,
    max_skipped_fraction: float = 0.01,
    progress: bool = True,
    engine: str = "local",
) -> FeatureResult:
    """The feature stage: one cached pass over every split, then each class's important features.

    Args:
        adapter: the audited model's adapter.
        sources: split -> ImageSource.
        class_names: one per head output (for the skipped-class record).
        config: ``top_k`` features per class; shard size, autocast, channels-last and Ray options.
        work_dir: the caches go to ``work_dir/"features"/<split>`` (reused when complete and matching).
        min_images: classes with fewer readable training images are skipped (logged and recorded).
        max_skipped_fraction: share of unreadable images tolerated per split.
        progress: show one progress bar over every split.
        engine: "local" or "ray" (the top-level ``engine`` key).

    Returns:
        A :class:`FeatureResult`.

    Raises:
        InvalidInputError, NumericalError: see :func:`extract_features`.
    """
    options = ExtractionOptions.from_config(config, engine)
    with tqdm(total=sum(len(s) for s in sources.values()), desc="features", unit="img", disable=not progress) as bar:
        caches = {
            split: extract_features(adapter, source, Path(work_dir) / "features" / split, progress=progress,
                                    max_skipped_fraction=max_skipped_fraction, options=options, bar=bar)
            for split, source in sources.items()
        }
    train = caches["train"]
    importance = class_feature_importance(train.activations, train.labels, adapter.head_weight().numpy())
    labels = np.asarray(train.labels)
    counts = np.bincount(labels[labels >= 0], minlength=adapter.n_classes)
    skipped: dict[str, str] = {}
    for c in np.flatnonzero(counts < min_images):
        skipped[class_names[c]] = (f"{counts[c]} training images; at least {min_images} are needed (2 x gaps.min_k); "
                                   "add images to the class or lower `gaps.min_k`")
        logger.warning("skipping class %r: %s", class_names[c], skipped[class_names[c]])
    ranked = top_features(importance, config.top_k)
    important = {c: ranked[c] for c in range(adapter.n_classes) if class_names[c] not in skipped}
    return FeatureResult(caches=caches, importance=importance, important_features=important, skipped_classes=skipped)
