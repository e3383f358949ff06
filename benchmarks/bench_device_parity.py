"""Device parity: the demo audit on CUDA (and with bf16 autocast + channels-last) against the same audit on CPU.

Each run audits the same cached demo model on the same data; only ``model.device`` and the
``features`` options differ. The table says whether the verdicts (spurious and core feature
sets per class), the validation spuriosity ranking (Spearman against CPU), the gaps and the
test worst-group accuracies agree with the CPU run, and the seconds each audit took
(training excluded: the model is trained, or loaded, before the first timed run).

Usage (needs a CUDA device; run on a machine that has one)::

    python bench_device_parity.py [--runs quick quick-sam full] [--json parity.json]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from auditor.concepts.stage import rank_correlations
from auditor.demo.run import (
    DEMO_TRAINING,
    DEMO_WORLD,
    QUICK_TRAINING,
    QUICK_WORLD,
    run_demo,
)
from auditor.demo.world.train import load_or_train_model

RUNS = {
    "quick": ({"quick": True, "concepts": True}, {}),
    "quick-sam": ({"quick": True}, {"masks": {"provider": "sam", "sam_model_type": "tiny"}}),
    "full": ({"quick": False}, {}),
}
VARIANTS = {
    "cpu": {"model": {"device": "cpu"}},
    "cuda": {"model": {"device": "cuda"}},
    "cuda-bf16-cl": {"model": {"device": "cuda"}, "features": {"autocast": "bf16", "channels_last": True}},
}


def summarise(result, seconds: float) -> dict:
    """The parts of a demo result that a device could change, as plain data."""
    report = result.report
    classes = range(len(result.world.class_names))
    spuriosity = np.asarray(report.spuriosity("val"), dtype=float)
    return {
        "seconds": round(seconds, 1),
        "spurious": {c: sorted(int(f) for f in report.spurious_features(c)) for c in classes},
        "core": {c: sorted(int(f) for f in report.core_features(c)) for c in classes},
        "gaps": {int(c): float(g.gap) for c, g in report.gaps.items()},
        "test": {name: {k: float(v) for k, v in scores.items()} for name, scores in result.test.items()},
        "spuriosity_val": [None if np.isnan(x) else float(x) for x in spuriosity],
    }


def spearman(a: list, b: list) -> float:
    """Spearman correlation over the images both runs scored (NaN when fewer than 3; ties share their mean rank)."""
    x = np.array([np.nan if v is None else v for v in a], dtype=float)
    y = np.array([np.nan if v is None else v for v in b], dtype=float)
    both = ~np.isnan(x) & ~np.isnan(y)
    if both.sum() < 3:
        return float("nan")
    return float(rank_correlations(x[both], y[both][:, None])[0])


def cuda_device_name() -> str:
    """The CUDA device the comparison runs on; exits with a message when there is none."""
    if not torch.cuda.is_available():
        raise SystemExit("bench_device_parity.py compares CUDA with CPU: no CUDA device is visible here")
    return torch.cuda.get_device_name(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", choices=sorted(RUNS), default=list(RUNS))
    parser.add_argument("--json", default=None, help="write every run's summary here")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {cuda_device_name()}")
    load_or_train_model(QUICK_WORLD, QUICK_TRAINING, progress=False)
    load_or_train_model(DEMO_WORLD, DEMO_TRAINING, progress=False)

    print("| run | variant | audit s | spurious sets = cpu | core sets = cpu | spuriosity Spearman vs cpu | max gap diff | ERM test wg | low_spuriosity test wg |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    results: dict[str, dict] = {}
    for run in args.runs:
        demo_kwargs, extra = RUNS[run]
        for variant, overrides in VARIANTS.items():
            if variant == "cuda-bf16-cl" and run != "full":
                continue
            start = time.perf_counter()
            try:
                result = run_demo(output_dir=None, progress=False, config={**extra, **overrides}, **demo_kwargs)
                results[f"{run}/{variant}"] = summarise(result, time.perf_counter() - start)
            except Exception as error:
                results[f"{run}/{variant}"] = {"error": f"{type(error).__name__}: {error}"}
            print(table_row(run, variant, results), flush=True)
            if args.json:  # after every run, so that a run cut short keeps what it measured
                with open(args.json, "w") as handle:
                    json.dump(results, handle, indent=1)


def table_row(run: str, variant: str, results: dict[str, dict]) -> str:
    """One markdown row: ``run/variant`` against ``run/cpu``."""
    row, base = results[f"{run}/{variant}"], results.get(f"{run}/cpu", {})
    if "error" in row or "error" in base:
        return f"| {run} | {variant} | error: {row.get('error') or base.get('error')} | | | | | | |"
    gap_diff = max((abs(row["gaps"][c] - base["gaps"][c]) for c in row["gaps"]), default=0.0)
    return (f"| {run} | {variant} | {row['seconds']} | {row['spurious'] == base['spurious']} | {row['core'] == base['core']} | "
            f"{spearman(row['spuriosity_val'], base['spuriosity_val']):.4f} | {gap_diff:.4f} | "
            f"{row['test']['original (ERM)']['worst_group']:.4f} | {row['test']['low_spuriosity']['worst_group']:.4f} |")


if __name__ == "__main__":
    main()
