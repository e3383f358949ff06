"""Train (once) and cache the demo classifier on the generated world."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from auditor._io import atomic_torch_save, save_arrays_atomic
from auditor.demo.world.dataset import images_to_tensor
from auditor.demo.world.generator import WorldSpec, WorldSplit, generate_split
from auditor.demo.world.model import SmallCNN

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSpec:
    """How the demo CNN is trained (ERM, plain cross-entropy)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    width: int = 16
    seed: int = 0


def cache_root() -> Path:
    """Folder for cached worlds and models: ``$AUDITOR_CACHE_DIR`` or ``~/.cache/auditor``."""
    root = os.environ.get("AUDITOR_CACHE_DIR")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "auditor"


def model_key(world, spec, omit_defaults: tuple[str, ...] = ()) -> str:
    """Cache key of a model trained with ``spec`` (a dataclass) on ``world`` (anything with ``fingerprint()``).

    Fields named in ``omit_defaults`` are left out of the key while they hold their default, so a field added to
    a recipe later keeps the keys (and cached models) of the recipes that do not use it.
    """
    fields = dataclasses.asdict(spec)
    defaults = {f.name: f.default for f in dataclasses.fields(spec)}
    for name in omit_defaults:
        if fields[name] == defaults[name]:
            del fields[name]
    text = json.dumps([world.fingerprint(), fields], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_split(spec: WorldSpec, split: str, cache: bool = True) -> WorldSplit:
    """Generate a split, or read it from the on-disk cache when generated before."""
    path = cache_root() / "worlds" / spec.fingerprint() / f"{split}.npz"
    if cache and path.exists():
        with np.load(path) as data:
            return WorldSplit(**{k: data[k] for k in data.files}, class_names=spec.class_names)
    data = generate_split(spec, split)
    if cache:
        save_arrays_atomic(path, {f.name: getattr(data, f.name) for f in dataclasses.fields(data) if f.name != "class_names"})
    return data



def fit_erm(
    build: Callable[[], nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    flip: bool,
    shift: int = 0,
    progress: bool = False,
    name: str = "model",
) -> nn.Module:
    """Train ``build()`` by ERM (cross-entropy, AdamW, one-cycle schedule), seeded and deterministic.

    Args:
        build: makes the untrained model (called after the global seed is set, so its init is seeded).
        images: float ``(N, 3, H, W)``; labels: int64 ``(N,)``.
        epochs, batch_size, lr, weight_decay, seed: the recipe.
        flip: random horizontal flips (off where a cue's position matters, e.g. a corner tag).
        shift: random translations by up to this many pixels each way, edges replicated (0: none); a corner
            tag stays near its corner.
        progress: show a progress bar.
        name: for the log lines and the bar.

    Returns:
        The trained model in eval mode.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = int(np.ceil(len(labels) / batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for epoch in tqdm(range(epochs), desc=f"training {name}", disable=not progress):
        order = torch.randperm(len(labels), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            x = images[batch]
            if flip:
                flipped = torch.rand(len(batch), generator=generator) < 0.5
                x[flipped] = x[flipped].flip(-1)
            if shift:
                x = _random_shift(x, shift, generator)
            loss = loss_fn(model(x), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(batch)
        logger.info("%s epoch %d: train loss %.4f", name, epoch + 1, total / len(labels))
    return model.eval()


def _random_shift(x: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image of ``x`` (float ``(N, C, H, W)``) by its own random offset in ``[-shift, shift]``."""
    height, width = x.shape[-2:]
    padded = nn.functional.pad(x, (shift, shift, shift, shift), mode="replicate")
    offsets = torch.randint(0, 2 * shift + 1, (len(x), 2), generator=generator)
    return torch.stack([padded[i, :, dy : dy + height, dx : dx + width] for i, (dy, dx) in enumerate(offsets.tolist())])


def train_model(train: WorldSplit, n_classes: int, spec: TrainSpec, progress: bool = True) -> SmallCNN:
    """Train a :class:`SmallCNN` by ERM on a world split (labels as given, noise included), with random flips."""
    return fit_erm(lambda: SmallCNN(n_classes, width=spec.width), images_to_tensor(train.images), torch.from_numpy(train.labels),
                   epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, weight_decay=spec.weight_decay,
                   seed=spec.seed, flip=True, progress=progress, name="demo CNN")


def load_or_train_model(world: WorldSpec, spec: TrainSpec = TrainSpec(), progress: bool = True) -> SmallCNN:
    """Return the demo CNN for ``world``, training and caching it on first use.

    The checkpoint lives under :func:`cache_root`, keyed by both specs, so a second
    call (or a second process) loads it in milliseconds.

    Returns:
        The trained model in eval mode.
    """
    path = cache_root() / "models" / f"cnn-{model_key(world, spec)}.pt"
    model = SmallCNN(len(world.classes), width=spec.width)
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    start = time.perf_counter()
    model = train_model(load_split(world, "train"), len(world.classes), spec, progress=progress)
    logger.info("trained demo CNN in %.1fs", time.perf_counter() - start)
    atomic_torch_save(model.state_dict(), path)
    return model


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Predicted labels, int64 ``(N,)``, for uint8 ``(N, H, W, 3)`` images."""
    out = []
    for start in range(0, len(images), batch_size):
        out.append(model(images_to_tensor(images[start : start + batch_size])).argmax(1).numpy())
    return np.concatenate(out)
