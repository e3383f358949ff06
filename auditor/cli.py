"""Command-line interface: ``auditor demo | audit | report | config | export``.

Exit codes (also in ``auditor --help``):

* 0: the audit ran and the gate passed (or no gate was set);
* 1: the gate failed (one line on stderr says which condition held);
* 2: bad input or configuration (unknown YAML key, unknown model name, folder without
  images, weights that do not fit the model, ...), including argument errors;
* 3: an unexpected error (a bug: please report it with the traceback from ``-v``);
* 130: interrupted.

The configuration (YAML file plus flags) is validated whole by
:func:`auditor.config.load_config` before the model or any image is read. Without a
terminal there are no progress bars; the library's INFO lines then show each stage
(``-q`` hides them). ``auditor --help`` and ``auditor config`` do not import torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Only light modules here: `auditor --help` and `auditor config` must not import torch.
from auditor.config import (
    PREPROCESSING,
    REQUIRED_FOR_CLI,
    AuditConfig,
    defaults_yaml,
    load_config,
    read_yaml,
    set_dotted,
)
from auditor.errors import AuditorError, ConfigError
from auditor.report.summary import format_summary

logger = logging.getLogger("auditor.cli")

EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_UNEXPECTED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
DEFAULT_OUTPUT_DIR = "auditor-out"

__all__ = ["DEFAULT_OUTPUT_DIR", "build_parser", "defaults_yaml", "format_summary", "main", "resolve_audit_config"]


# --------------------------------------------------------------------------- configuration


def _parse_set(items: Sequence[str]) -> list[tuple[str, Any]]:
    import yaml

    pairs = []
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value (e.g. gaps.min_k=5); got {item!r}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        pairs.append((key.strip(), value))
    return pairs


def _check_required(config: AuditConfig) -> None:
    """The keys the command needs beyond the library's: where the model and the images come from."""
    for dotted in REQUIRED_FOR_CLI:
        section, key = dotted.split(".")
        if getattr(getattr(config, section), key) in (None, ""):
            example = {"model.source": "YAML `model: {source: ...}` or --model), e.g. 'timm:resnet18'",
                       "data.train": "YAML `data: {train: <folder>}` or --data)"}[dotted]
            raise ConfigError(f"`{dotted}` is required ({example}")


def resolve_audit_config(args: argparse.Namespace) -> AuditConfig:
    """YAML file + flags -> a validated :class:`AuditConfig`. Flags override the file only when given.

    The whole configuration is validated first (unknown keys before anything else, then
    values, gate expressions and tuning baselines); only then are the keys the command
    needs (``model.source``, ``data.train``) required.

    Args:
        args: the parsed ``auditor audit`` arguments.

    Returns:
        The configuration, with ``report.output_dir`` defaulting to ``auditor-out``.

    Raises:
        ConfigError: unknown key (with the allowed ones), bad value, missing model or data.
    """
    raw = read_yaml(args.config) if args.config is not None else {}
    flags = {
        "model.source": args.model, "model.weights": args.weights, "model.num_classes": args.num_classes,
        "model.device": args.device, "data.train": args.data, "data.val": args.val_data,
        "data.batch_size": args.batch_size, "data.image_size": args.image_size, "data.preprocessing": args.preprocessing,
        "report.output_dir": args.output_dir, "report.human_annotations": args.annotations, "seed": args.seed,
        "engine": getattr(args, "engine", None),
    }
    for key, value in flags.items():
        if value is not None:
            set_dotted(raw, key, value)
    if args.fail_on:
        set_dotted(raw, "gate.fail_on", list(args.fail_on))
    if args.no_html:
        set_dotted(raw, "report.html", False)
    if args.annotations is not None or getattr(args, "annotations_as_labels", False):
        # `--annotations CSV` uses the human labels for the pairs they cover (issue 11); agreement is still measured
        set_dotted(raw, "report.annotations_as_labels", True)
    mlflow_uri = getattr(args, "mlflow", None)
    if mlflow_uri is not None:  # `--mlflow` alone: the configured (or default) store; `--mlflow URI`: that one
        set_dotted(raw, "report.mlflow.enabled", True)
        if mlflow_uri:
            set_dotted(raw, "report.mlflow.tracking_uri", mlflow_uri)
    for flag, key in (("neurontune", "neurontune.enabled"), ("discovery", "discovery.enabled"), ("noise", "noise.enabled"), ("concepts", "concepts.enabled")):
        if getattr(args, flag, False):
            set_dotted(raw, key, True)
    if getattr(args, "pool_dir", None):
        set_dotted(raw, "discovery.enabled", True)
        set_dotted(raw, "discovery.pool_dir", args.pool_dir)
    for key, value in _parse_set(args.set or []):
        set_dotted(raw, key, value)
    if args.progress is not None:
        raw["progress"] = args.progress
    elif "progress" not in raw:
        raw["progress"] = sys.stderr.isatty()
    config = load_config(raw)  # every key and value, gate expressions included, before any file is opened
    _check_required(config)
    if not config.report.output_dir:
        config = config.replace(**{"report.output_dir": DEFAULT_OUTPUT_DIR})
    return config


# --------------------------------------------------------------------------- commands


def _transform(model, config: AuditConfig):
    """The eval transform and the (possibly updated) config carrying its mean/std."""
    import dataclasses

    from auditor.adapters.models import Preprocessing, model_preprocessing

    mode, size = config.data.preprocessing, config.data.image_size
    own = model_preprocessing(model) if mode in ("auto", "model") else None
    if mode == "model" and own is None:
        raise ConfigError("`data.preprocessing: model` but the model exposes no preprocessing (only timm and HF models do); use 'auto' or 'none'")
    if own is not None and size is not None:
        first = lambda v: v if isinstance(v, int) else v[0]
        ratio = first(own.resize) / first(own.crop_size)
        own = dataclasses.replace(own, resize=max(size, round(size * ratio)), crop_size=size)
    if own is not None:
        logger.info("preprocessing from the %s: resize %s, crop %s, mean %s", own.source, own.resize, own.crop_size, own.mean)
        config = config.replace(**{"data.mean": list(own.mean) if own.mean else None, "data.std": list(own.std) if own.std else None})
        return own, config
    mean, std = config.data.mean, config.data.std
    if size is not None:
        return Preprocessing(resize=size, crop_size=size, mean=tuple(mean) if mean else None, std=tuple(std) if std else None), config
    if mean is None:
        return None, config

    import torchvision.transforms as T

    return T.Compose([T.ToTensor(), T.Normalize(mean, std)]), config


def _quiet_hugging_face(config: AuditConfig) -> None:
    """Turn off transformers' and datasets' own progress bars (only when those libraries are in use)."""
    if str(config.model.source or "").startswith(("hf:", "huggingface:")):
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:
            pass
    specs = [config.data.train, config.data.val]
    if any(isinstance(s, dict) and s.get("type") == "hf" or isinstance(s, str) and (Path(s) / "dataset_info.json").exists()
           or isinstance(s, str) and (Path(s) / "dataset_dict.json").exists() for s in specs):
        try:
            import datasets

            datasets.disable_progress_bars()
        except ImportError:
            pass


def _show_stage_lines(args: argparse.Namespace) -> None:
    """Without progress bars (no terminal), let the library's INFO lines show the run's stages.

    ``-q`` keeps only errors and ``-v``/``-vv`` already show INFO/DEBUG from every logger,
    so only the default verbosity changes: the ``auditor`` logger goes to INFO.
    """
    if not getattr(args, "quiet", False) and not getattr(args, "verbose", 0):
        logging.getLogger("auditor").setLevel(logging.INFO)


def cmd_audit(args: argparse.Namespace) -> int:
    """Run a full audit from a YAML file and flags; write results.json and report.html; apply the gate."""
    config = resolve_audit_config(args)  # everything is checked before the model or an image is read
    if config.report.mlflow.enabled:  # a missing extra fails before the audit, not after it
        from auditor.integrations import require

        require("mlflow", "mlflow", "`auditor audit --mlflow` (or `report.mlflow.enabled`)")
    if config.engine == "ray":
        from auditor.engines import require_ray

        require_ray()  # exit 2 with the pip command when the extra is missing

    from auditor.adapters.data import load_dataset
    from auditor.adapters.models import load_model
    from auditor.api import audit, write_outputs
    from auditor.gate import gate_verdict

    if not config.progress:
        _quiet_hugging_face(config)
    model = load_model(config.model.source, weights=config.model.weights, num_classes=config.model.num_classes, **config.model.kwargs)
    if not config.progress:
        _show_stage_lines(args)  # from here on the run's stages log at INFO (a bad model or key still gives one error line)
    transform, config = _transform(model, config)
    train, class_names = load_dataset(config.data.train, transform=transform)
    val = None
    if config.data.val:
        val, val_names = load_dataset(config.data.val, transform=transform)
        if list(val_names) != list(class_names):
            raise ConfigError(f"`data.val` has classes {val_names[:10]} but `data.train` has {class_names[:10]}; both must list the same classes in the same order")
    output_dir = config.report.output_dir
    report = audit(model, train, val, class_names=class_names, config=config.replace(**{"report.output_dir": None}))
    report.config = config
    results = report.to_dict()
    gate = gate_verdict(results, config.gate.fail_on) if config.gate.fail_on else None
    written = write_outputs(report, output_dir, gate)
    if gate is not None and gate.get("error"):  # the results are written; the gate could not be evaluated
        raise ConfigError(gate["error"])
    if config.report.mlflow.enabled:
        import os

        from auditor.integrations.mlflow import DEFAULT_TRACKING_URI

        run_id = report.log_to_mlflow(output_dir=output_dir, gate=gate)
        uri = config.report.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
        print(f"mlflow run: {run_id} ({uri})")
    if not args.quiet_summary:  # from the written results.json: everything the report shows (warnings, skipped images)
        print(format_summary(json.loads(Path(written["results"]).read_text())))
        print(f"results: {written['results']}" + (f"\nreport:  {written['html']}" if "html" in written else ""))
    logger.info("wrote outputs to %s", output_dir)
    return _gate_exit(gate)


def _gate_exit(gate: dict | None) -> int:
    """Print the gate's one-line reason (stderr when it failed) and return the exit code."""
    if gate is None:
        return EXIT_OK
    if not gate["passed"]:
        print(gate["reason"], file=sys.stderr)
        return EXIT_GATE_FAILED
    print(gate["reason"])
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """Re-render report.html from a results.json (and optionally re-check a gate or human labels)."""
    from auditor.gate import gate_verdict, parse_conditions
    from auditor.report.audit_report import read_results

    if args.fail_on:
        parse_conditions(args.fail_on)  # a malformed condition fails before anything is read
    path = Path(args.results)
    results = read_results(path)
    if args.annotations:
        from auditor.annotations import agreement, read_annotations

        names = results.get("class_names", [])
        section = agreement(read_annotations(args.annotations, names), results, names)
        results.setdefault("sections", {})["human_agreement"] = {"enabled": True, "source": args.annotations, **section}
    gate = None
    if args.fail_on:
        gate = gate_verdict(results, args.fail_on)
        if gate.get("error"):
            raise ConfigError(gate["error"])
        results["gate"] = gate

    from auditor.report.html import render_html

    output = Path(args.output) if args.output else path.with_name("report.html")
    render_html(results, path.parent, output)
    print(f"report: {output}")
    return _gate_exit(gate)


def cmd_export(args: argparse.Namespace) -> int:
    """Export an audit's results to another tool (``auditor export fiftyone results.json --name NAME``)."""
    from auditor.integrations.fiftyone import _fiftyone, export_results

    _fiftyone()  # a missing extra fails before results.json is read

    dataset = export_results(args.results, args.name, split=args.split, image_dir=args.image_dir,
                             data=args.data, persistent=not args.no_persistent)
    print(f"fiftyone dataset: {dataset.name} ({len(dataset)} samples; views: {', '.join(dataset.list_saved_views())})")
    print(f'open it with: python -c "import fiftyone as fo; fo.launch_app(fo.load_dataset(\'{dataset.name}\')).wait()"')
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    """Print the default YAML, or validate a YAML file."""
    if args.validate:
        namespace = argparse.Namespace(config=args.validate, **{k: None for k in _AUDIT_FLAG_DESTS}, fail_on=None, no_html=False, set=None, progress=None,
                                       neurontune=False, discovery=False, noise=False, concepts=False, pool_dir=None,
                                       annotations_as_labels=False, mlflow=None)
        resolve_audit_config(namespace)
        print(f"{args.validate}: valid")
        return EXIT_OK
    print(defaults_yaml(), end="")
    return EXIT_OK


def _demo_runner():
    """``run_demo`` of the demo package, found through its entry point (the library never imports the demo)."""
    from importlib.metadata import entry_points

    points = entry_points(group="auditor.demo", name="run")
    if not points:
        raise ConfigError("the demo is not installed (no `auditor.demo` entry point); reinstall auditor with `pip install .`")
    return next(iter(points)).load()


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the bundled demo on the generated world."""
    run_demo = _demo_runner()
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    if not progress:
        _show_stage_lines(args)
    result = run_demo(output_dir=args.output_dir, quick=args.quick, progress=progress, concepts=args.concepts)
    print(result.text())
    return EXIT_OK


_AUDIT_FLAG_DESTS = ("model", "weights", "num_classes", "device", "data", "val_data", "batch_size", "image_size",
                     "preprocessing", "output_dir", "annotations", "seed")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``auditor`` command."""
    epilog = "exit codes: 0 passed, 1 gate failed, 2 bad input or configuration, 3 unexpected error, 130 interrupted"
    parser = argparse.ArgumentParser(prog="auditor", description="Audit an image classifier for spurious features.", epilog=epilog)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def progress_flags(p: argparse.ArgumentParser) -> None:
        group = p.add_mutually_exclusive_group()
        group.add_argument("--progress", dest="progress", action="store_true", default=None, help="show progress bars even when not on a terminal")
        group.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")

    demo = commands.add_parser("demo", help="audit a small CNN on the generated world (no downloads)", epilog=epilog)
    demo.add_argument("--output-dir", default="auditor-demo", help="folder for results.json and report.html (default: auditor-demo)")
    demo.add_argument("--quick", action="store_true", help="smaller world and fewer epochs")
    demo.add_argument("--concepts", action="store_true", help="also run the concept stage with the project's tiny CLIP (trained on first use)")
    progress_flags(demo)
    demo.set_defaults(func=cmd_demo)

    run = commands.add_parser("audit", help="audit a model on a dataset (YAML config and/or flags)", epilog=epilog,
                              description="Audit a model. Flags override the YAML file's values when given.")
    run.add_argument("--config", "-c", help="audit YAML (see `auditor config --print-defaults`)")
    run.add_argument("--model", help="model.source: timm:<name>, torchvision:<name>, hf:<folder>, module:function, file.pt")
    run.add_argument("--weights", help="model.weights: local state_dict file")
    run.add_argument("--num-classes", type=int, help="model.num_classes")
    run.add_argument("--device", help="model.device: auto, cpu, cuda, cuda:1, mps")
    run.add_argument("--data", help="data.train: image folder or saved HF dataset folder")
    run.add_argument("--val-data", help="data.val: image folder or saved HF dataset folder")
    run.add_argument("--batch-size", type=int, help="data.batch_size")
    run.add_argument("--image-size", type=int, help="data.image_size")
    run.add_argument("--preprocessing", help=f"data.preprocessing: {', '.join(PREPROCESSING)}")
    run.add_argument("--output-dir", "-o", help=f"report.output_dir (default: {DEFAULT_OUTPUT_DIR})")
    run.add_argument("--annotations", help="report.human_annotations: CSV of human core/spurious labels; they decide the pairs they "
                     "cover for the rankings, gaps and tuning, and are compared with the automated verdicts")
    run.add_argument("--annotations-as-labels", action="store_true",
                     help="report.annotations_as_labels: the CSV's labels decide the annotated pairs for the rankings, gaps and tuning")
    run.add_argument("--mlflow", nargs="?", const="", metavar="TRACKING_URI",
                     help="report.mlflow: log the audit to MLflow (default store: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db); "
                          'needs pip install "auditor[mlflow]"')
    run.add_argument("--seed", type=int, help="seed")
    run.add_argument("--engine", choices=("local", "ray"), help='engine: where features are extracted: local, or ray (pip install "auditor[ray]")')
    run.add_argument("--fail-on", action="append", metavar="COND", help="gate condition such as 'max_gap>0.10' (repeatable; replaces gate.fail_on)")
    run.add_argument("--no-html", action="store_true", help="write results.json only")
    run.add_argument("--concepts", action="store_true", help="concepts.enabled: rank images by CLIP concepts (needs local CLIP weights)")
    run.add_argument("--neurontune", action="store_true", help="neurontune.enabled: also tune a head with NeuronTune-style neuron regulation")
    run.add_argument("--discovery", action="store_true", help="discovery.enabled: probe the model with images whose class object is removed")
    run.add_argument("--pool-dir", help="discovery.pool_dir: folder of unrelated images for the discovery probe (implies --discovery)")
    run.add_argument("--noise", action="store_true", help="noise.enabled: flag possible label noise and test crops to the object")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="any config key, e.g. --set gaps.min_k=5 (repeatable)")
    run.add_argument("--quiet-summary", action="store_true", help="do not print the summary table")
    progress_flags(run)
    run.set_defaults(func=cmd_audit)

    report = commands.add_parser("report", help="re-render report.html from a results.json", epilog=epilog)
    report.add_argument("results", help="results.json written by `auditor audit`")
    report.add_argument("--output", help="HTML file (default: report.html beside results.json)")
    report.add_argument("--annotations", help="CSV of human labels to compare with the verdicts")
    report.add_argument("--fail-on", action="append", metavar="COND", help="gate condition, as for `audit`")
    report.set_defaults(func=cmd_report)

    export = commands.add_parser("export", help="export an audit to another tool (FiftyOne)", epilog=epilog)
    targets = export.add_subparsers(dest="target", metavar="TARGET")
    targets.required = True
    fiftyone = targets.add_parser("fiftyone", help='a FiftyOne dataset of the audited images (needs pip install "auditor[fiftyone]")',
                                  epilog=epilog)
    fiftyone.add_argument("results", help="results.json written by `auditor audit`")
    fiftyone.add_argument("--name", required=True, help="name of the FiftyOne dataset (replaced when it exists)")
    fiftyone.add_argument("--split", choices=["train", "val"], help="audited split to export (default: the evaluation split)")
    fiftyone.add_argument("--data", help="the split's image folder when results.json's `data` paths moved")
    fiftyone.add_argument("--image-dir", help="where images that are not files (e.g. HF datasets) are written once (default: beside results.json)")
    fiftyone.add_argument("--no-persistent", action="store_true", help="do not keep the dataset after the process ends")
    fiftyone.set_defaults(func=cmd_export)

    config = commands.add_parser("config", help="show the default YAML or validate a YAML file", epilog=epilog)
    group = config.add_mutually_exclusive_group(required=True)
    group.add_argument("--print-defaults", action="store_true", help="print every key with its default and documentation")
    group.add_argument("--validate", metavar="YAML", help="check a YAML file without running anything")
    config.set_defaults(func=cmd_config)
    return parser


def _configure_logging(verbose: int, quiet: bool) -> None:
    """Errors only with ``-q``; warnings by default; INFO with ``-v``; DEBUG with ``-vv``.

    Commands that run without progress bars raise the ``auditor`` logger to INFO afterwards
    (:func:`_show_stage_lines`); each call starts from the plain levels again.
    """
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)
    logging.getLogger("auditor").setLevel(logging.NOTSET)
    for noisy in ("PIL", "matplotlib", "urllib3", "filelock", "fsspec"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``auditor`` command; returns the exit code.

    Example:
        >>> main(["config", "--print-defaults"])  # doctest: +SKIP
        0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except AuditorError as error:
        print(f"auditor: error: {error}", file=sys.stderr)
        logger.debug("details", exc_info=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("auditor: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # a bug: say so, with the traceback under -v
        print(f"auditor: unexpected error: {type(error).__name__}: {error} (run with -v for the traceback)", file=sys.stderr)
        logger.info("traceback", exc_info=True)
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
