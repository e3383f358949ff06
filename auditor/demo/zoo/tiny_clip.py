"""A tiny CLIP trained on captioned images of the generated world, through open_clip.

The architecture is an ordinary open_clip model config (a JSON file registered with
``open_clip.add_model_config``); training uses open_clip's own ``ClipLoss``; the saved
checkpoint is a plain state_dict loaded back with
``open_clip.create_model_and_transforms(name, pretrained=<file>)``, the same call a
user makes with real weights.

Run ``python -m auditor.demo.zoo.tiny_clip`` to (re)train the demo-size model (64 px), or
``--test`` for the small configuration the tests use.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from auditor._io import atomic_torch_save
from auditor.demo.world.dataset import images_to_tensor
from auditor.demo.world.generator import COLOURS, CUES, WorldSplit
from auditor.demo.world.train import load_split
from auditor.demo.zoo._common import (
    pretraining_world,
    spec_key,
    training_session,
    zoo_dir,
)
from auditor.errors import MissingDependencyError

logger = logging.getLogger(__name__)

# Phrases naming each attribute; the prompt YAML files use the same words.
CUE_PHRASES = {
    "stripes": ["striped background", "stripes", "a striped pattern", "diagonal stripes"],
    "tree": ["a small tree", "a tree", "a green tree"],
    "warm": ["warm orange light", "warm light", "orange light", "a warm colour cast"],
}
PLAIN_PHRASES = ["plain background", "a plain grey background"]
TEMPLATES = ["a photo of {}", "a photo with {}", "an image with {}", "{}"]


@dataclass(frozen=True)
class TinyClipSpec:
    """Architecture and training of a tiny CLIP (equal specs give the same cached model).

    Args:
        image_size: input side in pixels (the audited dataset's image size).
        patch_size: ViT patch side.
        width: transformer width of both towers.
        layers: transformer layers of both towers.
        embed_dim: joint embedding size.
        context_length: text tokens.
        n_images: captioned images generated for training.
        steps: optimiser steps (fixed, not a time budget, so runs are reproducible).
        batch_size: images per step.
        lr: AdamW learning rate.
        seed: seed of the world and of the training.
        shape_captions: fraction of captions naming only the object ("a photo of a circle"); None
            samples full captions half the time and one partial caption otherwise.
    """

    image_size: int = 64
    patch_size: int = 8
    width: int = 64
    layers: int = 2
    embed_dim: int = 64
    context_length: int = 16
    n_images: int = 12000
    steps: int = 1500
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    shape_captions: float | None = None


TEST_SPEC = TinyClipSpec(image_size=32, n_images=2400, steps=300, batch_size=64)
"""A faster configuration for tests (32 px, 300 steps)."""


def _open_clip():
    try:
        import open_clip
    except ImportError as error:
        raise MissingDependencyError(
            f"the tiny CLIP needs open_clip ({error}); install it with `pip install open_clip_torch`"
        ) from None
    return open_clip


def tiny_clip_name(spec: TinyClipSpec = TinyClipSpec()) -> str:
    """The open_clip model name of ``spec``'s architecture, e.g. ``"auditor-tiny-clip-64-<hash>"``."""
    arch = {k: v for k, v in asdict(spec).items() if k in ("image_size", "patch_size", "width", "layers", "embed_dim", "context_length")}
    return f"auditor-tiny-clip-{spec.image_size}-{spec_key(_ArchKey(**arch))}"


@dataclass(frozen=True)
class _ArchKey:
    image_size: int
    patch_size: int
    width: int
    layers: int
    embed_dim: int
    context_length: int


def model_config(spec: TinyClipSpec) -> dict:
    """The open_clip JSON model config of ``spec`` (ViT image tower, transformer text tower)."""
    return {
        "embed_dim": spec.embed_dim,
        "vision_cfg": {
            "image_size": spec.image_size,
            "patch_size": spec.patch_size,
            "layers": spec.layers,
            "width": spec.width,
            "head_width": 32,
            "mlp_ratio": 2.0,
        },
        "text_cfg": {
            "context_length": spec.context_length,
            "vocab_size": 49408,
            "width": spec.width,
            "heads": 2,
            "layers": spec.layers,
        },
    }


def register_tiny_clip_config(spec: TinyClipSpec = TinyClipSpec(), folder: Path | None = None) -> str:
    """Write ``spec``'s model config as JSON and register it with ``open_clip.add_model_config``.

    Args:
        spec: the architecture.
        folder: where the JSON goes (``zoo_dir()/"open_clip_configs"`` by default).

    Returns:
        The model name to pass to ``open_clip.create_model_and_transforms``.
    """
    open_clip = _open_clip()
    name = tiny_clip_name(spec)
    folder = Path(folder) if folder is not None else zoo_dir() / "open_clip_configs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    text = json.dumps(model_config(spec), indent=2)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    if name not in open_clip.list_models():
        open_clip.add_model_config(path)
    return name


def build_tiny_clip(spec: TinyClipSpec = TinyClipSpec()):
    """A randomly initialised tiny CLIP (``open_clip.CLIP``) of ``spec``'s architecture."""
    open_clip = _open_clip()
    return open_clip.create_model(register_tiny_clip_config(spec))


def caption_variants(split: WorldSplit, i: int) -> list[str]:
    """Captions describing image ``i``: the full caption plus partial ones naming one attribute each.

    Args:
        split: a generated world split.
        i: image index.

    Returns:
        Captions; the first is ``split.caption(i)``.
    """
    colour = list(COLOURS)[split.colours[i]]
    shape = split.class_names[split.true_labels[i]]
    variants = [split.caption(i), f"a photo of a {shape}", f"a {colour} {shape}", f"a {colour} object", f"a photo of a {colour} {shape}"]
    flags = dict(zip(CUES, split.cues[i]))
    for cue, present in flags.items():
        if present:
            variants += [t.format(p) for p in CUE_PHRASES[cue] for t in TEMPLATES]
    if not flags["stripes"]:
        variants += [t.format(p) for p in PLAIN_PHRASES for t in TEMPLATES[:2]]
    present = [CUE_PHRASES[c][0] for c, on in flags.items() if on]
    if present:
        variants.append(f"a {shape} with " + " and ".join(present))
    return variants


def _sample_captions(split: WorldSplit, indices: np.ndarray, rng: np.random.Generator, shape_captions: float | None = None) -> list[str]:
    captions = []
    for i in indices:
        variants = caption_variants(split, int(i))
        if shape_captions and rng.random() < shape_captions:
            captions.append(variants[1 + rng.integers(4)])  # the object-only captions
            continue
        # Half the time the full caption, else one partial caption.
        captions.append(variants[0] if rng.random() < 0.5 else variants[1 + rng.integers(len(variants) - 1)])
    return captions


def _normalise(images: torch.Tensor, model) -> torch.Tensor:
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))).view(1, 3, 1, 1)
    std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711))).view(1, 3, 1, 1)
    return (images - mean) / std



def train_tiny_clip(spec: TinyClipSpec = TinyClipSpec(), *, progress: bool = True, num_threads: int | None = 1):
    """Train a tiny CLIP with open_clip's ``ClipLoss`` on captioned pre-training images.

    Args:
        spec: architecture and training parameters.
        progress: show a progress bar.
        num_threads: torch threads during training (restored afterwards; None leaves them).

    Returns:
        ``(model, tokenizer)``, the model in eval mode.
    """
    open_clip = _open_clip()
    name = register_tiny_clip_config(spec)
    world = pretraining_world(spec.image_size, spec.n_images, spec.seed + 1000)
    split = load_split(world, "train")
    images = images_to_tensor(split.images)
    rng = np.random.default_rng(spec.seed)
    tokenizer = open_clip.get_tokenizer(name)
    with training_session(spec.seed, num_threads):
        model = open_clip.create_model(name)
        loss_fn = open_clip.ClipLoss()
        optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.1)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=spec.lr, total_steps=spec.steps, pct_start=0.1)
        model.train()
        for _ in tqdm(range(spec.steps), desc="training tiny CLIP", disable=not progress):
            batch = rng.choice(len(split), size=min(spec.batch_size, len(split)), replace=False)
            pixels = images[batch]
            flip = torch.from_numpy(rng.random(len(batch)) < 0.5)
            pixels[flip] = pixels[flip].flip(-1)
            texts = tokenizer(_sample_captions(split, batch, rng, spec.shape_captions))
            image_features = model.encode_image(_normalise(pixels, model), normalize=True)
            text_features = model.encode_text(texts, normalize=True)
            loss = loss_fn(image_features, text_features, model.logit_scale.exp())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, np.log(100))
    model.eval()
    return model, tokenizer


@torch.no_grad()
def evaluate_tiny_clip(model, tokenizer, split: WorldSplit, batch_size: int = 256) -> dict[str, float]:
    """Zero-shot quality of a CLIP on a world split.

    Args:
        model: an open_clip model.
        tokenizer: its tokenizer.
        split: held-out images.
        batch_size: images per forward pass.

    Returns:
        ``shape_accuracy`` (prompt "a photo of a {shape}", among the world's shapes),
        ``colour_accuracy`` ("a {colour} object"), and for each cue ``<cue>_auc`` (ROC AUC of the
        similarity to "a photo with {cue phrase}" for images with vs without the cue) and
        ``<cue>_precision_at_50`` (fraction of the 50 most similar images that carry the cue).
    """
    from sklearn.metrics import roc_auc_score

    images = images_to_tensor(split.images)
    feats = torch.cat([model.encode_image(_normalise(images[i : i + batch_size], model), normalize=True) for i in range(0, len(images), batch_size)])

    def text(prompts):
        return model.encode_text(tokenizer(prompts), normalize=True)

    present_shapes = sorted({split.class_names[t] for t in split.true_labels})
    shape_pred = (feats @ text([f"a photo of a {s}" for s in present_shapes]).T).argmax(1).numpy()
    true_shape = np.array([present_shapes.index(split.class_names[t]) for t in split.true_labels])
    colour_pred = (feats @ text([f"a {c} object" for c in COLOURS]).T).argmax(1).numpy()
    out = {"shape_accuracy": float((shape_pred == true_shape).mean()), "colour_accuracy": float((colour_pred == split.colours).mean())}
    for cue in CUES:
        sims = (feats @ text([f"a photo with {CUE_PHRASES[cue][0]}"]).T)[:, 0].numpy()
        flags = split.cue_flag(cue)
        out[f"{cue}_auc"] = float(roc_auc_score(flags, sims)) if 0 < flags.sum() < len(flags) else float("nan")
        out[f"{cue}_precision_at_50"] = float(flags[np.argsort(-sims)[:50]].mean())
    return out


def tiny_clip_paths(spec: TinyClipSpec = TinyClipSpec(), root: Path | None = None) -> tuple[Path, Path]:
    """``(checkpoint .pt, metrics .json)`` paths of ``spec``'s cached model."""
    folder = (Path(root) if root is not None else zoo_dir()) / "tiny_clip" / spec_key(spec)
    return folder / "open_clip_model.pt", folder / "metrics.json"


def load_or_train_tiny_clip(
    spec: TinyClipSpec = TinyClipSpec(), *, retrain: bool = False, progress: bool = False, root: Path | None = None
) -> tuple[str, Path]:
    """The cached tiny CLIP of ``spec``, trained first when absent.

    Args:
        spec: architecture and training parameters (``TEST_SPEC`` for tests).
        retrain: train again even when cached.
        progress: show a progress bar while training.
        root: cache folder (``cache_root()/"zoo"`` by default).

    Returns:
        ``(model_name, checkpoint_path)``: the model config is registered with open_clip, so
        ``open_clip.create_model_and_transforms(model_name, pretrained=str(checkpoint_path))``
        loads it, and so does the "open_clip" concept encoder with the same two values.

    Example:
        >>> name, path = load_or_train_tiny_clip(TEST_SPEC)  # doctest: +SKIP
        >>> encoder = CONCEPT_ENCODERS.create("open_clip", model_name=name, pretrained=str(path))  # doctest: +SKIP
    """
    name = register_tiny_clip_config(spec)
    checkpoint, metrics_path = tiny_clip_paths(spec, root)
    if checkpoint.exists() and not retrain:
        return name, checkpoint
    start = time.perf_counter()
    logger.info("training tiny CLIP %s (%d steps); cached at %s", name, spec.steps, checkpoint)
    model, tokenizer = train_tiny_clip(spec, progress=progress)
    seconds = time.perf_counter() - start
    world = pretraining_world(spec.image_size, spec.n_images, spec.seed + 1000)
    metrics = evaluate_tiny_clip(model, tokenizer, load_split(world, "test"))
    metrics.update(train_seconds=round(seconds, 1), model_name=name, spec=asdict(spec),
                   n_parameters=sum(p.numel() for p in model.parameters()))
    atomic_torch_save(model.state_dict(), checkpoint)
    metrics_path.write_text(json.dumps(metrics, indent=2))
    logger.info("tiny CLIP trained in %.0f s: %s", seconds, metrics)
    return name, checkpoint


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m auditor.demo.zoo.tiny_clip [--test] [--retrain]``."""
    parser = argparse.ArgumentParser(description="(Re)train the project's tiny CLIP on the generated world.")
    parser.add_argument("--test", action="store_true", help="the small configuration used by the tests (32 px)")
    parser.add_argument("--retrain", action="store_true", help="train even when a cached checkpoint exists")
    parser.add_argument("--steps", type=int, default=None, help="override the step count")
    parser.add_argument("--shape-captions", type=float, default=None, help="fraction of object-only captions")
    args = parser.parse_args(argv)
    spec = TEST_SPEC if args.test else TinyClipSpec()
    if args.steps:
        spec = TinyClipSpec(**{**asdict(spec), "steps": args.steps})
    if args.shape_captions is not None:
        spec = TinyClipSpec(**{**asdict(spec), "shape_captions": args.shape_captions})
    torch.set_num_threads(1)
    name, checkpoint = load_or_train_tiny_clip(spec, retrain=args.retrain, progress=True)
    _, metrics_path = tiny_clip_paths(spec)
    print(f"model_name: {name}\ncheckpoint: {checkpoint}")
    print(metrics_path.read_text())


if __name__ == "__main__":
    main()


def _resolve(spec: TinyClipSpec, pretrained: str | None) -> tuple[str, str]:
    for known in (TinyClipSpec(), TEST_SPEC):  # a later process may name either config
        register_tiny_clip_config(known)
    if pretrained:
        return register_tiny_clip_config(spec), str(pretrained)
    name, checkpoint = load_or_train_tiny_clip(spec)
    return name, str(checkpoint)


def resolve_tiny(pretrained: str | None = None) -> tuple[str, str]:
    """The ``concepts.model_name: tiny`` plugin of :data:`auditor.concepts.open_clip_backend.LOCAL_MODELS`.

    Returns:
        ``(open_clip model name, checkpoint path)``; the cached 64 px tiny CLIP, trained first when absent.
    """
    return _resolve(TinyClipSpec(), pretrained)


def resolve_tiny_test(pretrained: str | None = None) -> tuple[str, str]:
    """The ``concepts.model_name: tiny-test`` plugin: the 32 px tiny CLIP the tests use."""
    return _resolve(TEST_SPEC, pretrained)
