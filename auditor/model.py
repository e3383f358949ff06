"""ModelAdapter: reads features, logits and spatial maps from the user's model via hooks.

The head is picked by :func:`resolve_head` (the module named by the user, the head the
model's library exposes, else the last ``nn.Linear``); its input is the feature vector.
The last spatial layer (a module whose output is ``(N, C, h, w)``) is found by a dry
forward pass. The user's model is never changed:
hooks are removed after every call and every module's training flag is restored,
also when the model raises.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from auditor.errors import InvalidInputError, NumericalError, UnsupportedModelError

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """Turn "auto" / "cpu" / "cuda[:i]" / "mps" into a torch.device.

    Raises:
        InvalidInputError: when the requested device is not available.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {name!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidInputError(f"device {name!r} requested but MPS is not available; use 'cpu' or 'auto'")
    return device


def logits_from_output(output: Any) -> torch.Tensor:
    """Extract the logits tensor from a model output (tensor, tuple, or object with ``.logits``)."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise UnsupportedModelError(f"cannot find logits in the model's output of type {type(output).__name__}")


def _linear_summary(model: nn.Module, limit: int = 6) -> str:
    linears = [f"{n} ({m.in_features}->{m.out_features})" for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return ", ".join(linears[-limit:]) or "none"


def _resolve_head(model: nn.Module, name: str | None) -> tuple[str, nn.Linear, str]:
    modules = dict(model.named_modules())
    if name is not None:
        if name not in modules:
            raise UnsupportedModelError(
                f"the model ({type(model).__name__}) has no module named {name!r}; set `model.head` to one of its "
                f"Linear layers: {_linear_summary(model)}"
            )
        if not isinstance(modules[name], nn.Linear):
            raise UnsupportedModelError(
                f"module {name!r} is {type(modules[name]).__name__}, not nn.Linear; set `model.head` to one of the "
                f"model's Linear layers: {_linear_summary(model)}"
            )
        return name, modules[name], "set by `model.head`"
    from auditor.adapters.models import guess_head

    guessed = guess_head(model)
    if guessed is not None:
        return guessed[0], modules[guessed[0]], guessed[1]
    linears = [(n, m) for n, m in modules.items() if isinstance(m, nn.Linear)]
    if not linears:
        raise UnsupportedModelError(
            f"the model ({type(model).__name__}) has no nn.Linear layer to use as its classification head; auditor needs "
            "a linear head whose input is the feature vector (name it with `model.head` if it is wrapped, or replace a "
            "convolutional classifier by pooling + nn.Linear)"
        )
    last, module = linears[-1]
    reason = "the last nn.Linear (no classifier / fc / heads / head attribute holds one)"
    odd = [a for a in ("classifier", "fc", "heads", "head") if isinstance(getattr(model, a, None), nn.Module)]
    if odd:
        logger.warning(
            "the model's `%s` has no nn.Linear, so the head is %r, %s; if that is not the classifier, set `model.head`",
            odd[0], last, reason,
        )
    return last, module, reason


def resolve_head(model: nn.Module, name: str | None = None) -> tuple[str, nn.Linear]:
    """The one place that picks the classification head: ``(dotted name, module)``.

    With ``name`` (``model.head``), that module; else the head the model's library exposes
    (:func:`auditor.adapters.models.guess_head`: timm ``get_classifier()``, ``classifier``,
    ``fc``, ``heads``, ``head``); else the last ``nn.Linear``. The choice and why is logged at INFO.

    Args:
        model: the classifier.
        name: dotted module name of the head, or None to find it.

    Returns:
        ``(name, module)``.

    Raises:
        UnsupportedModelError: no ``nn.Linear`` in the model, ``name`` absent, or ``name`` not a Linear
            (the message lists the model's Linear layers).

    Example:
        >>> resolve_head(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
        ('1', Linear(in_features=4, out_features=2, bias=True))
    """
    head_name, module, reason = _resolve_head(model, name)
    logger.info("head: %r (%d -> %d), %s", head_name, module.in_features, module.out_features, reason)
    return head_name, module


def find_head(model: nn.Module, name: str | None = None) -> tuple[str, nn.Linear]:
    """Deprecated alias of :func:`resolve_head`."""
    return resolve_head(model, name)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for a block, then give every submodule its own training flag back.

    ``model.train(was_training)`` would set every submodule to the model's flag, so a
    BatchNorm the user froze in eval inside a training-mode model would come back in
    train mode; this restores each module's flag, also when the block raises.

    Args:
        model: any ``nn.Module``.

    Yields:
        ``model``, in eval mode.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).train()
        >>> _ = net[1].eval()
        >>> with eval_mode(net):
        ...     pass
        >>> net.training, net[1].training
        (True, False)
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@dataclass
class ForwardResult:
    """Outputs of one batch: features ``(N, D)``, logits ``(N, K)``, spatial map ``(N, C, h, w)`` or None."""

    features: torch.Tensor
    logits: torch.Tensor
    spatial: torch.Tensor | None = None


class ModelAdapter:
    """Hook-based reader of a classifier's penultimate features and spatial maps.

    Args:
        model: the user's classifier; left exactly as it is.
        head: dotted module name of the head (default: :func:`resolve_head`'s choice).
        feature_layer: dotted module name of the last spatial layer (default: found by a dry run).
        device: torch device to run on.

    Raises:
        UnsupportedModelError: no linear head.
    """

    def __init__(self, model: nn.Module, head: str | None = None, feature_layer: str | None = None, device: str | torch.device = "cpu"):
        if not isinstance(model, nn.Module):
            raise UnsupportedModelError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        self.model = model
        self.device = torch.device(device) if not isinstance(device, torch.device) else device
        self.head_name, self.head, self.head_reason = _resolve_head(model, head)
        logger.info("head: %r (%d -> %d), %s", self.head_name, self.head.in_features, self.head.out_features, self.head_reason)
        self.n_classes = self.head.out_features
        self.n_features = self.head.in_features
        self._feature_layer_name = feature_layer
        self._spatial_name: str | None | bool = None  # None = not searched yet, False = none found

    @property
    def feature_layer_name(self) -> str | None:
        """The spatial layer the user named (``model.feature_layer``), or None when it is found by a dry run."""
        return self._feature_layer_name

    @contextlib.contextmanager
    def _session(self) -> Iterator[None]:
        """Eval mode on the right device for the duration; restore every module's mode and the device afterwards."""
        try:
            original_device = next(self.model.parameters()).device
        except StopIteration:
            original_device = self.device
        with eval_mode(self.model):
            if original_device != self.device:
                self.model.to(self.device)
            try:
                yield
            finally:
                if original_device != self.device:
                    self.model.to(original_device)

    def check_class_names(self, class_names: Sequence[str]) -> None:
        """Check there is one class name per head output.

        Args:
            class_names: the names given by the user (or the dataset).

        Raises:
            InvalidInputError: the counts differ; the message names the layer picked as head and why,
                and points to ``model.head``.
        """
        if len(class_names) != self.n_classes:
            raise InvalidInputError(
                f"{len(class_names)} class names given but the model's head {self.head_name!r} ({self.head_reason}) has "
                f"{self.n_classes} outputs. If {self.head_name!r} is not the classifier, set `model.head` to the Linear "
                f"layer producing the logits (Linear layers: {_linear_summary(self.model)}); otherwise give one class "
                "name per output"
            )

    @property
    def spatial_layer(self) -> str | None:
        """Name of the last spatial layer whose channels are the features, or None."""
        if self._spatial_name is None:
            raise RuntimeError("call locate_spatial_layer(images) first")
        return self._spatial_name or None

    def locate_spatial_layer(self, images: torch.Tensor) -> str | None:
        """Find, by a dry run on ``images``, the last module output of shape ``(N, D, h, w)`` with h*w > 1.

        D must equal the head's input size, so each channel is one neural feature's map.
        Pooled ``(N, D, 1, 1)`` outputs are skipped, and so is a map followed by a token
        sequence (a vision transformer's patch embedding): such models get gradient heatmaps.
        """
        if self._spatial_name is not None:
            return self._spatial_name or None
        modules = dict(self.model.named_modules())
        if self._feature_layer_name is not None:
            if self._feature_layer_name not in modules:
                raise UnsupportedModelError(f"the model has no module named {self._feature_layer_name!r} (`model.feature_layer`)")
            self._spatial_name = self._feature_layer_name
            return self._spatial_name
        order: list[str] = []
        tokens_after: list[bool] = []

        def record(name):
            def hook(_module, _inputs, output):
                if not isinstance(output, torch.Tensor):
                    return
                if output.ndim == 4 and output.shape[1] == self.n_features and output.shape[2] * output.shape[3] > 1:
                    order.append(name)
                    tokens_after.append(False)
                elif output.ndim == 3 and output.shape[-1] == self.n_features and output.shape[1] > 1 and tokens_after:
                    tokens_after[-1] = True  # a token sequence follows the map: a transformer's patch embedding
            return hook

        # Containers fire after their children, so the deepest module producing the last map comes last.
        handles = [m.register_forward_hook(record(n)) for n, m in modules.items() if n and not isinstance(m, torch.jit.ScriptModule)]
        try:
            with self._session(), torch.no_grad():
                self.model(images[:2].to(self.device))
        finally:
            for h in handles:
                h.remove()
        if tokens_after and tokens_after[-1]:
            order = []
        self._spatial_name = order[-1] if order else False
        logger.info("spatial feature layer: %s", self._spatial_name or "none (gradient heatmaps)")
        return self._spatial_name or None

    def forward(self, images: torch.Tensor, with_spatial: bool = False, grad: bool = False, check_finite: bool = True) -> ForwardResult:
        """Run the model on a batch and capture the head's input (and the spatial map).

        Args:
            images: float ``(N, C, H, W)``, as the model expects them.
            with_spatial: also capture the spatial layer's map (call :meth:`locate_spatial_layer` first).
            grad: keep the autograd graph.
            check_finite: raise on NaN/inf (callers that name the images check themselves).

        Returns:
            A :class:`ForwardResult`.

        Raises:
            NumericalError: NaN or inf in features or logits (``check_finite``).
            UnsupportedModelError: the head is not called, or its outputs are not the model's logits.
        """
        captured: dict[str, torch.Tensor] = {}

        def head_hook(_module, inputs):
            captured["features"] = inputs[0]

        def spatial_hook(_module, _inputs, output):
            captured["spatial"] = output

        handles = [self.head.register_forward_pre_hook(head_hook)]
        if with_spatial and self.spatial_layer:
            handles.append(dict(self.model.named_modules())[self.spatial_layer].register_forward_hook(spatial_hook))
        try:
            with self._session(), torch.set_grad_enabled(grad):
                logits = logits_from_output(self.model(images.to(self.device)))
        finally:
            for h in handles:
                h.remove()
        if "features" not in captured:
            raise UnsupportedModelError(f"the head {self.head_name!r} was not called during the forward pass")
        features = captured["features"]
        if features.ndim != 2:
            if features[0].numel() != self.n_features:
                raise UnsupportedModelError(
                    f"the head {self.head_name!r} receives inputs of shape {tuple(features.shape)}; auditor needs one "
                    f"feature vector of size {self.n_features} per image"
                )
            features = features.flatten(1)
        if logits.ndim != 2 or logits.shape[1] != self.n_classes:
            raise UnsupportedModelError(
                f"the model outputs logits of shape {tuple(logits.shape)} but the layer picked as head, {self.head_name!r} "
                f"({self.head_reason}), has {self.n_classes} outputs, so it is not the classifier; set `model.head` to the "
                f"Linear layer producing the logits (Linear layers: {_linear_summary(self.model)})"
            )
        if not grad:
            features, logits = features.detach(), logits.detach()
        if check_finite:
            broken = ~(torch.isfinite(features).all(1) & torch.isfinite(logits).all(1))
            if broken.any():
                raise NumericalError(
                    f"the model produced NaN or inf activations/logits for {int(broken.sum())} of {len(broken)} images "
                    f"(batch rows {torch.nonzero(broken).flatten()[:5].tolist()}); check the input normalisation "
                    "(`data.mean`/`data.std`) and the model's weights"
                )
        return ForwardResult(features=features, logits=logits, spatial=captured.get("spatial"))

    def head_weight(self) -> torch.Tensor:
        """The head's weight ``(K, D)`` as a detached CPU float tensor."""
        return self.head.weight.detach().float().cpu()

    def head_bias(self) -> torch.Tensor:
        """The head's bias ``(K,)`` (zeros when it has none)."""
        if self.head.bias is None:
            return torch.zeros(self.n_classes)
        return self.head.bias.detach().float().cpu()

    def copy_with_head(self, weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
        """A deep copy of the model whose head has the given weight and bias; the original is untouched."""
        return copy_with_head(self.model, self.head_name, weight, bias)


def copy_with_head(model: nn.Module, head_name: str | None, weight: Any, bias: Any) -> nn.Module:
    """A deep copy of ``model`` whose head has the given weight ``(K, D)`` and bias ``(K,)``.

    Args:
        model: the audited model; left untouched.
        head_name: dotted name of its head (resolved as in the audit when None).
        weight: float ``(K, D)`` array or tensor.
        bias: float ``(K,)`` array or tensor.

    Returns:
        The copy in eval mode.

    Raises:
        UnsupportedModelError: the head's shape differs from ``weight``, or the head has no bias but ``bias`` is non-zero.
    """
    clone = copy.deepcopy(model)
    name, head = resolve_head(clone, head_name)
    weight, bias = torch.as_tensor(np.asarray(weight)), torch.as_tensor(np.asarray(bias))
    if tuple(head.weight.shape) != tuple(weight.shape):
        raise UnsupportedModelError(
            f"the tuned head has shape {tuple(weight.shape)} but the model's head {name!r} has {tuple(head.weight.shape)}; "
            "pass the model that was audited"
        )
    with torch.no_grad():
        head.weight.copy_(weight.to(head.weight))
        if head.bias is not None:
            head.bias.copy_(bias.to(head.bias))
        elif bias.abs().max() > 0:
            raise UnsupportedModelError(f"the head {name!r} has no bias but the tuned head has one")
    return clone.eval()
