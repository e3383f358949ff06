"""Which cues move a class's features? A diagnostic for verdicts that look wrong on a proving world.

In validation and test every cue of a proving world appears in every class independently (50%),
so each cue's effect on a feature can be read directly from the class's own images. For the
chosen features of one class, the table gives, per cue, the AUROC of the feature's activation
for images with the cue against images without it (above 0.5: the cue raises the feature, below:
it lowers it), and the share of the feature's mean activation that the class's own cue adds,
``(mean with - mean without) / mean``.

Usage (the model is trained, or read from the cache, as the proving ground does)::

    python diag_cue_effects.py --world held-out-eight-classes --model cnn16 --seed 0 --class square --features 44 19 42 61 20
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from auditor.demo.world.dataset import images_to_tensor
from auditor.demo.worlds import get_world
from auditor.demo.worlds.train import load_or_train, load_split, model_spec
from auditor.model import ModelAdapter


def class_activations(world, model: torch.nn.Module, class_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate activations ``(N, D)`` and cue flags ``(N, n_cues)`` of the class's validation and test images."""
    adapter = ModelAdapter(model)
    activations, cues = [], []
    for split_name in ("val", "test"):
        split = load_split(world, split_name)
        chosen = split.labels == world.class_names.index(class_name)
        with torch.no_grad():
            activations.append(adapter.forward(images_to_tensor(split.images[chosen])).features.numpy())
        cues.append(split.cues[chosen])
    return np.concatenate(activations), np.concatenate(cues)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", required=True)
    parser.add_argument("--model", default="cnn16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--class", dest="class_name", required=True)
    parser.add_argument("--features", type=int, nargs="+", required=True)
    args = parser.parse_args(argv)

    world = get_world(args.world)
    if args.class_name not in world.class_names:
        raise SystemExit(f"{args.world} has no class {args.class_name!r}; its classes are {world.class_names}")
    model, _ = load_or_train(world, model_spec(args.model, args.seed))
    activations, cues = class_activations(world, model, args.class_name)
    cue_names = list(world.cues)
    own = dict(zip(world.class_names, (c.cue for c in world.classes)))[args.class_name]

    print(f"{args.world} / {args.model} seed {args.seed} / {args.class_name} (own cue: {own}): {len(activations)} images")
    print("| feature | " + " | ".join(f"AUROC {name}" for name in cue_names) + " | share added by own cue |")
    print("|---" * (len(cue_names) + 2) + "|")
    for f in args.features:
        aurocs = [roc_auc_score(cues[:, j], activations[:, f]) for j in range(len(cue_names))]
        if own is None:
            share = "n/a"
        else:
            present = cues[:, cue_names.index(own)]
            share = f"{(activations[present, f].mean() - activations[~present, f].mean()) / activations[:, f].mean():.2f}"
        print(f"| {f} | " + " | ".join(f"{a:.2f}" for a in aurocs) + f" | {share} |")


if __name__ == "__main__":
    main()
