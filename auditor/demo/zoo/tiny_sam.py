"""A tiny SAM built from segment_anything's own modules and trained on the world's object masks.

``build_tiny_sam`` assembles ``ImageEncoderViT``, ``PromptEncoder`` and ``MaskDecoder`` into a
``Sam`` at 64 px input; ``train_tiny_sam`` trains it with box and point prompts (BCE + dice on
the best of the three masks, MSE on the IoU head); the result works with ``SamPredictor`` and
``SamAutomaticMaskGenerator`` like a real checkpoint. ``sam_model_registry`` only knows
vit_b/l/h, so the tiny model reloads through :func:`load_tiny_sam`.

Run ``python -m auditor.demo.zoo.tiny_sam`` to (re)train it.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from auditor._io import atomic_torch_save
from auditor.demo.world.train import load_split
from auditor.demo.zoo._common import (
    pretraining_world,
    spec_key,
    training_session,
    zoo_dir,
)
from auditor.errors import (
    InvalidInputError,
    MissingDependencyError,
    MissingWeightsError,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TinySamSpec:
    """Architecture and training of the tiny SAM.

    Args:
        input_size: SAM's input side (images are resized so their long side is this).
        patch_size: ViT patch side (embedding grid = input_size / patch_size).
        encoder_dim: ViT width.
        encoder_depth: ViT blocks.
        prompt_dim: prompt/mask-decoder width (divisible by 8).
        world_sizes: image sizes of the worlds it is trained on (smaller ones are upsampled).
        n_images: training images per world size.
        steps: optimiser steps.
        batch_size: images (one prompt each) per step.
        lr: AdamW learning rate.
        seed: seed of the world and of the training.
    """

    input_size: int = 64
    patch_size: int = 8
    encoder_dim: int = 64
    encoder_depth: int = 2
    prompt_dim: int = 32
    world_sizes: tuple[int, ...] = (64, 32)
    n_images: int = 1800
    steps: int = 500
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0


TEST_SAM_SPEC = TinySamSpec(world_sizes=(32,), n_images=900, steps=150)
"""A faster configuration for tests (32 px world only, 150 steps); same architecture, so checkpoints interchange."""


def _segment_anything():
    try:
        import segment_anything
    except ImportError as error:
        raise MissingDependencyError(
            f"SAM needs segment_anything ({error}); install it with `pip install segment-anything`"
        ) from None
    return segment_anything


def build_tiny_sam(spec: TinySamSpec = TinySamSpec()):
    """A randomly initialised tiny ``segment_anything.modeling.Sam`` of ``spec``'s architecture."""
    _segment_anything()
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    if spec.prompt_dim % 8:
        raise InvalidInputError(f"prompt_dim must be divisible by 8; got {spec.prompt_dim}")
    grid = spec.input_size // spec.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=spec.input_size,
            patch_size=spec.patch_size,
            embed_dim=spec.encoder_dim,
            depth=spec.encoder_depth,
            num_heads=2,
            mlp_ratio=4,
            out_chans=spec.prompt_dim,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=0,
            global_attn_indexes=(),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=spec.prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(spec.input_size, spec.input_size),
            mask_in_chans=8,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=spec.prompt_dim, mlp_dim=128, num_heads=2),
            transformer_dim=spec.prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=64,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def load_tiny_sam(checkpoint: str | Path, spec: TinySamSpec = TinySamSpec()):
    """Load a tiny SAM checkpoint written by :func:`load_or_train_tiny_sam`.

    Args:
        checkpoint: path of the ``.pt`` state_dict.
        spec: the architecture it was trained with.

    Returns:
        The ``Sam`` in eval mode.

    Raises:
        MissingWeightsError: the file does not exist.
        InvalidInputError: the file is not a tiny SAM state_dict (e.g. a vit_b checkpoint).
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise MissingWeightsError(
            f"tiny SAM checkpoint {str(path)!r} does not exist; train it with `python -m auditor.demo.zoo.tiny_sam` "
            "or leave `masks.sam_checkpoint` empty to use the cached one"
        )
    sam = build_tiny_sam(spec)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise InvalidInputError(f"{str(path)!r} holds a {type(state).__name__}, not a SAM state_dict")
    try:
        sam.load_state_dict(state)
    except RuntimeError as error:
        raise InvalidInputError(
            f"{str(path)!r} is not a tiny SAM checkpoint (masks.sam_model_type='tiny'): {str(error)[:300]}. "
            "Set `masks.sam_model_type` to the checkpoint's type (vit_b, vit_l, vit_h)."
        ) from None
    return sam.eval()


def _training_data(spec: TinySamSpec):
    from segment_anything.utils.transforms import ResizeLongestSide

    transform = ResizeLongestSide(spec.input_size)
    images, masks = [], []
    for size in spec.world_sizes:
        split = load_split(pretraining_world(size, spec.n_images, spec.seed + 2000), "train")
        # The same resize SamPredictor.set_image applies (ResizeLongestSide.apply_image).
        x = np.stack([transform.apply_image(image) for image in split.images])
        x = torch.from_numpy(x).permute(0, 3, 1, 2).float()
        m = torch.from_numpy(split.masks).float()[:, None]
        m = F.interpolate(m, size=x.shape[-2:], mode="nearest")
        pad = (0, spec.input_size - x.shape[-1], 0, spec.input_size - x.shape[-2])
        images.append(F.pad(x, pad))
        masks.append(F.pad(m, pad))
    return torch.cat(images), torch.cat(masks)


def _prompt(mask: np.ndarray, rng: np.random.Generator):
    ys, xs = np.nonzero(mask)
    if rng.random() < 0.5:
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        box += rng.normal(0, 1.0, size=4).astype(np.float32)
        return None, torch.from_numpy(box)[None]
    n = int(rng.integers(1, 3))
    pick = rng.integers(len(xs), size=n)
    points = np.stack([xs[pick], ys[pick]], 1).astype(np.float32) + 0.5
    return (torch.from_numpy(points)[None], torch.ones(1, n, dtype=torch.int64)), None


def _decode(sam, embedding: torch.Tensor, points, boxes):
    sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=None)
    return sam.mask_decoder(
        image_embeddings=embedding[None],
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=True,
    )


def train_tiny_sam(spec: TinySamSpec = TinySamSpec(), *, progress: bool = True, num_threads: int | None = 1):
    """Train the tiny SAM on the pre-training world's object masks with box and point prompts.

    Args:
        spec: architecture and training parameters.
        progress: show a progress bar.
        num_threads: torch threads during training (restored afterwards).

    Returns:
        The trained ``Sam`` in eval mode.
    """
    images, masks = _training_data(spec)
    rng = np.random.default_rng(spec.seed)
    with training_session(spec.seed, num_threads):
        sam = build_tiny_sam(spec)
        optimizer = torch.optim.AdamW(sam.parameters(), lr=spec.lr, weight_decay=1e-4)
        # Short linear warm-up, then a constant rate (a decaying schedule under-trained the decoder).
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 20))
        sam.train()
        for _ in tqdm(range(spec.steps), desc="training tiny SAM", disable=not progress):
            batch = rng.choice(len(images), size=spec.batch_size, replace=False)
            embeddings = sam.image_encoder(sam.preprocess(images[batch]))
            targets = F.avg_pool2d(masks[batch], 2) > 0.5  # low-res masks are half the input side
            loss = 0.0
            for j, i in enumerate(batch):
                points, boxes = _prompt(masks[i, 0].numpy() > 0.5, rng)
                logits, iou_pred = _decode(sam, embeddings[j], points, boxes)
                target = targets[j].float().expand_as(logits[0])
                bce = F.binary_cross_entropy_with_logits(logits[0], target, reduction="none").mean((1, 2))
                prob = logits[0].sigmoid()
                dice = 1 - (2 * (prob * target).sum((1, 2)) + 1) / (prob.sum((1, 2)) + target.sum((1, 2)) + 1)
                best = int(torch.argmin(bce + dice))
                with torch.no_grad():
                    hard = logits[0] > 0
                    iou = (hard & (target > 0)).sum((1, 2)) / ((hard | (target > 0)).sum((1, 2)).clamp(min=1))
                loss = loss + bce[best] + dice[best] + F.mse_loss(iou_pred[0], iou.float())
            loss = loss / len(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return sam.eval()


def evaluate_tiny_sam(sam, split, n_images: int = 200, seed: int = 0) -> dict[str, float]:
    """Mask quality of a SAM on a world split, through ``SamPredictor``.

    Args:
        sam: a ``Sam``.
        split: world split with object masks.
        n_images: images evaluated (a seeded random subset).
        seed: seed of the subset.

    Returns:
        ``box_miou`` (box prompt = the object's bounding box, best-scored of 3 masks) and
        ``point_miou`` (one point at the object's pixel closest to its centroid).
    """
    from segment_anything import SamPredictor

    predictor = SamPredictor(sam)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(split), size=min(n_images, len(split)), replace=False)
    box_ious, point_ious = [], []
    for i in chosen:
        truth = split.masks[i]
        predictor.set_image(split.images[i])
        ys, xs = np.nonzero(truth)
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        out, scores, _ = predictor.predict(box=box, multimask_output=True)
        box_ious.append(_iou(out[np.argmax(scores)], truth))
        k = np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2)
        out, scores, _ = predictor.predict(point_coords=np.array([[xs[k] + 0.5, ys[k] + 0.5]]), point_labels=np.array([1]), multimask_output=True)
        point_ious.append(_iou(out[np.argmax(scores)], truth))
    return {"box_miou": float(np.mean(box_ious)), "point_miou": float(np.mean(point_ious))}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def tiny_sam_paths(spec: TinySamSpec = TinySamSpec(), root: Path | None = None) -> tuple[Path, Path]:
    """``(checkpoint .pt, metrics .json)`` paths of ``spec``'s cached model."""
    folder = (Path(root) if root is not None else zoo_dir()) / "tiny_sam" / spec_key(spec)
    return folder / "tiny_sam.pt", folder / "metrics.json"


def load_or_train_tiny_sam(
    spec: TinySamSpec = TinySamSpec(), *, retrain: bool = False, progress: bool = False, root: Path | None = None
) -> Path:
    """Path of the cached tiny SAM checkpoint of ``spec``, trained first when absent.

    Args:
        spec: architecture and training parameters.
        retrain: train again even when cached.
        progress: show a progress bar while training.
        root: cache folder (``cache_root()/"zoo"`` by default).

    Returns:
        The checkpoint path; load it with :func:`load_tiny_sam`.
    """
    _segment_anything()
    checkpoint, metrics_path = tiny_sam_paths(spec, root)
    if checkpoint.exists() and not retrain:
        return checkpoint
    start = time.perf_counter()
    logger.info("training tiny SAM (%d steps); cached at %s", spec.steps, checkpoint)
    sam = train_tiny_sam(spec, progress=progress)
    seconds = time.perf_counter() - start
    metrics = {}
    for size in spec.world_sizes:
        held_out = load_split(pretraining_world(size, spec.n_images, spec.seed + 2000), "test")
        metrics[f"{size}px"] = evaluate_tiny_sam(sam, held_out)
    metrics.update(train_seconds=round(seconds, 1), spec=asdict(spec), n_parameters=sum(p.numel() for p in sam.parameters()))
    atomic_torch_save(sam.state_dict(), checkpoint)
    metrics_path.write_text(json.dumps(metrics, indent=2))
    logger.info("tiny SAM trained in %.0f s: %s", seconds, metrics)
    return checkpoint


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m auditor.demo.zoo.tiny_sam [--retrain]``."""
    parser = argparse.ArgumentParser(description="(Re)train the project's tiny SAM on the generated world.")
    parser.add_argument("--retrain", action="store_true", help="train even when a cached checkpoint exists")
    parser.add_argument("--test", action="store_true", help="the small configuration used by the tests")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    spec = TEST_SAM_SPEC if args.test else TinySamSpec()
    checkpoint = load_or_train_tiny_sam(spec, retrain=args.retrain, progress=True)
    print(f"checkpoint: {checkpoint}")
    print(tiny_sam_paths(spec)[1].read_text())


if __name__ == "__main__":
    main()


def sam_builder(checkpoint: str | None, device="cpu"):
    """The ``masks.sam_model_type: tiny`` plugin of :data:`auditor.masks.sam.SAM_MODELS` (an entry point).

    Args:
        checkpoint: a tiny SAM checkpoint, or None for the cached one (trained first when absent).
        device: where the model goes.

    Returns:
        ``(Sam in eval mode, checkpoint path)``.
    """
    path = checkpoint or load_or_train_tiny_sam()
    return load_tiny_sam(path).to(device), str(path)
