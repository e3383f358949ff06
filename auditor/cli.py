"""Command-line interface: ``auditor demo | audit | report | config``.

Exit codes (also in ``auditor --help``):

* 0: the audit ran and the gate passed (or no gate was set);
* 1: the gate failed (one line on stderr says which condition held);
* 2: bad input or configuration (unknown YAML key, unknown model name, folder without
  images, weights that do not fit the model, ...), including argument errors;
* 3: an unexpected error (a bug: please report it with the traceback from ``-v``);
* 130: interrupted.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from auditor.errors import AuditorError, ConfigError

logger = logging.getLogger("auditor.cli")

EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_UNEXPECTED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
DEFAULT_OUTPUT_DIR = "auditor-out"
PREPROCESSING = ("auto", "model", "none")

# Keys the CLI reads itself (where the model and data come from); the rest is AuditConfig.
INPUT_KEYS: dict[str, dict[str, tuple[Any, str]]] = {
    "model": {
        "source": (None, "where the model comes from: 'timm:<name>', 'torchvision:<name>', 'hf:<folder>', "
                         "'package.module:function', 'file.py:function' or a TorchScript file (required)"),
        "weights": (None, "local state_dict file (.pt/.pth/.safetensors) for 'timm:'/'torchvision:'/entry points"),
        "num_classes": (None, "head outputs (read from the weights when omitted)"),
        "kwargs": ({}, "extra keyword arguments for the model builder (e.g. img_size for timm ViTs)"),
    },
    "data": {
        "train": (None, "images to audit: an ImageFolder path, a saved HF dataset folder, or a mapping "
                        "{type: imagefolder|csv|hf, ...} (required)"),
        "val": (None, "validation images, same forms as `data.train` (recommended)"),
        "preprocessing": ("auto", "'auto' (the model's own eval transform where timm/HF expose it, else plain), "
                                  "'model' (require it), 'none' (plain: resize to image_size, to tensor, normalise with mean/std)"),
        "image_size": (None, "resize (shorter side) and centre-crop to this for plain preprocessing; images keep their size when null"),
    },
}
_TOP_LEVEL_DOCS = {"seed": "seed of every random choice (bootstrap, sampling, tuning)",
                   "progress": "progress bars (the CLI turns them off when stderr is not a terminal unless set)"}


# --------------------------------------------------------------------------- configuration


def _field_docs(cls: type) -> dict[str, str]:
    """Attribute descriptions from a dataclass's Google-style docstring."""
    docs, current = {}, None
    in_attributes = False
    for line in (cls.__doc__ or "").splitlines():
        stripped = line.strip()
        if stripped == "Attributes:":
            in_attributes = True
            continue
        if not in_attributes or not stripped:
            continue
        match = re.match(r"^([a-z_]+(?:, [a-z_]+)*):\s*(.*)$", stripped)
        if match and line.startswith(" " * 8) and not line.startswith(" " * 12):
            for name in match.group(1).split(", "):
                docs[name] = match.group(2)
            current = match.group(1).split(", ")
        elif current:
            for name in current:
                docs[name] += " " + stripped
    return docs


def _yaml_scalar(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").removesuffix("...").strip()


def defaults_yaml() -> str:
    """The full audit YAML with default values and a comment on every key.

    Returns:
        YAML text: ``AuditConfig().to_dict()`` plus the CLI's input keys (``model.source``,
        ``data.train``, ...), each key commented with its documentation.
    """
    from auditor.config import AuditConfig, CHOICES

    config = AuditConfig()
    lines = ["# auditor audit configuration: every key with its default.",
             "# Run with `auditor audit --config audit.yaml`; unknown keys are errors.", ""]
    top_docs = _TOP_LEVEL_DOCS
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if not dataclasses.is_dataclass(value):
            lines.append(f"{field.name}: {_yaml_scalar(value)}  # {top_docs.get(field.name, '')}".rstrip(" #"))
            continue
        section_doc = (type(value).__doc__ or "").strip().splitlines()[0]
        lines += ["", f"# {section_doc}", f"{field.name}:"]
        for name, (default, doc) in INPUT_KEYS.get(field.name, {}).items():
            if dataclasses.is_dataclass(value) and name in {f.name for f in dataclasses.fields(value)}:
                continue  # the core config now owns this key
            lines.append(f"  {name}: {_yaml_scalar(default)}  # [CLI] {doc}")
        docs = _field_docs(type(value))
        for sub in dataclasses.fields(value):
            doc = docs.get(sub.name, "")
            choices = CHOICES.get(f"{field.name}.{sub.name}")
            if choices:
                doc = f"{doc} One of {list(choices)}."
            lines.append(f"  {sub.name}: {_yaml_scalar(getattr(value, sub.name))}  # {doc}".rstrip(" #"))
    return "\n".join(lines) + "\n"


def _split_inputs(raw: dict) -> tuple[dict, dict]:
    """Separate the CLI's input keys from the AuditConfig keys of a YAML mapping."""
    from auditor.config import AuditConfig

    config = copy.deepcopy(raw)
    inputs: dict[str, dict[str, Any]] = {"model": {}, "data": {}}
    defaults = AuditConfig()
    core_fields = {
        f.name: {sub.name for sub in dataclasses.fields(getattr(defaults, f.name))}
        for f in dataclasses.fields(defaults)
        if dataclasses.is_dataclass(getattr(defaults, f.name))
    }
    for section, keys in INPUT_KEYS.items():
        block = config.get(section)
        if block is None:
            continue
        if not isinstance(block, dict):
            raise ConfigError(f"config section `{section}` must be a mapping; got {type(block).__name__}")
        for key in keys:
            if key in block:
                inputs[section][key] = block[key]
                if key not in core_fields.get(section, set()):
                    del block[key]
    return inputs, config


def _check_inputs(inputs: dict) -> None:
    model, data = inputs["model"], inputs["data"]
    if not model.get("source"):
        raise ConfigError("`model.source` is required (YAML `model: {source: ...}` or --model), e.g. 'timm:resnet18'")
    if not isinstance(model["source"], str):
        raise ConfigError(f"`model.source` must be a string; got {model['source']!r}")
    if model.get("weights") is not None and not isinstance(model["weights"], str):
        raise ConfigError(f"`model.weights` must be a file path; got {model['weights']!r}")
    num = model.get("num_classes")
    if num is not None and (not isinstance(num, int) or isinstance(num, bool) or num <= 0):
        raise ConfigError(f"`model.num_classes` must be a positive integer; got {num!r}")
    if not isinstance(model.get("kwargs", {}) or {}, dict):
        raise ConfigError(f"`model.kwargs` must be a mapping; got {model['kwargs']!r}")
    if not data.get("train"):
        raise ConfigError("`data.train` is required (YAML `data: {train: <folder>}` or --data)")
    for key in ("train", "val"):
        if data.get(key) is not None and not isinstance(data[key], (str, dict)):
            raise ConfigError(f"`data.{key}` must be a path or a mapping; got {data[key]!r}")
    pre = data.get("preprocessing", "auto")
    if pre not in PREPROCESSING:
        raise ConfigError(f"`data.preprocessing` must be one of {list(PREPROCESSING)}; got {pre!r}")
    size = data.get("image_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise ConfigError(f"`data.image_size` must be a positive integer; got {size!r}")


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set `{dotted}`: `{part}` is not a section")
    node[leaf] = value


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


def _read_yaml(path: str | None) -> dict:
    import yaml

    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {path!r} does not exist")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path!r} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping of sections; got {type(data).__name__}")
    return data


def resolve_audit_config(args: argparse.Namespace) -> tuple[dict, Any]:
    """YAML file + flags -> (inputs, AuditConfig). Flags override the file only when given.

    Raises:
        ConfigError: unknown key (with the allowed ones), bad value, missing model or data.
    """
    from auditor.config import load_config

    raw = _read_yaml(args.config)
    flags = {
        "model.source": args.model, "model.weights": args.weights, "model.num_classes": args.num_classes,
        "model.device": args.device, "data.train": args.data, "data.val": args.val_data,
        "data.batch_size": args.batch_size, "data.image_size": args.image_size, "data.preprocessing": args.preprocessing,
        "report.output_dir": args.output_dir, "report.human_annotations": args.annotations, "seed": args.seed,
    }
    for key, value in flags.items():
        if value is not None:
            _set_dotted(raw, key, value)
    if args.fail_on:
        _set_dotted(raw, "gate.fail_on", list(args.fail_on))
    if args.no_html:
        _set_dotted(raw, "report.html", False)
    for flag, key in (("neurontune", "neurontune.enabled"), ("discovery", "discovery.enabled"), ("noise", "noise.enabled"), ("concepts", "concepts.enabled")):
        if getattr(args, flag, False):
            _set_dotted(raw, key, True)
    if getattr(args, "pool_dir", None):
        _set_dotted(raw, "discovery.enabled", True)
        _set_dotted(raw, "discovery.pool_dir", args.pool_dir)
    for key, value in _parse_set(args.set or []):
        _set_dotted(raw, key, value)
    if args.progress is not None:
        raw["progress"] = args.progress
    elif "progress" not in raw:
        raw["progress"] = sys.stderr.isatty()
    inputs, rest = _split_inputs(raw)
    _check_inputs(inputs)
    config = load_config(rest)
    if not config.report.output_dir:
        config = config.replace(**{"report.output_dir": DEFAULT_OUTPUT_DIR})
    from auditor.gate import TUNING_METRICS, parse_conditions

    for condition in parse_conditions(config.gate.fail_on):  # fail before the audit, not after it
        if condition.metric in TUNING_METRICS and not config.tuning.enabled:
            raise ConfigError(f"gate condition {str(condition)!r} needs head-tuning metrics but `tuning.enabled` is false; "
                              "enable tuning or drop the condition")
    return inputs, config


# --------------------------------------------------------------------------- commands


def _transform(model, inputs: dict, config):
    """The eval transform and the (possibly updated) config carrying its mean/std."""
    from auditor.adapters.models import Preprocessing, model_preprocessing

    data = inputs["data"]
    mode = data.get("preprocessing", "auto")
    size = data.get("image_size")
    own = model_preprocessing(model) if mode in ("auto", "model") else None
    if mode == "model" and own is None:
        raise ConfigError("`data.preprocessing: model` but the model exposes no preprocessing (only timm and HF models do); use 'auto' or 'none'")
    if own is not None and size is not None:
        first = lambda v: v if isinstance(v, int) else v[0]  # noqa: E731
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


def _quiet_hugging_face(model_in: dict, data_in: dict) -> None:
    """Turn off transformers' and datasets' own progress bars (only when those libraries are in use)."""
    if str(model_in.get("source", "")).startswith(("hf:", "huggingface:")):
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:
            pass
    specs = [data_in.get("train"), data_in.get("val")]
    if any(isinstance(s, dict) and s.get("type") == "hf" or isinstance(s, str) and (Path(s) / "dataset_info.json").exists()
           or isinstance(s, str) and (Path(s) / "dataset_dict.json").exists() for s in specs):
        try:
            import datasets

            datasets.disable_progress_bars()
        except ImportError:
            pass


def cmd_audit(args: argparse.Namespace) -> int:
    """Run a full audit from a YAML file and flags; write results.json and report.html; apply the gate."""
    from auditor.adapters.data import load_dataset
    from auditor.adapters.models import load_model
    from auditor.api import audit, write_outputs
    from auditor.gate import evaluate_gate

    inputs, config = resolve_audit_config(args)
    model_in, data_in = inputs["model"], inputs["data"]
    if not config.progress:
        _quiet_hugging_face(model_in, data_in)
    model = load_model(model_in["source"], weights=model_in.get("weights"), num_classes=model_in.get("num_classes"), **(model_in.get("kwargs") or {}))
    transform, config = _transform(model, inputs, config)
    train, class_names = load_dataset(data_in["train"], transform=transform)
    val = None
    if data_in.get("val"):
        val, val_names = load_dataset(data_in["val"], transform=transform)
        if list(val_names) != list(class_names):
            raise ConfigError(f"`data.val` has classes {val_names[:10]} but `data.train` has {class_names[:10]}; both must list the same classes in the same order")
    output_dir = config.report.output_dir
    report = audit(model, train, val, class_names=class_names, config=config.replace(**{"report.output_dir": None}))
    report.config = config
    gate = None
    passed, reason, gate_error = True, "", None
    if config.gate.fail_on:
        try:
            passed, reason = evaluate_gate(report.to_dict(), config.gate.fail_on)
        except ConfigError as error:  # still write what the audit found before failing
            gate_error, passed, reason = error, False, f"gate error: {error}"
        gate = {"conditions": list(config.gate.fail_on), "passed": passed, "reason": reason}
    written = write_outputs(report, output_dir, gate)
    if gate_error is not None:
        raise gate_error
    if not args.quiet_summary:
        print(report.summary())
        print(f"results: {written['results']}" + (f"\nreport:  {written['html']}" if "html" in written else ""))
    logger.info("wrote outputs to %s", output_dir)
    return _gate_exit(passed, reason)


def _gate_exit(passed: bool, reason: str) -> int:
    """Print the gate's one-line reason (stderr when it failed) and return the exit code."""
    if not passed:
        print(reason, file=sys.stderr)
        return EXIT_GATE_FAILED
    if reason:
        print(reason)
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """Re-render report.html from a results.json (and optionally re-check a gate or human labels)."""
    from auditor.gate import evaluate_gate
    from auditor.report.html import render_html

    path = Path(args.results)
    if not path.is_file():
        raise ConfigError(f"results file {str(path)!r} does not exist")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"{str(path)!r} is not a results JSON file: {error}") from None
    if not isinstance(results, dict) or "schema_version" not in results or "classes" not in results:
        raise ConfigError(f"{str(path)!r} is not an auditor results.json (no schema_version/classes)")
    major = str(results["schema_version"]).split(".")[0]
    if major != "1":
        raise ConfigError(f"{str(path)!r} has schema version {results['schema_version']}; this auditor reads 1.x")
    if args.annotations:
        from auditor.annotations import agreement, read_annotations

        names = results.get("class_names", [])
        section = agreement(read_annotations(args.annotations, names), results, names)
        results.setdefault("sections", {})["human_agreement"] = {"enabled": True, "source": args.annotations, **section}
    passed, reason = True, ""
    if args.fail_on:
        passed, reason = evaluate_gate(results, args.fail_on)
        results["gate"] = {"conditions": list(args.fail_on), "passed": passed, "reason": reason}
    output = Path(args.output) if args.output else path.with_name("report.html")
    render_html(results, path.parent, output)
    print(f"report: {output}")
    return _gate_exit(passed, reason)


def cmd_config(args: argparse.Namespace) -> int:
    """Print the default YAML, or validate a YAML file."""
    if args.validate:
        namespace = argparse.Namespace(config=args.validate, **{k: None for k in _AUDIT_FLAG_DESTS}, fail_on=None, no_html=False, set=None, progress=None,
                                       neurontune=False, discovery=False, noise=False, concepts=False, pool_dir=None)
        resolve_audit_config(namespace)
        print(f"{args.validate}: valid")
        return EXIT_OK
    print(defaults_yaml(), end="")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the bundled demo on the generated world."""
    from auditor.demo import run_demo

    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    result = run_demo(output_dir=args.output_dir, quick=args.quick, progress=progress)
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
    run.add_argument("--annotations", help="report.human_annotations: CSV of human core/spurious labels")
    run.add_argument("--seed", type=int, help="seed")
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

    config = commands.add_parser("config", help="show the default YAML or validate a YAML file", epilog=epilog)
    group = config.add_mutually_exclusive_group(required=True)
    group.add_argument("--print-defaults", action="store_true", help="print every key with its default and documentation")
    group.add_argument("--validate", metavar="YAML", help="check a YAML file without running anything")
    config.set_defaults(func=cmd_config)
    return parser


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)
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
