"""Load classifiers as they come: Python entry points, torchvision, timm, Hugging Face, TorchScript.

``load_model(spec)`` turns a short string into an ``nn.Module`` without downloading
anything; weights always come from local files. ``guess_head_name`` and
``guess_feature_layer`` name the head and the last spatial layer for the families
whose libraries expose them, and ``model_preprocessing`` returns the model's own
eval transform where the library records one (timm data config, HF image processor).

Spec forms:

* ``"package.module:function"`` or ``"path/to/file.py:function"``: calls the function
  (with ``num_classes`` when it accepts it) and expects an ``nn.Module``.
* ``"torchvision:resnet18"``: ``torchvision.models.get_model(name, weights=None)``.
* ``"timm:resnet18"``: ``timm.create_model(name, pretrained=False)``.
* ``"hf:<local folder>"``: ``AutoModelForImageClassification.from_pretrained(folder)``
  (offline; the folder written by ``save_pretrained``).
* ``"path/to/model.pt"`` (or ``"torchscript:path"``): a TorchScript file.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import inspect
import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from auditor.errors import (
    InvalidInputError,
    MissingDependencyError,
    MissingWeightsError,
    UnsupportedModelError,
)

logger = logging.getLogger(__name__)

SOURCES = ("module:function", "torchvision:<name>", "timm:<name>", "hf:<folder>", "torchscript file")
_TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".jit")


# --------------------------------------------------------------------------- loading


def load_model(spec: str, weights: str | Path | None = None, num_classes: int | None = None, **kwargs: Any) -> nn.Module:
    """Build or load a classifier from a short spec, never downloading anything.

    Args:
        spec: ``"module:function"``, ``"file.py:function"``, ``"torchvision:<name>"``,
            ``"timm:<name>"``, ``"hf:<folder>"``, or a TorchScript file path.
        weights: a local ``state_dict`` file (``.pt``/``.pth``/``.safetensors``, optionally
            wrapped in ``{"state_dict": ...}`` or ``{"model": ...}``) loaded strictly.
        num_classes: outputs of the head; when None and ``weights`` are given, it is read
            from the weights' head for torchvision and timm names.
        **kwargs: passed to the builder (``timm.create_model``, ``get_model``, the function).

    Returns:
        The model in eval mode, on the CPU.

    Raises:
        InvalidInputError: malformed spec, unknown model name (with the close matches),
            a function that returns no ``nn.Module``, weights that do not fit the model.
        MissingWeightsError: the weights file, HF folder or TorchScript file does not exist.
        MissingDependencyError: timm / transformers not installed.

    Example:
        >>> model = load_model("timm:resnet10t", num_classes=3)
        >>> guess_head_name(model)
        'fc'
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidInputError(f"model spec must be a non-empty string such as 'timm:resnet18'; got {spec!r}")
    spec = spec.strip()
    prefix, _, rest = spec.partition(":")
    if prefix == "torchvision":
        model = _load_torchvision(rest, weights, num_classes, kwargs)
    elif prefix == "timm":
        model = _load_timm(rest, weights, num_classes, kwargs)
    elif prefix in ("hf", "huggingface"):
        model = _load_hf(rest, weights, num_classes, kwargs)
    elif prefix == "torchscript" or (spec.endswith(_TORCHSCRIPT_SUFFIXES) and ":" not in spec.replace("\\", "/").split("/")[-1]):
        model = _load_torchscript(rest if prefix == "torchscript" else spec)
        if weights is not None:
            raise InvalidInputError("a TorchScript file carries its own weights; drop `model.weights`")
    elif rest:
        model = _load_entry_point(prefix, rest, weights, num_classes, kwargs)
    else:
        raise InvalidInputError(
            f"cannot read model spec {spec!r}; expected one of {list(SOURCES)}, e.g. 'timm:resnet18', "
            "'torchvision:resnet18', 'hf:./my-vit', 'mypackage.models:build' or 'model.pt'"
        )
    return model.eval()


def _close(name: str, names: Sequence[str]) -> str:
    hint = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""


def _build(builder: Callable[..., Any], what: str, *args: Any, **kwargs: Any) -> Any:
    """Call a model builder, turning rejected keyword arguments into a clear input error."""
    try:
        return builder(*args, **kwargs)
    except TypeError as error:
        if "argument" not in str(error):
            raise
        given = sorted(k for k in kwargs if k not in ("weights", "pretrained"))
        raise InvalidInputError(f"{what} rejected the arguments {given}: {error}; check `model.kwargs`") from None


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"weights file {str(path)!r} does not exist; point `model.weights` at a local state_dict file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # pickle errors, zip errors, ...
            raise InvalidInputError(f"cannot read weights file {str(path)!r} as a torch state_dict: {error}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidInputError(f"weights file {str(path)!r} holds {type(state).__name__}, not a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _head_outputs(state: dict[str, torch.Tensor], head: str | None) -> int | None:
    if head is not None and f"{head}.weight" in state and state[f"{head}.weight"].ndim == 2:
        return int(state[f"{head}.weight"].shape[0])
    return None


def _load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    mine = model.state_dict()
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(mine[k].shape)}" for k, v in state.items() if k in mine and mine[k].shape != v.shape]
    missing = [k for k in mine if k not in state]
    unexpected = [k for k in state if k not in mine]
    if mismatched or missing or unexpected:
        details = "; ".join(
            part
            for part in (
                f"shape mismatch {mismatched[:3]}" if mismatched else "",
                f"missing keys {missing[:5]}" if missing else "",
                f"unexpected keys {unexpected[:5]}" if unexpected else "",
            )
            if part
        )
        raise InvalidInputError(
            f"weights {str(path)!r} do not fit the model ({details}); check the model name and `model.num_classes`"
        )
    model.load_state_dict(state)


def _build_with_weights(build: Callable[..., nn.Module], weights, num_classes: int | None) -> nn.Module:
    """Build a model with ``build(**extra)`` and load ``weights`` into it.

    Without ``num_classes``, the head size is read from the weights' head (found on a probe model).
    """
    state = _read_state_dict(weights) if weights is not None else None
    if num_classes is None and state is not None:
        num_classes = _head_outputs(state, guess_head_name(build()))
    model = build() if num_classes is None else build(num_classes=num_classes)
    if state is not None:
        _load_weights(model, state, weights)
    return model


def _load_torchvision(name: str, weights, num_classes, kwargs) -> nn.Module:
    import torchvision

    names = torchvision.models.list_models()
    if name not in names:
        raise InvalidInputError(f"unknown torchvision model {name!r}.{_close(name, names)} Known: see torchvision.models.list_models()")
    if "weights" in kwargs:
        raise InvalidInputError("torchvision pretrained weights cannot be downloaded here; pass a local file as `model.weights`")
    what = f"torchvision model {name!r}"
    return _build_with_weights(
        lambda **extra: _build(torchvision.models.get_model, what, name, weights=None, **{**kwargs, **extra}), weights, num_classes
    )


def _load_timm(name: str, weights, num_classes, kwargs) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise MissingDependencyError("timm models need timm; install it with `pip install timm`") from None
    if not timm.is_model(name):
        names = timm.list_models()
        raise InvalidInputError(f"unknown timm model {name!r}.{_close(name, names)} Known: see timm.list_models()")
    kwargs = {k: v for k, v in kwargs.items() if k != "pretrained"}
    what = f"timm model {name!r}"
    return _build_with_weights(
        lambda **extra: _build(timm.create_model, what, name, pretrained=False, **{**kwargs, **extra}), weights, num_classes
    )


def _load_hf(folder: str, weights, num_classes, kwargs) -> nn.Module:
    try:
        from transformers import AutoModelForImageClassification
    except ImportError:
        raise MissingDependencyError("Hugging Face models need transformers; install it with `pip install transformers`") from None
    path = Path(folder).expanduser()
    if not (path / "config.json").is_file():
        raise MissingWeightsError(
            f"Hugging Face model folder {folder!r} has no config.json; hub names cannot be downloaded here. "
            "Save the model with `model.save_pretrained(folder)` and pass 'hf:<folder>'"
        )
    if num_classes is not None:
        kwargs = {**kwargs, "num_labels": num_classes, "ignore_mismatched_sizes": True}
    try:
        model = AutoModelForImageClassification.from_pretrained(str(path), local_files_only=True, **kwargs)
    except (OSError, ValueError) as error:
        raise InvalidInputError(f"cannot load the Hugging Face image classifier in {folder!r}: {error}") from None
    if weights is not None:
        _load_weights(model, _read_state_dict(weights), weights)
    model._auditor_source_folder = str(path)  # lets model_preprocessing find the image processor
    return model


def _import_function(module_name: str, function: str) -> Callable[..., Any]:
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise InvalidInputError(f"model entry point file {module_name!r} does not exist")
        name = f"_auditor_entry_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise InvalidInputError(
                f"cannot import module {module_name!r} for the model entry point: {error}. "
                "Make it importable (PYTHONPATH) or give a file path 'path/to/file.py:function'"
            ) from None
    target: Any = module
    for part in function.split("."):
        if not hasattr(target, part):
            public = [n for n in dir(module) if not n.startswith("_")]
            raise InvalidInputError(f"module {module_name!r} has no attribute {function!r}.{_close(part, public)}")
        target = getattr(target, part)
    if not callable(target):
        raise InvalidInputError(f"{module_name}:{function} is {type(target).__name__}, not a callable returning an nn.Module")
    return target


def _load_entry_point(module_name: str, function: str, weights, num_classes, kwargs) -> nn.Module:
    factory = _import_function(module_name, function)
    if num_classes is not None:
        try:
            accepts = "num_classes" in inspect.signature(factory).parameters
        except (TypeError, ValueError):
            accepts = False
        if accepts:
            kwargs = {**kwargs, "num_classes": num_classes}
    model = _build(factory, f"{module_name}:{function}", **kwargs)
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"{module_name}:{function} returned {type(model).__name__}; expected a torch.nn.Module")
    if weights is not None:
        _load_weights(model, _read_state_dict(weights), weights)
    return model


# --------------------------------------------------------------------------- TorchScript


def _attribute_path(value: Any) -> str | None:
    """Dotted parameter name of a graph value produced by a chain of prim::GetAttr, or None."""
    parts = []
    node = value.node()
    while node.kind() == "prim::GetAttr":
        parts.append(node.s("name"))
        node = node.inputsAt(0).node()
    if node.kind() != "prim::Param" or not parts:
        return None
    return ".".join(reversed(parts))


class TorchScriptClassifier(nn.Module):
    """A TorchScript classifier split into a scripted feature extractor and a real ``nn.Linear`` head.

    TorchScript modules accept no hooks, so the scripted graph is copied with its last
    ``aten::linear`` removed: the copy returns that linear's input (the feature vector),
    and ``head`` (an ``nn.Linear`` holding copies of the scripted head's weight and bias)
    turns it into logits. The outputs equal the scripted model's when its last linear
    layer produces the logits. The scripted module itself is never changed.

    Args:
        scripted: a loaded ``torch.jit.ScriptModule``.

    Raises:
        UnsupportedModelError: the graph has no linear layer whose weights are module attributes.
    """

    def __init__(self, scripted: torch.jit.ScriptModule):
        super().__init__()
        graph = scripted.forward.graph.copy()
        torch._C._jit_pass_inline(graph)
        linears = [n for n in graph.nodes() if n.kind() in ("aten::linear",)]
        if not linears:
            raise UnsupportedModelError(
                "the TorchScript model has no linear layer (aten::linear) producing its logits; "
                "auditor needs a linear head whose input is the feature vector"
            )
        last = linears[-1]
        weight_name = _attribute_path(last.inputsAt(1))
        bias_name = _attribute_path(last.inputsAt(2)) if last.inputsAt(2).node().kind() != "prim::Constant" else None
        params = dict(scripted.named_parameters())
        if weight_name not in params:
            raise UnsupportedModelError(f"cannot find the weights of the TorchScript model's last linear layer (got {weight_name!r})")
        weight = params[weight_name].detach().clone()
        self.head_source = weight_name.rsplit(".", 1)[0]
        for _ in range(len(list(graph.outputs()))):
            graph.eraseOutput(0)
        graph.registerOutput(last.inputsAt(0))
        graph.eliminate_dead_code() if hasattr(graph, "eliminate_dead_code") else None
        self._graph = graph
        self.scripted = scripted
        self.head = nn.Linear(weight.shape[1], weight.shape[0], bias=bias_name is not None)
        with torch.no_grad():
            self.head.weight.copy_(weight)
            if bias_name is not None:
                self.head.bias.copy_(params[bias_name].detach())
        self._features_fn = torch._C._create_function_from_graph("auditor_features", graph)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Feature vectors ``(N, D)``: the input of the scripted model's last linear layer."""
        return self._features_fn(self.scripted._c, images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K)``."""
        return self.head(self.forward_features(images))

    def __deepcopy__(self, memo):
        clone = TorchScriptClassifier(self.scripted)
        clone.head.load_state_dict(self.head.state_dict())
        clone.train(self.training)
        return clone


def _load_torchscript(path: str) -> nn.Module:
    file = Path(path).expanduser()
    if not file.is_file():
        raise MissingWeightsError(f"TorchScript file {path!r} does not exist")
    try:
        with warnings.catch_warnings():  # torch marks TorchScript deprecated; the user chose this format
            warnings.simplefilter("ignore", FutureWarning)
            scripted = torch.jit.load(str(file), map_location="cpu")
    except RuntimeError as error:
        raise InvalidInputError(
            f"{path!r} is not a TorchScript file ({str(error).splitlines()[0]}); for a state_dict, give the architecture "
            "as the model spec and this file as `model.weights`"
        ) from None
    return TorchScriptClassifier(scripted)


# --------------------------------------------------------------------------- structure


def _name_of(model: nn.Module, target: nn.Module) -> str | None:
    for name, module in model.named_modules():
        if module is target:
            return name
    return None


def _last_linear(model: nn.Module, root: nn.Module) -> str | None:
    prefix = _name_of(model, root)
    if prefix is None:
        return None
    if isinstance(root, nn.Linear):
        return prefix
    linears = [n for n, m in root.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return None
    return f"{prefix}.{linears[-1]}" if prefix else linears[-1]


def guess_head_name(model: nn.Module) -> str | None:
    """Dotted name of the classification head where the model's library exposes it.

    Looks at, in order: ``get_classifier()`` (timm), ``classifier`` (Hugging Face and many
    torchvision models), ``fc`` (torchvision ResNets), ``heads`` (torchvision ViT), ``head``;
    a container resolves to its last ``nn.Linear``.

    Args:
        model: any ``nn.Module``.

    Returns:
        The name (e.g. ``"fc"``, ``"classifier.1"``, ``"heads.head"``), or None when no known
        head exists (:func:`auditor.model.resolve_head` then uses the last ``nn.Linear``).
    """
    found = guess_head(model)
    return None if found is None else found[0]


def guess_head(model: nn.Module) -> tuple[str, str] | None:
    """Like :func:`guess_head_name`, with why: ``(name, reason)`` or None.

    Args:
        model: any ``nn.Module``.

    Returns:
        ``(dotted name, reason)``, e.g. ``("fc", "the model's `fc` attribute")``, or None.
    """
    if isinstance(model, TorchScriptClassifier):
        return "head", f"the TorchScript model's last linear layer ({model.head_source})"
    candidates: list[tuple[nn.Module, str]] = []
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        with contextlib.suppress(Exception):  # a user method with another meaning
            head = get_classifier()
            if isinstance(head, nn.Module):
                candidates.append((head, "the model's get_classifier() (timm)"))
    for attribute in ("classifier", "fc", "heads", "head"):
        module = getattr(model, attribute, None)
        if isinstance(module, nn.Module):
            candidates.append((module, f"the model's `{attribute}` attribute"))
    for candidate, why in candidates:
        name = _last_linear(model, candidate)
        if name:
            return name, why
    return None


def guess_feature_layer(model: nn.Module, image_size: int | Sequence[int] | None = None, head: str | None = None) -> str | None:
    """The last layer whose output is a spatial map ``(N, D, h, w)`` with ``h*w > 1`` and D the head's input.

    Found by a dry run on zeros (eval mode, no gradients, hooks removed and the training
    flag restored afterwards). Pooling outputs ``(N, D, 1, 1)`` are skipped, so CAMs come
    from the last real feature map; vision transformers (token outputs) have none.

    Args:
        model: the classifier.
        image_size: dry-run size (an int or ``(H, W)``); the model's preprocessing size or 64 when None.
        head: the head's dotted name (:func:`guess_head_name`, then the last Linear, when None).

    Returns:
        The module name, or None when no layer qualifies.
    """
    from auditor.model import ModelAdapter

    try:
        adapter = ModelAdapter(model, head=head or guess_head_name(model))
    except UnsupportedModelError:
        return None
    if image_size is None:
        pre = model_preprocessing(model)
        image_size = pre.crop_size if pre is not None else 64
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    adapter.device = device
    try:
        return adapter.locate_spatial_layer(torch.zeros(2, 3, height, width, device=device))
    except Exception as error:  # a model that needs other inputs: let the audit decide on real images
        logger.info("dry run for the feature layer failed (%s)", error)
        return None


# --------------------------------------------------------------------------- preprocessing


_INTERPOLATIONS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST, "lanczos": Image.LANCZOS, "box": Image.BOX}


@dataclass(frozen=True)
class Preprocessing:
    """An eval transform (resize, centre crop, to tensor, normalise) that masks can follow.

    Call it on a PIL image to get a float tensor ``(3, crop, crop)``; ``mask(pil)`` applies
    the same geometry (nearest neighbour) to a mask and returns bool ``(crop, crop)``.

    Attributes:
        resize: the shorter side is resized to this (an int), or the image to ``(H, W)``.
        crop_size: centre crop ``(H, W)`` (or an int for a square) after resizing.
        mean: per-channel mean to normalise with, or None (images stay in [0, 1]).
        std: per-channel std matching ``mean``.
        interpolation: "bilinear", "bicubic", "nearest", "lanczos" or "box".
        source: where it came from ("timm data config", "HF image processor", "user").
    """

    resize: int | tuple[int, int]
    crop_size: int | tuple[int, int]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str = "bilinear"
    source: str = "user"

    def _geometry(self, image: Image.Image, resample: int) -> Image.Image:
        import torchvision.transforms.functional as F

        if isinstance(self.resize, int):
            w, h = image.size
            scale = self.resize / min(w, h)
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
        else:
            size = tuple(self.resize)
        image = image.resize((size[1], size[0]), resample=resample)
        crop = (self.crop_size, self.crop_size) if isinstance(self.crop_size, int) else tuple(self.crop_size)
        return F.center_crop(image, list(crop))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        import torchvision.transforms.functional as F

        image = self._geometry(image.convert("RGB"), _INTERPOLATIONS.get(self.interpolation, Image.BILINEAR))
        tensor = F.to_tensor(image)
        if self.mean is not None:
            tensor = F.normalize(tensor, list(self.mean), list(self.std))
        return tensor

    def mask(self, mask: Image.Image) -> torch.Tensor:
        """The same resize and crop applied to a mask (nearest neighbour): bool ``(H, W)``."""
        import numpy as np

        geometry = self._geometry(mask.convert("L"), Image.NEAREST)
        return torch.from_numpy(np.asarray(geometry) > 0)


def _timm_preprocessing(model: nn.Module) -> Preprocessing | None:
    if not hasattr(model, "pretrained_cfg"):
        return None
    try:
        import timm.data
    except ImportError:
        return None
    cfg = timm.data.resolve_model_data_config(model)
    _, height, width = cfg["input_size"]
    built = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if built is not None and not getattr(model, "dynamic_img_size", False):
        height, width = (built, built) if isinstance(built, int) else tuple(built)  # a ViT built for another size
    crop_pct = cfg.get("crop_pct") or 1.0
    resize = int(height / crop_pct) if height == width else (int(height / crop_pct), int(width / crop_pct))
    return Preprocessing(
        resize=resize, crop_size=(height, width), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
        interpolation=cfg.get("interpolation", "bicubic"), source="timm data config",
    )


def _hf_preprocessing(model: nn.Module) -> Preprocessing | None:
    folder = getattr(model, "_auditor_source_folder", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    if not folder or not (Path(folder) / "preprocessor_config.json").is_file():
        return None
    try:
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    except Exception as error:
        logger.warning("cannot read the image processor in %s (%s); using the dataset's own transform", folder, error)
        return None
    size = getattr(processor, "size", None) or {}
    size = dict(size) if not isinstance(size, dict) else size
    if "height" in size and "width" in size:
        resize: int | tuple[int, int] = (int(size["height"]), int(size["width"]))
        crop: int | tuple[int, int] = resize
    elif "shortest_edge" in size:
        edge = int(size["shortest_edge"])
        crop_pct = getattr(processor, "crop_pct", None)
        crop_size = getattr(processor, "crop_size", None) or {}
        crop_size = dict(crop_size) if not isinstance(crop_size, dict) else crop_size
        if crop_size and getattr(processor, "do_center_crop", False):
            crop = (int(crop_size["height"]), int(crop_size["width"]))
        else:
            crop = edge
        resize = int(edge / crop_pct) if crop_pct and edge < 384 else edge
    else:
        return None
    do_normalize = getattr(processor, "do_normalize", True)
    mean = tuple(processor.image_mean) if do_normalize and getattr(processor, "image_mean", None) is not None else None
    std = tuple(processor.image_std) if mean is not None else None
    resample = getattr(processor, "resample", Image.BILINEAR)
    names = {int(v): k for k, v in _INTERPOLATIONS.items()}
    return Preprocessing(resize=resize, crop_size=crop, mean=mean, std=std, interpolation=names.get(int(resample), "bilinear"), source="HF image processor")


def model_preprocessing(model: nn.Module) -> Preprocessing | None:
    """The model's own eval transform where its library records it.

    timm models: ``timm.data.resolve_model_data_config`` (input size, crop_pct,
    interpolation, mean, std). Hugging Face models loaded from a folder holding a
    ``preprocessor_config.json``: its image processor's size, crop and normalisation.

    Args:
        model: the classifier.

    Returns:
        A :class:`Preprocessing` (callable on PIL images, with ``mean``/``std`` for the
        audit's ``data.mean``/``data.std``), or None when the model exposes none.
    """
    if isinstance(model, TorchScriptClassifier):
        return None
    return _timm_preprocessing(model) or _hf_preprocessing(model)
