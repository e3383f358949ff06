"""Audit cost at scale, side by side from one run: bare forward pass, cold audit, warm audit, Ray audit.

For each N (training images; a validation split of N/8 images goes with it) the script
measures, each in a fresh subprocess so peak RSS is its own:

* ``forward``: a bare ``model(x)`` loop over the same images with the same DataLoader
  workers (no hooks, no cache);
* ``cold``: ``auditor.audit`` with an empty ``features.cache_dir`` (extraction + every stage);
* ``warm``: the same audit again, reusing the committed cache;
* ``ray``: the extraction on a local Ray instance (``engine: ray``: Ray Data read tasks and
  a model actor pool) into an empty cache, then the audit on that cache; its features are
  compared byte for byte with the cold audit's (``same``).

Images are generated from their index (a square object, a striped background, noise;
masks included), so the dataset itself needs no memory and reading costs like decoding a
small image. Models are untrained CNNs (the audit's cost does not depend on accuracy):
``small`` (3 conv layers, 128 features) and, for the largest N, ``tiny`` (2 conv layers,
32 features). Peak RSS is the measuring process's (Ray workers not included); ``cache MB``
is the size of the memmapped arrays (their touched pages count in RSS).

``--options`` also times the extraction alone with each throughput option (workers,
channels-last, bf16 autocast) at the first N.

Usage::

    python benchmarks/bench_scale.py                          # N = 2,000 8,000 32,000 128,000
    python benchmarks/bench_scale.py --sizes 2000 8000 --options
    python benchmarks/bench_scale.py --sizes 8000 --options-only --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

N_CLASSES = 10
SIZE = 32


class GeneratedImages(Dataset):
    """``n`` 32 px images made from their index: class-coloured square, striped background, noise; with masks."""

    def __init__(self, n: int, offset: int = 0):
        self.n, self.offset = n, offset

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        rng = np.random.default_rng(self.offset + i)
        label = int((self.offset + i) % N_CLASSES)
        image = rng.normal(0.0, 0.1, (3, SIZE, SIZE)).astype(np.float32)
        mask = np.zeros((SIZE, SIZE), bool)
        x, y = rng.integers(2, SIZE - 12, size=2)
        mask[y:y + 10, x:x + 10] = True
        image[label % 3][mask] += 1.0 + label / N_CLASSES
        if rng.random() < 0.5 + 0.04 * label:  # a background cue correlated with the class
            image[(label + 1) % 3] += 0.5 * ((np.arange(SIZE)[None, :] // 2) % 2) * ~mask
        return torch.from_numpy(image), label, torch.from_numpy(mask)


def make_model(kind: str) -> nn.Module:
    """An untrained CNN: ``small`` (128 features) or ``tiny`` (32 features), seeded."""
    torch.manual_seed(0)
    widths = {"small": (32, 64, 128), "tiny": (16, 32)}[kind]
    layers, channels = [], 3
    for width in widths:
        layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, N_CLASSES)).eval()


def _config(cache_dir: str, engine: str = "local", **features):
    from auditor.config import load_config

    return load_config({"progress": False, "engine": engine, "masks": {"provider": "dataset"},
                        "features": {"cache_dir": cache_dir, **features}, "data": {"batch_size": 128}})


def one(mode: str, n: int, kind: str, cache_dir: str, threads: int, extra: dict) -> dict:
    """Run one measurement in this process and return its numbers."""
    torch.set_num_threads(threads)
    model = make_model(kind)
    train, val = GeneratedImages(n), GeneratedImages(max(n // 8, 200), offset=10**8)
    started = time.perf_counter()
    result: dict = {}
    if mode == "forward":
        from auditor.data import resolve_num_workers

        workers = resolve_num_workers("auto", n, 128)
        with torch.no_grad():
            for dataset in (train, val):
                for images, _labels, _masks in DataLoader(dataset, batch_size=128, num_workers=workers):
                    model(images)
    elif mode in ("cold", "warm"):
        import auditor.api
        from auditor.api import audit

        run_features = auditor.api.run_features

        def timed(*a, **k):  # the extraction's share of the audit
            begun = time.perf_counter()
            try:
                return run_features(*a, **k)
            finally:
                result["extract_s"] = time.perf_counter() - begun

        auditor.api.run_features = timed
        audit(model, train, val, config=_config(cache_dir))
    elif mode == "ray":
        import ray

        from auditor.api import audit
        from auditor.data import ImageSource
        from auditor.features import ExtractionOptions, extract_features
        from auditor.model import ModelAdapter

        ray.init(num_cpus=threads, include_dashboard=False, log_to_driver=False, configure_logging=False)
        adapter = ModelAdapter(model)
        options = ExtractionOptions(engine="ray")
        for split, dataset in (("train", train), ("val", val)):  # what `engine: ray` does inside audit()
            extract_features(adapter, ImageSource(dataset, batch_size=128, name=split), Path(cache_dir) / "features" / split,
                             progress=False, options=options)
        result["extract_s"] = time.perf_counter() - started
        audit(model, train, val, config=_config(cache_dir))
        ray.shutdown()
    elif mode == "extract":
        from auditor.data import ImageSource
        from auditor.features import ExtractionOptions, extract_features
        from auditor.model import ModelAdapter

        source = ImageSource(train, batch_size=128, num_workers=extra.get("num_workers", "auto"))
        extract_features(ModelAdapter(model), source, Path(cache_dir) / "x", progress=False,
                         options=ExtractionOptions(autocast=extra.get("autocast", "off"),
                                                   channels_last=extra.get("channels_last", False)))
    result["seconds"] = time.perf_counter() - started
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run(mode: str, n: int, kind: str, cache_dir: str, threads: int, extra: dict | None = None) -> dict:
    """One measurement in a fresh subprocess."""
    command = [sys.executable, __file__, "--one", mode, str(n), kind, cache_dir, str(threads), json.dumps(extra or {})]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def same_cache(a: Path, b: Path) -> bool:
    """The two audits' feature caches hold the same bytes."""
    return all((a / "features" / split / f"{name}.npy").read_bytes() == (b / "features" / split / f"{name}.npy").read_bytes()
               for split in ("train", "val") for name in ("activations", "logits", "labels", "predictions"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 32000, 128000])
    parser.add_argument("--tiny-from", type=int, default=100_000, help="use the tiny model from this N on")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--options", action="store_true", help="also time each extraction option at the first N")
    parser.add_argument("--options-only", action="store_true", help="only the options table")
    parser.add_argument("--repeats", type=int, default=3, help="runs per option (the fastest is shown)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    print(f"threads {args.threads}, cores {len(os.sched_getaffinity(0))}, torch {torch.__version__}\n")
    if not args.options_only:
        print("| N train (+val) | model | forward s | cold s (extract) | warm s (extract) | ray s (extract) | extract/fwd | "
              "cold/fwd | warm/fwd | ray/fwd | peak RSS MB fwd / cold / warm / ray | cache MB | ray same |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    try:
        for n in [] if args.options_only else args.sizes:
            kind = "tiny" if n >= args.tiny_from else "small"
            forward = run("forward", n, kind, "", args.threads)
            cold_dir, ray_dir = root / f"cold-{n}", root / f"ray-{n}"
            cold = run("cold", n, kind, str(cold_dir), args.threads)
            warm = run("warm", n, kind, str(cold_dir), args.threads)
            ray = None if args.no_ray else run("ray", n, kind, str(ray_dir), args.threads)
            cache_mb = sum(p.stat().st_size for p in (cold_dir / "features").rglob("*.npy")) / 2**20
            f = forward["seconds"]
            ray_text = "n/a" if ray is None else f"{ray['seconds']:.1f} ({ray['extract_s']:.1f})"
            ray_ratio = "n/a" if ray is None else f"{ray['seconds'] / f:.2f}"
            rss = " / ".join(f"{r['peak_rss_mb']:.0f}" for r in (forward, cold, warm) + ((ray,) if ray else ()))
            same = "n/a" if ray is None else ("yes" if same_cache(cold_dir, ray_dir) else "NO")
            print(f"| {n:,} (+{max(n // 8, 200):,}) | {kind} | {f:.1f} | {cold['seconds']:.1f} ({cold['extract_s']:.1f}) | "
                  f"{warm['seconds']:.1f} ({warm['extract_s']:.1f}) | {ray_text} | {cold['extract_s'] / f:.2f} | {cold['seconds'] / f:.2f} | {warm['seconds'] / f:.2f} | {ray_ratio} | {rss} | {cache_mb:.1f} | {same} |", flush=True)
            shutil.rmtree(cold_dir, ignore_errors=True)
            shutil.rmtree(ray_dir, ignore_errors=True)
        if args.options or args.options_only:
            n = args.sizes[0]
            kind = "tiny" if n >= args.tiny_from else "small"
            print(f"\nextraction alone, N = {n:,} ({kind} model), one option changed at a time, fastest of {args.repeats}:\n")
            print("| option | seconds | images/s |")
            print("|---|---|---|")
            for name, extra in [("defaults (num_workers auto, fp32, contiguous)", {}), ("num_workers 0", {"num_workers": 0}),
                                ("channels_last", {"channels_last": True}), ("autocast bf16", {"autocast": "bf16"})]:
                seconds = []
                for _ in range(args.repeats):
                    directory = root / "options"
                    seconds.append(run("extract", n, kind, str(directory), args.threads, extra)["seconds"])
                    shutil.rmtree(directory, ignore_errors=True)
                print(f"| {name} | {min(seconds):.2f} | {n / min(seconds):.0f} |", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        mode, n, kind, cache_dir, threads, extra = sys.argv[2:8]
        print(json.dumps(one(mode, int(n), kind, cache_dir, int(threads), json.loads(extra))))
    else:
        main()
