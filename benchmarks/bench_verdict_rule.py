"""Core/spurious verdict rules on the built-in world, a held-out world and the proving-ground worlds.

Runs the verdict stage alone (features, importance, top-5 features per class, verdicts)
with the default rule (``counterfactual: swap``: background and swap reliance from real
backgrounds of the dataset) and with the legacy neutral-fill rule, on:

* ``builtin``: the quick 32 px demo world (stripes, tree, warm cues; plus and ring clean);
* ``heldout``: a 32 px world the rules were not designed on, six classes, each cue in
  90% of its class's training images and 5% of the others':
  ``circle`` real-photo grass texture behind the object (skimage ``grass``),
  ``square`` a "water" texture (skimage ``gravel``, blue-tinted) behind the object and
  faintly over it (a mixed cue), ``triangle`` a thin one-pixel magenta border,
  ``diamond`` a small real-photo patch (a co-occurring "object") away from the object,
  ``plus`` and ``ring`` clean controls;
* ``proving:<name>``: a world of :mod:`auditor.demo.worlds` (its cached ERM model, ``--arch``).

For every (class, feature) it prints both rules' labels with the evidence and, from the
validation split, the truth used by the proving ground: a cue class's feature is truly
spurious when its activation separates the class's validation images with and without
the cue with AUROC >= 0.75; control classes' features never are. Per class it prints
whether a spurious feature was found (should be: every cue class, no control), and per
rule the pair counts. ``--evidence-json`` writes every verdict's evidence with its truth.
The held-out CNN trains once (about a minute on one core) and is cached.

Usage:
    python benchmarks/bench_verdict_rule.py --world builtin
    python benchmarks/bench_verdict_rule.py --world heldout
    python benchmarks/bench_verdict_rule.py --world proving:photo-texture --evidence-json ev.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from auditor.config import VerdictConfig
from auditor.data import ImageSource
from auditor.demo.world.dataset import WorldDataset
from auditor.demo.world.generator import COLOURS, WorldSpec, WorldSplit, render_image
from auditor.demo.world.model import SmallCNN
from auditor.demo.world.train import (
    TrainSpec,
    cache_root,
    load_or_train_model,
    load_split,
    train_model,
)
from auditor.features import class_feature_importance, extract_features, top_features
from auditor.labeling import run_verdicts
from auditor.masks import DatasetMaskProvider
from auditor.model import ModelAdapter


def label_features(*args, **kwargs):
    """The verdicts of :func:`run_verdicts` as a list."""
    return list(run_verdicts(*args, **kwargs).verdicts)

HELDOUT_CLASSES = ("circle", "square", "triangle", "diamond", "plus", "ring")
HELDOUT_CUES = {0: "grass texture", 1: "water texture (mixed)", 2: "thin border", 3: "small photo patch"}


def _textures(size: int) -> dict[str, np.ndarray]:
    from skimage import data, transform

    grass = transform.resize(data.grass().astype(np.float32) / 255, (4 * size, 4 * size), anti_aliasing=True)
    gravel = transform.resize(data.gravel().astype(np.float32) / 255, (4 * size, 4 * size), anti_aliasing=True)
    from sklearn.datasets import load_sample_images

    photo = load_sample_images().images[1].astype(np.float32) / 255  # flower.jpg
    photo = transform.resize(photo, (photo.shape[0] // 8, photo.shape[1] // 8), anti_aliasing=True)
    return {"grass": grass, "gravel": gravel, "photo": photo}


def _crop(rng: np.random.Generator, texture: np.ndarray, size: int) -> np.ndarray:
    y, x = rng.integers(0, texture.shape[0] - size), rng.integers(0, texture.shape[1] - size)
    return texture[y : y + size, x : x + size]


def make_heldout(split: str, per_class: int, size: int = 32, seed: int = 7) -> WorldSplit:
    """Generate one split of the held-out world (see module docstring)."""
    rng = np.random.default_rng([seed, {"train": 0, "val": 1}[split]])
    tex = _textures(size)
    spec = WorldSpec(image_size=size, object_scale=(0.18, 0.28))
    n = per_class * len(HELDOUT_CLASSES)
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), bool)
    cues = np.zeros((n, 4), bool)
    labels = np.repeat(np.arange(len(HELDOUT_CLASSES)), per_class)
    no_cue = {"stripes": False, "tree": False, "warm": False}
    for i in range(n):
        c = int(labels[i])
        for k in range(4):
            rate = (0.9 if k == c else 0.05) if split == "train" else 0.5
            cues[i, k] = rng.random() < rate
        image, mask, _ = render_image(rng, spec, HELDOUT_CLASSES[c], no_cue, int(rng.integers(len(COLOURS))))
        bg = ~mask[..., None]
        if cues[i, 0]:  # grass: background replaced by a real grass crop at the scene's brightness
            g = _crop(rng, tex["grass"], size)[..., None]
            image = np.where(bg, 0.25 + 0.9 * (g - g.mean()) + image.mean() * 0.5, image)
        if cues[i, 1]:  # water: blue gravel texture behind the object, faintly over it too
            w = _crop(rng, tex["gravel"], size)[..., None] * np.array([0.4, 0.7, 1.1], np.float32)
            image = np.where(bg, 0.4 * image + 0.6 * w, 0.8 * image + 0.2 * w)
        if cues[i, 2]:  # thin magenta border
            image[0, :], image[-1, :], image[:, 0], image[:, -1] = (0.9, 0.2, 0.8), (0.9, 0.2, 0.8), (0.9, 0.2, 0.8), (0.9, 0.2, 0.8)
        if cues[i, 3]:  # a 6x6 real-photo patch away from the object
            p = 6
            for _ in range(30):
                y, x = rng.integers(1, size - p - 1, size=2)
                if not mask[max(0, y - 2) : y + p + 2, max(0, x - 2) : x + p + 2].any():
                    image[y : y + p, x : x + p] = _crop(rng, tex["photo"], p)
                    break
        images[i] = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
        masks[i] = mask
    zeros = np.zeros(n, np.int64)
    return WorldSplit(images=images, labels=labels.astype(np.int64), true_labels=labels.astype(np.int64), masks=masks,
                      tree_masks=np.zeros_like(masks), cues=cues, colours=zeros, collision=zeros.astype(bool),
                      class_names=list(HELDOUT_CLASSES))


def heldout_model(train: WorldSplit, spec: TrainSpec) -> SmallCNN:
    path = cache_root() / "models" / f"bench-verdict-heldout-{len(train)}-{spec.epochs}-{spec.width}.pt"
    if path.exists():
        model = SmallCNN(len(HELDOUT_CLASSES), width=spec.width)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    model = train_model(train, len(HELDOUT_CLASSES), spec, progress=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def accuracy(model: torch.nn.Module, split: WorldSplit) -> float:
    with torch.no_grad():
        x = torch.from_numpy(split.images).permute(0, 3, 1, 2).float() / 255
        return float((model(x).argmax(1).numpy() == split.labels).mean())


def _auroc(scores: np.ndarray, flags: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(flags, scores)) if 0 < flags.sum() < len(flags) else float("nan")


def run_rules(model, train, names, cue_of_class: dict[int, str], configs: dict[str, VerdictConfig], top_k: int = 5,
              val=None, val_cue=None, evidence_path=None):
    """Verdicts of every rule; with ``val`` and ``val_cue`` (bool (N,), own cue present) also the
    per-pair truth: a cue class's feature is truly spurious when its validation AUROC, cue vs no cue
    within the class, is >= 0.75."""
    source = ImageSource(WorldDataset(train), name="train")
    adapter = ModelAdapter(model)
    truth = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = extract_features(adapter, source, Path(tmp), progress=False)
        if val is not None:
            vcache = extract_features(adapter, ImageSource(WorldDataset(val, with_masks=False), name="val"), Path(tmp) / "val", progress=False)
        importance = class_feature_importance(cache.activations, cache.labels, adapter.head_weight().numpy())
        ranked = top_features(importance, top_k)
        important = {c: ranked[c] for c in range(len(names))}
        if val is not None:
            for c, features in important.items():
                rows = np.flatnonzero(vcache.labels == c)
                for f in features:
                    auc = _auroc(np.asarray(vcache.activations[rows, f]), np.asarray(val_cue)[rows]) if c in cue_of_class else float("nan")
                    truth[(c, f)] = auc
        results = {}
        for name, config in configs.items():
            start = time.perf_counter()
            results[name] = label_features(adapter, source, cache, important, importance, DatasetMaskProvider(source), config,
                                           np.random.default_rng(0), progress=False)
            print(f"[{name}] verdicts in {time.perf_counter() - start:.1f} s")
    rows = list(zip(*results.values()))
    print("| class | cue | feature | " + " | ".join(results) + " | bg reliance [CI] | swap reliance [CI] | obj reliance | rand/same drop | density | obj/bg fill drop | decided |")
    print("|" + "---|" * (10 + len(results) - 1))
    for group in rows:
        v = group[0]
        auc = truth.get((v.class_index, v.feature))
        cue = cue_of_class.get(v.class_index, "-") + ("" if auc is None or np.isnan(auc) else f" (AUROC {auc:.2f})")
        labels = " | ".join(g.label + ("+mixed" if g.mixed else "") for g in group)
        print(f"| {names[v.class_index]} | {cue} | {v.feature} | {labels} | "
              f"{v.background_reliance:+.2f} [{v.reliance_ci_low:+.2f}, {v.reliance_ci_high:+.2f}] | "
              f"{v.swap_reliance:+.2f} [{v.swap_ci_low:+.2f}, {v.swap_ci_high:+.2f}] | {v.object_reliance:+.2f} | "
              f"{v.random_background_drop:+.2f}/{v.same_background_drop:+.2f} | {v.density_ratio:.2f} | "
              f"{v.object_drop:+.2f}/{v.background_drop:+.2f} | {v.decided_by} |")
    print("\n| class | cue | " + " | ".join(f"{k}: flagged" for k in results) + " |")
    print("|---|---|" + "---|" * len(results))
    score = {k: 0 for k in results}
    for c, name in enumerate(names):
        cells = []
        for k, verdicts in results.items():
            flagged = any(v.label == "spurious" for v in verdicts if v.class_index == c)
            ok = flagged == (c in cue_of_class)
            score[k] += ok
            cells.append(f"{'yes' if flagged else 'no'}{'' if ok else ' (WRONG)'}")
        print(f"| {name} | {cue_of_class.get(c, 'none (control)')} | " + " | ".join(cells) + " |")
    print("classes right: " + ", ".join(f"{k} {s}/{len(names)}" for k, s in score.items()))
    if truth and evidence_path:
        import json

        rows_out = [{"class": v.class_index, "feature": v.feature, "control": v.class_index not in cue_of_class,
                     "auroc": truth.get((v.class_index, v.feature)), "background_reliance": v.background_reliance,
                     "reliance_ci_low": v.reliance_ci_low, "swap_reliance": v.swap_reliance, "swap_ci_low": v.swap_ci_low,
                     "object_reliance": v.object_reliance, "density_ratio": v.density_ratio, "object_drop": v.object_drop,
                     "background_drop": v.background_drop, "labels": {k: r[i].label for k, r in results.items()}}
                    for i, v in enumerate(next(iter(results.values())))]
        Path(evidence_path).write_text(json.dumps(rows_out, default=lambda x: None))
    if truth:
        for k, verdicts in results.items():
            true = {key for key, auc in truth.items() if auc >= 0.75}
            flagged = {(v.class_index, v.feature) for v in verdicts if v.label == "spurious"}
            ctrl = {(v.class_index, v.feature) for v in verdicts if v.label == "spurious" and v.class_index not in cue_of_class}
            print(f"pairs [{k}]: truly spurious {len(true)}, flagged {len(flagged)}, correct {len(true & flagged)}, "
                  f"flagged on controls {len(ctrl)}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="both",
                        help="builtin, heldout, both (the two), or proving:<name> (a world of auditor.demo.worlds)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-images", type=int, default=16)
    parser.add_argument("--threshold", type=float, default=VerdictConfig.reliance_threshold)
    parser.add_argument("--quantile", type=float, default=VerdictConfig.reliance_quantile)
    parser.add_argument("--n-donors", type=int, default=VerdictConfig.n_donors)
    parser.add_argument("--arch", default="cnn16", help="proving worlds: the model (cnn16, cnn32, resnet18, vit)")
    parser.add_argument("--evidence-json", help="write every verdict's evidence and truth here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configs = {
        "swap": VerdictConfig(n_images=args.n_images, reliance_threshold=args.threshold, reliance_quantile=args.quantile,
                              n_donors=args.n_donors),
        "neutral (legacy)": VerdictConfig(n_images=args.n_images, counterfactual="neutral"),
    }
    if args.world in ("builtin", "both"):
        from auditor.demo.run import QUICK_TRAINING, QUICK_WORLD

        model = load_or_train_model(QUICK_WORLD, QUICK_TRAINING, progress=False)
        train, val = load_split(QUICK_WORLD, "train"), load_split(QUICK_WORLD, "val")
        print(f"## built-in quick world (val accuracy {accuracy(model, val):.3f})\n")
        cues = {c: cue for c, cue in QUICK_WORLD.cue_of_class.items()}
        own = np.array([int(c) in cues and bool(val.cue_flag(cues[int(c)])[i]) for i, c in enumerate(val.labels)])
        run_rules(model, train, QUICK_WORLD.class_names, cues, configs, val=val, val_cue=own, evidence_path=args.evidence_json)
    if args.world.startswith("proving:"):
        from auditor.demo.worlds import get_world
        from auditor.demo.worlds.train import load_or_train, model_spec
        from auditor.demo.worlds.train import load_split as load_proving

        world = get_world(args.world.split(":", 1)[1])
        model, info = load_or_train(world, model_spec(args.arch))
        train, val = load_proving(world, "train"), load_proving(world, "val")
        cues = {c: k.cue for c, k in enumerate(world.classes) if k.cue is not None}
        own = np.array([cues.get(int(c)) is not None and bool(val.cue_flag(cues[int(c)])[i]) for i, c in enumerate(val.labels)])
        print(f"## proving world {world.name} (val accuracy {info['val_accuracy']:.3f})\n")
        run_rules(model, train, world.class_names, cues, configs, val=val, val_cue=own, evidence_path=args.evidence_json)
    if args.world in ("heldout", "both"):
        spec = TrainSpec(epochs=10, width=16)
        train = make_heldout("train", 600)
        start = time.perf_counter()
        model = heldout_model(train, spec)
        print(f"\n## held-out world (model ready in {time.perf_counter() - start:.0f} s; "
              f"val accuracy {accuracy(model, make_heldout('val', 100)):.3f})\n")
        val = make_heldout("val", 100)
        own = val.cues[np.arange(len(val)), np.minimum(val.labels, 3)] & (val.labels < 4)
        run_rules(model, train, list(HELDOUT_CLASSES), HELDOUT_CUES, configs, val=val, val_cue=own, evidence_path=args.evidence_json)


if __name__ == "__main__":
    main()
