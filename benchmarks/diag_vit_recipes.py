"""Can the proving ground's tiny ViT learn the shapes? Train a recipe on one world and print its accuracies.

The shipped ``vit`` (``auditor.demo.worlds.train.TinyViT``: 4 px patches, width 64, depth 4) learns the corner
tag of ``corner-tag`` and little else (validation accuracy near chance). This trains, with the proving ground's
ERM loop (``auditor.demo.world.train.fit_erm``), either that model ("plain") or the same transformer on a
convolutional stem ("stem": three 3x3 conv-BN-ReLU layers, strides 1, 2, 2, then 1x1 tokens; Xiao et al., "Early
convolutions help transformers see better", NeurIPS 2021), and prints train and validation accuracy.

Usage (from ``benchmarks/``)::

    python diag_vit_recipes.py --variant stem --epochs 30 --shift 0 --world corner-tag
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from auditor.demo.world.dataset import images_to_tensor
from auditor.demo.world.train import fit_erm
from auditor.demo.worlds import get_world
from auditor.demo.worlds.train import load_split, predict


class _Normalised(nn.Module):
    def __init__(self, stem: nn.Module, image_size: int, n_classes: int, patch_size: int, in_chans: int):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1))
        self.stem = stem
        self.vit = VisionTransformer(img_size=image_size, patch_size=patch_size, in_chans=in_chans, embed_dim=64, depth=4,
                                     num_heads=4, num_classes=n_classes, global_pool="avg", class_token=False)
        self.head = self.vit.head
        self.vit.head = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.vit(self.stem((x - self.mean) / self.std)))


def build(variant: str, image_size: int, n_classes: int) -> nn.Module:
    """``plain``: the shipped TinyViT's transformer; ``stem``: the same on a convolutional stem (tokens at 1/4 size)."""
    if variant == "plain":
        return _Normalised(nn.Identity(), image_size, n_classes, patch_size=4, in_chans=3)

    def block(i: int, o: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

    stem = nn.Sequential(*block(3, 24, 1), *block(24, 48, 2), *block(48, 64, 2))
    return _Normalised(stem, image_size // 4, n_classes, patch_size=1, in_chans=64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=("plain", "stem"), default="stem")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--shift", type=int, default=0, help="random translations by up to this many pixels")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--world", default="corner-tag")
    args = parser.parse_args()
    torch.set_num_threads(1)
    world = get_world(args.world)
    train, val = load_split(world, "train"), load_split(world, "val")
    start = time.perf_counter()
    model = fit_erm(lambda: build(args.variant, world.image_size, len(world.classes)), images_to_tensor(train.images),
                    torch.from_numpy(train.labels), epochs=args.epochs, batch_size=args.batch_size, lr=1e-3,
                    weight_decay=0.05, seed=0, flip=False, shift=args.shift, name=args.variant)
    seconds = time.perf_counter() - start
    train_acc = float((predict(model, train.images) == train.labels).mean())
    val_acc = float((predict(model, val.images) == val.labels).mean())
    print(f"| {args.variant} | {args.world} | {args.epochs} | {args.shift} | {train_acc:.2f} | {val_acc:.2f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
