"""Render an auditor report in headless Chromium and save a PNG screenshot for people to look at.

Usage:
    python scripts/screenshot_report.py auditor-out/report.html --output report.png [--width 1280 --height 3000]
    python scripts/screenshot_report.py --demo --output report.png   # quick audit of the generated world first

Prints how many inline images the browser decoded. Needs Chromium (Debian: apt-get install chromium).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path


def _demo_report(out_dir: Path) -> Path:
    """A small real audit of the generated world (cached CNN), written with the CLI's own writer."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)
    from auditor.adapters.data import write_image_folder
    from auditor.cli import main
    from auditor.demo.world.generator import WorldSpec
    from auditor.demo.world.train import TrainSpec, load_or_train_model, load_split

    spec = WorldSpec(image_size=32, n_train=60, n_val=40, n_test=10)
    model = load_or_train_model(spec, TrainSpec(epochs=12), progress=False)
    torch.save(model.state_dict(), out_dir / "cnn.pt")
    for split in ("train", "val"):
        data = load_split(spec, split)
        write_image_folder(data.images, data.labels, spec.class_names, out_dir / split, data.masks)
    classes = "[" + ",".join(spec.class_names) + "]"
    config = out_dir / "audit.yaml"
    config.write_text(
        f"model: {{source: 'auditor.demo.world.model:SmallCNN', kwargs: {{n_classes: 5}}, weights: '{out_dir / 'cnn.pt'}'}}\n"
        f"data:\n  train: {{type: imagefolder, path: '{out_dir / 'train'}', masks: '{out_dir / 'train_masks'}', classes: {classes}}}\n"
        f"  val: {{type: imagefolder, path: '{out_dir / 'val'}', masks: '{out_dir / 'val_masks'}', classes: {classes}}}\n"
        "gaps: {min_k: 5, n_bootstrap: 200}\ntuning: {epochs: 60}\n"
        f"report: {{output_dir: '{out_dir / 'report'}'}}\n"
    )
    code = main(["audit", "-c", str(config), "--quiet-summary", "--fail-on", "max_gap>0.10"])
    print(f"demo audit exit code {code} (1 = the gate caught the spurious model)")
    return out_dir / "report" / "report.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", nargs="?", help="report.html to render")
    parser.add_argument("--demo", action="store_true", help="run a small audit of the generated world first")
    parser.add_argument("--output", default="report.png", help="PNG to write (default: report.png)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=3000)
    args = parser.parse_args(argv)
    from auditor.report.html import browser_snapshot, find_browser

    if find_browser() is None:
        print("no Chromium found; install it (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    if args.demo:
        report = _demo_report(Path(tempfile.mkdtemp(prefix="auditor-screenshot-")))
    elif args.report:
        report = Path(args.report)
    else:
        parser.error("give a report.html or --demo")
    dom = browser_snapshot(report, args.output, width=args.width, height=args.height)
    rendered = re.search(r"(\d+)/(\d+) images rendered", dom)
    print(f"screenshot: {args.output} ({rendered.group(0) if rendered else 'image check not found'})")
    return 0 if rendered and rendered.group(1) == rendered.group(2) else 1


if __name__ == "__main__":
    sys.exit(main())
