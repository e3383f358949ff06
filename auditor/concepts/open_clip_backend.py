"""The "open_clip" concept encoder: any open_clip model with local weights.

Weights are never downloaded. ``pretrained`` is either a local checkpoint file (state_dict
``.pt``/``.bin``/``.safetensors``) or an open_clip tag whose weights already sit in the local
Hugging Face cache; anything else raises :class:`~auditor.errors.MissingWeightsError` naming
what is expected. ``model_name="tiny"`` (or ``"tiny-test"``) selects the project's own tiny
CLIP trained on the generated world, registered in :data:`LOCAL_MODELS` by the demo package's entry point.

Image size: images are encoded at their own resolution. When it differs from the model's
input size the encoder raises :class:`~auditor.errors.InvalidInputError`, unless it was built
with ``resize=True``, in which case images are resized (bicubic, antialiased) to the model's
square input size, squashing non-square images.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from auditor._registry import Registry
from auditor.concepts.base import CONCEPT_ENCODERS
from auditor.errors import (
    ConfigError,
    InvalidInputError,
    MissingDependencyError,
    MissingWeightsError,
)

logger = logging.getLogger(__name__)

LOCAL_MODELS: Registry = Registry("local open_clip model", entry_point_group="auditor.open_clip_models")
"""Short names for locally trained open_clip models: name -> ``resolve(pretrained) -> (open_clip name, checkpoint)``.
Filled by entry points (the demo's ``tiny`` and ``tiny-test``) or :meth:`Registry.register`."""

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
_HF_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _as_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_image_size(images: torch.Tensor, expected: tuple[int, int], resize: bool, model: str) -> torch.Tensor:
    """Validate ``images (N, 3, H, W)`` against a model's input size, resizing only when allowed.

    Args:
        images: float images in [0, 1].
        expected: the model's ``(height, width)``.
        resize: resize mismatching images instead of raising.
        model: model name for the message.

    Returns:
        The images, resized to ``expected`` when needed and allowed.

    Raises:
        InvalidInputError: wrong rank/channels, or a size mismatch with ``resize=False``.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise InvalidInputError(f"images must be float (N, 3, H, W) in [0, 1]; got shape {tuple(images.shape)}")
    size = tuple(images.shape[-2:])
    if size == tuple(expected):
        return images
    if not resize:
        raise InvalidInputError(
            f"the dataset's images are {size[0]}x{size[1]} but CLIP model {model!r} expects "
            f"{expected[0]}x{expected[1]}; use a CLIP model trained at the dataset's size, or opt in to "
            "resizing with `resize=True` (config `concepts.resize_images: true`)"
        )
    return F.interpolate(images, size=tuple(expected), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def _import_open_clip():
    try:
        import open_clip
    except ImportError as error:
        raise MissingDependencyError(
            f"the 'open_clip' concept encoder needs open_clip ({error}); install it with `pip install open_clip_torch`"
        ) from None
    return open_clip


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.endswith(_CHECKPOINT_SUFFIXES) or value.startswith(".")


def _cached_tag_weights(open_clip, model_name: str, tag: str) -> tuple[str, dict]:
    """Local file holding the weights of an open_clip tag, found without any network access."""
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    hub = cfg.get("hf_hub", "")
    url = cfg.get("url", "")
    candidates: list[Path] = []
    if hub:
        repo_id, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
        names = (filename,) if filename else _HF_WEIGHT_FILES
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - huggingface_hub ships with open_clip
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            for name in (*[n.replace(".bin", ".safetensors") for n in names], *names):
                found = try_to_load_from_cache(repo_id=repo_id, filename=name)
                if isinstance(found, str) and os.path.isfile(found):
                    return found, cfg
        expected = f"{repo_id}/{names[0]} in the Hugging Face cache"
    else:
        expected = ""
    if url:
        path = Path.home() / ".cache" / "clip" / os.path.basename(url)
        candidates.append(path)
        for path in candidates:
            if path.is_file():
                return str(path), cfg
        expected = expected + (" or " if expected else "") + str(path)
    raise MissingWeightsError(
        f"the weights of open_clip model {model_name!r} with tag {tag!r} are not on disk (expected {expected}); "
        "auditor never downloads weights. Download them once (e.g. "
        f"`open_clip.create_model_and_transforms({model_name!r}, pretrained={tag!r})` with internet), "
        "or set `concepts.pretrained` to a local checkpoint file"
    )


@CONCEPT_ENCODERS.register("open_clip")
class OpenClipEncoder:
    """CLIP text and image encoders from open_clip, with local weights only.

    Args:
        model_name: an open_clip model name ("ViT-B-32", ...), a name registered with
            ``open_clip.add_model_config``, or "tiny"/"tiny-test" for the project's tiny CLIP.
        pretrained: a local checkpoint file, or an open_clip tag whose weights are cached
            locally. Required except for the tiny models.
        device: "auto", "cpu", "cuda", ... or a torch.device.
        resize: resize images whose size differs from the model's (else raise).
        batch_size: images per forward pass.

    Raises:
        ConfigError: unknown model name (the message lists close names).
        MissingWeightsError: no ``pretrained`` given, a missing file, or a tag not cached.
        InvalidInputError: the checkpoint does not fit the model's architecture.
        MissingDependencyError: open_clip is not installed.

    Example:
        >>> encoder = OpenClipEncoder("ViT-B-32", pretrained="/models/clip_b32.pt")  # doctest: +SKIP
        >>> encoder.encode_text(["a photo of water"]).shape  # doctest: +SKIP
        (1, 512)
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = None,
        device: str | torch.device | None = "cpu",
        *,
        resize: bool = False,
        batch_size: int = 64,
    ):
        open_clip = _import_open_clip()
        self.device = _as_device(device)
        self.resize = resize
        self.batch_size = batch_size
        model_name, pretrained = self._resolve_local(model_name, pretrained)
        self.model_name = model_name
        if model_name not in open_clip.list_models() and not model_name.startswith(("hf-hub:", "local-dir:")):
            import difflib

            close = difflib.get_close_matches(model_name, open_clip.list_models(), n=3)
            raise ConfigError(
                f"unknown open_clip model {model_name!r}; see `open_clip.list_models()`"
                + (f". Did you mean one of {close}?" if close else "")
            )
        extra: dict = {}
        if model_name.startswith("local-dir:"):
            pretrained = None
        elif not pretrained:
            raise MissingWeightsError(
                f"no weights given for open_clip model {model_name!r}: a randomly initialised CLIP names nothing. "
                "Set `concepts.pretrained` to a local checkpoint file or to an open_clip tag whose weights are cached"
            )
        elif _looks_like_path(pretrained) or Path(pretrained).exists():
            if not Path(pretrained).is_file():
                raise MissingWeightsError(
                    f"CLIP checkpoint {pretrained!r} does not exist; set `concepts.pretrained` to the local file holding "
                    f"the weights of {model_name!r}"
                )
        else:
            if pretrained not in open_clip.list_pretrained_tags_by_model(model_name):
                raise ConfigError(
                    f"{pretrained!r} is neither a file nor an open_clip tag of {model_name!r}; known tags: "
                    f"{open_clip.list_pretrained_tags_by_model(model_name)}"
                )
            path, cfg = _cached_tag_weights(open_clip, model_name, pretrained)
            pretrained = path
            if cfg.get("mean") and cfg.get("std"):
                extra.update(image_mean=tuple(cfg["mean"]), image_std=tuple(cfg["std"]))
            if cfg.get("quick_gelu"):
                extra["force_quick_gelu"] = True
        self.pretrained = pretrained
        try:
            model, _, _ = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, device=self.device, **extra)
        except RuntimeError as error:
            if "size mismatch" in str(error) or "Missing key" in str(error) or "Unexpected key" in str(error):
                raise InvalidInputError(
                    f"checkpoint {pretrained!r} does not match open_clip model {model_name!r} "
                    f"({str(error).splitlines()[0][:200]}); pass the model name the checkpoint was trained with"
                ) from None
            raise
        self.model = model.eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        size = cfg.get("size", getattr(model.visual, "image_size", 224))
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        self._mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)), device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)), device=self.device).view(1, 3, 1, 1)

    @staticmethod
    def _resolve_local(model_name: str, pretrained: str | None) -> tuple[str, str | None]:
        """Turn a name registered in :data:`LOCAL_MODELS` into (open_clip model name, checkpoint path)."""
        if model_name in LOCAL_MODELS:
            name, checkpoint = LOCAL_MODELS.get(model_name)(pretrained)
            return name, str(checkpoint)
        return model_name, pretrained

    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings.

        Args:
            prompts: P strings.

        Returns:
            float32 ``(P, E)``.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        out = []
        for start in range(0, len(prompts), 256):
            tokens = self.tokenizer(list(prompts[start : start + 256])).to(self.device)
            out.append(self.model.encode_text(tokens, normalize=True).float().cpu())
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, self.embed_dim), np.float32)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> np.ndarray:
        """L2-normalised image embeddings.

        Args:
            images: float ``(N, 3, H, W)`` in [0, 1] at the model's input size (or any size with ``resize=True``).

        Returns:
            float32 ``(N, E)``.

        Raises:
            InvalidInputError: wrong shape, or a size mismatch without ``resize``.
        """
        images = check_image_size(torch.as_tensor(images).float(), self.image_size, self.resize, self.model_name)
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size].to(self.device)
            out.append(self.model.encode_image((batch - self._mean) / self._std, normalize=True).float().cpu())
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, self.embed_dim), np.float32)

    @property
    def embed_dim(self) -> int:
        """Size E of the joint embedding."""
        return int(self.model.text_projection.shape[-1]) if getattr(self.model, "text_projection", None) is not None else int(
            self.encode_text(["a"]).shape[1]
        )

    @property
    def fingerprint(self) -> str:
        """Identifies the model and weights (for embedding caches)."""
        weights = self.pretrained or self.model_name
        stamp = ""
        if weights and os.path.isfile(weights):
            stat = os.stat(weights)
            stamp = f"{stat.st_size}-{int(stat.st_mtime)}"
        return f"open_clip|{self.model_name}|{weights}|{stamp}|{self.image_size}|{self.resize}"
