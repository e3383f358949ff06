"""Which cues move a class's features? A diagnostic for verdicts that look wrong on a proving world.

In validation and test every cue of a proving world appears in every class independently (50%),
so each cue's effect on a feature can be read directly from the class's own images. For the
chosen features of one class, the table gives, per cue, the AUROC of the feature's activation
for images with the cue against images without it (above 0.5: the cue raises the feature, below:
it lowers it), and the share of the feature's mean activation that the class's own cue adds,
``(mean with - mean without) / mean``.

With ``--swaps top`` or ``--swaps random`` it also pastes 16 of the class's training objects (its
top-activating images for the feature, as the verdicts examine, or a random 16) onto 32 cleaned
backgrounds of each class, as the verdicts' swaps do, and prints the feature's mean activation
relative to the originals, per donor class.

With ``--relight SIGMA`` the swaps are also made with the pasted object re-lit to its new background
(``auditor.counterfactuals.relight_object``, as ``verdicts.swap_relight`` does, with a Gaussian of ``SIGMA`` times the
image side; the package uses 0.25), so a cast or vignette that also covers the object leaves with the background. The table then gives, per feature, the own class's ratio minus the best other
class's, with the plain paste and with the re-lit one (same objects and donors).

With ``--paired`` it renders 64 images of the class twice, with and without the class's own cue
(every other random choice identical), and compares the cue's effect on each feature in the
rendered images with its effect when the cue-free objects are pasted onto the cleaned backgrounds
of other such images rendered with and without the cue: whether the swap can see the cue at all.

Usage (the model is trained, or read from the cache, as the proving ground does)::

    python diag_cue_effects.py --world held-out-eight-classes --model cnn16 --seed 0 --class square --features 44 19 42 61 20 --swaps top
    python diag_cue_effects.py --world held-out-few-large-shapes --model cnn16 --seed 0 --class plus --features 61 27 41 42 46 --swaps top --relight 0.25
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from auditor.counterfactuals import clean_backgrounds, paste_object, relight_object
from auditor.demo.world.dataset import images_to_tensor
from auditor.demo.worlds import get_world
from auditor.demo.worlds.generator import render, sample_params
from auditor.demo.worlds.train import load_or_train, load_split, model_spec
from auditor.model import ModelAdapter


def features_of(adapter: ModelAdapter, images: torch.Tensor) -> np.ndarray:
    """Penultimate activations ``(N, D)`` of float images ``(N, C, H, W)``."""
    with torch.no_grad():
        return adapter.forward(images).features.numpy()


def class_activations(world, adapter: ModelAdapter, class_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate activations ``(N, D)`` and cue flags ``(N, n_cues)`` of the class's validation and test images."""
    activations, cues = [], []
    for split_name in ("val", "test"):
        split = load_split(world, split_name)
        chosen = split.labels == world.class_names.index(class_name)
        activations.append(features_of(adapter, images_to_tensor(split.images[chosen])))
        cues.append(split.cues[chosen])
    return np.concatenate(activations), np.concatenate(cues)


def swaps_by_donor_class(world, adapter: ModelAdapter, class_name: str, features: list[int], which: str,
                         rng: np.random.Generator, n_objects: int = 16, n_donors: int = 32,
                         relight: float | None = None) -> dict[int, list[float]]:
    """Mean activation of each feature with the class's objects pasted onto each class's backgrounds, relative to the originals.

    Args:
        world: the proving world; adapter: its classifier; class_name: the class whose objects are pasted.
        features: penultimate features; which: "top" (each feature's top-activating training images) or "random".
        rng: picks the random objects and the donors; n_objects: objects pasted; n_donors: donors per class
            (a multiple of ``n_objects``: each object goes onto ``n_donors / n_objects`` backgrounds of each class).
        relight: when given, re-light each object to its new background first (``counterfactuals.relight_object``
            with this ``sigma``, a fraction of the image side).

    Returns:
        feature -> one ratio per class, in label order.
    """
    train = load_split(world, "train")
    members = np.flatnonzero(train.labels == world.class_names.index(class_name))
    activations = features_of(adapter, images_to_tensor(train.images[members]))
    ratios: dict[int, list[float]] = {}
    for feature in features:
        rows = np.argsort(-activations[:, feature])[:n_objects] if which == "top" else rng.choice(len(members), n_objects, replace=False)
        chosen = members[rows]
        objects, masks = images_to_tensor(train.images[chosen]), torch.from_numpy(train.masks[chosen])
        original = activations[rows, feature].mean()
        ratios[feature] = []
        for k in range(len(world.class_names)):
            donors = rng.choice(np.flatnonzero(train.labels == k), size=n_donors, replace=False)
            backgrounds = clean_backgrounds(images_to_tensor(train.images[donors]), torch.from_numpy(train.masks[donors]))
            pasted = [paste_object(objects if relight is None else relight_object(objects, masks, part, relight), masks, part)
                      for part in (backgrounds[start : start + n_objects] for start in range(0, n_donors, n_objects))]
            swapped = [features_of(adapter, images)[:, feature] for images in pasted]
            ratios[feature].append(float(np.concatenate(swapped).mean() / original))
    return ratios


def paired_cue_effects(world, adapter: ModelAdapter, class_name: str, features: list[int],
                       rng: np.random.Generator, n: int = 64) -> dict[int, tuple[float, float, float]]:
    """The class's own cue, rendered in and out of the same images, against the same cue seen through a swap.

    Args:
        world: the proving world (its class ``class_name`` must have a cue); adapter: its classifier.
        features: penultimate features; rng: draws the images' random choices; n: images rendered.

    Returns:
        feature -> (rendered with the cue, cue-free object pasted on a cue background, pasted on the same
        background without the cue), each the mean activation relative to the cue-free renders.
    """
    spec = world.classes[world.class_names.index(class_name)]
    draws = [sample_params(rng, world, spec.obj, "val") for _ in range(n)]

    def rendered(with_cue: bool) -> tuple[torch.Tensor, torch.Tensor]:
        images, masks = zip(*(render(world, spec.obj, {spec.cue: spec.strength} if with_cue else {}, p)[:2] for p in draws))
        return images_to_tensor(np.round(np.stack(images) * 255).astype(np.uint8)), torch.from_numpy(np.stack(masks))

    with_cue, with_masks = rendered(True)
    without, without_masks = rendered(False)
    donors = np.roll(np.arange(n), 1)  # each object goes onto another image's background
    outputs = [features_of(adapter, x) for x in (
        without,
        with_cue,
        paste_object(without, without_masks, clean_backgrounds(with_cue[donors], with_masks[donors])),
        paste_object(without, without_masks, clean_backgrounds(without[donors], without_masks[donors])),
    )]
    base = outputs[0]
    return {f: tuple(float(o[:, f].mean() / base[:, f].mean()) for o in outputs[1:]) for f in features}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", required=True)
    parser.add_argument("--model", default="cnn16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--class", dest="class_name", required=True)
    parser.add_argument("--features", type=int, nargs="+", required=True)
    parser.add_argument("--swaps", choices=("top", "random"), default=None,
                        help="also paste the class's objects onto each class's backgrounds (top-activating or random objects)")
    parser.add_argument("--relight", type=float, default=None, metavar="SIGMA",
                        help="with --swaps, also paste the objects re-lit to each donor's local background colour "
                             "(Gaussian of SIGMA times the image side) and compare the own class's contrast")
    parser.add_argument("--paired", action="store_true",
                        help="also render the class's images with and without its cue and compare with the swap's view of it")
    args = parser.parse_args(argv)

    world = get_world(args.world)
    if args.class_name not in world.class_names:
        raise SystemExit(f"{args.world} has no class {args.class_name!r}; its classes are {world.class_names}")
    model, _ = load_or_train(world, model_spec(args.model, args.seed))
    adapter = ModelAdapter(model)
    activations, cues = class_activations(world, adapter, args.class_name)
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
    if args.swaps:
        rng = np.random.default_rng(args.seed)
        print(f"\nObjects ({args.swaps} 16 training images per feature) pasted onto each class's backgrounds, activation / original:")
        print("| feature | " + " | ".join(world.class_names) + " |")
        print("|---" * (len(world.class_names) + 1) + "|")
        plain = swaps_by_donor_class(world, adapter, args.class_name, args.features, args.swaps, rng)
        for f, ratios in plain.items():
            print(f"| {f} | " + " | ".join(f"{r:.2f}" for r in ratios) + " |")
        if args.relight is not None:
            relit = swaps_by_donor_class(world, adapter, args.class_name, args.features, args.swaps,
                                         np.random.default_rng(args.seed), relight=args.relight)
            k = world.class_names.index(args.class_name)

            def own_minus_best_other(ratios: list[float]) -> float:
                return ratios[k] - max(r for j, r in enumerate(ratios) if j != k)

            print(f"\nOwn class's ratio minus the best other class's (same objects and donors), plain and re-lit (sigma {args.relight}):")
            print("| feature | plain paste | re-lit paste |")
            print("|---|---|---|")
            for f in args.features:
                print(f"| {f} | {own_minus_best_other(plain[f]):+.2f} | {own_minus_best_other(relit[f]):+.2f} |")
    if args.paired:
        if own is None:
            raise SystemExit(f"--paired needs a cue class; {args.class_name!r} is a control")
        effects = paired_cue_effects(world, adapter, args.class_name, args.features, np.random.default_rng(args.seed + 1000))
        print(f"\nThe same 64 {args.class_name} images rendered with and without {own}, activation / cue-free render:")
        print(f"| feature | rendered with {own} | cue-free object on a background with {own} | on the same background without |")
        print("|---|---|---|---|")
        for f, (natural, pasted_cue, pasted_plain) in effects.items():
            print(f"| {f} | {natural:.2f} | {pasted_cue:.2f} | {pasted_plain:.2f} |")


if __name__ == "__main__":
    main()