"""The "hf_clip" concept encoder: transformers' ``CLIPModel`` loaded from a local folder.

``model_name`` is a folder written by ``save_pretrained`` (config.json, model weights,
tokenizer.json/tokenizer_config.json, and optionally the processor's config for the image
mean/std). Everything loads with ``local_files_only=True``: hub names are refused with a
:class:`~auditor.errors.MissingWeightsError` unless already in the local cache. The tokenizer
is validated, because transformers silently returns a near-empty tokenizer offline.

Image size follows the "open_clip" backend: a mismatch raises unless ``resize=True``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from auditor.concepts.base import CONCEPT_ENCODERS
from auditor.concepts.open_clip_backend import _as_device, check_image_size
from auditor.errors import (
    InvalidInputError,
    MissingDependencyError,
    MissingWeightsError,
)

logger = logging.getLogger(__name__)

_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@CONCEPT_ENCODERS.register("hf_clip")
class HfClipEncoder:
    """CLIP text and image encoders from transformers, loaded from local files only.

    Args:
        model_name: a local folder (or a hub id already in the local cache).
        pretrained: unused alias; when given and ``model_name`` is empty, it is taken as the folder.
        device: "auto", "cpu", "cuda", ... or a torch.device.
        resize: resize images whose size differs from the model's (else raise).
        batch_size: images per forward pass.

    Raises:
        MissingWeightsError: the folder (or cached hub files) is absent or lacks weights.
        InvalidInputError: the folder holds another model type, or its tokenizer is unusable.
        MissingDependencyError: transformers is not installed.

    Example:
        >>> encoder = HfClipEncoder("/models/clip-vit-base-patch32")  # doctest: +SKIP
        >>> encoder.encode_images(images).shape  # doctest: +SKIP
        (16, 512)
    """

    def __init__(
        self,
        model_name: str | None = None,
        pretrained: str | None = None,
        device: str | torch.device | None = "cpu",
        *,
        resize: bool = False,
        batch_size: int = 64,
    ):
        try:
            from transformers import AutoConfig, AutoTokenizer, CLIPModel
        except ImportError as error:
            raise MissingDependencyError(
                f"the 'hf_clip' concept encoder needs transformers ({error}); install it with `pip install transformers`"
            ) from None
        location = model_name or pretrained
        if not location:
            raise MissingWeightsError("the 'hf_clip' encoder needs `concepts.model_name` set to a local CLIP folder")
        self.model_name = str(location)
        self.device = _as_device(device)
        self.resize = resize
        self.batch_size = batch_size
        path = Path(location).expanduser()
        looks_local = path.exists() or str(location).startswith((".", "/", "~")) or "\\" in str(location)
        if looks_local and not (path / "config.json").is_file():
            raise MissingWeightsError(
                f"CLIP folder {str(path)!r} has no config.json; expected a folder written by "
                "`CLIPModel.save_pretrained` and `CLIPProcessor.save_pretrained` (config.json, model.safetensors, "
                "tokenizer.json, tokenizer_config.json)"
            )
        try:
            config = AutoConfig.from_pretrained(str(location), local_files_only=True)
        except OSError as error:
            raise MissingWeightsError(
                f"no local copy of CLIP {str(location)!r} ({str(error).splitlines()[0][:160]}); auditor never downloads "
                "weights. Save the model once with `save_pretrained(<folder>)` and set `concepts.model_name` to that folder"
            ) from None
        if getattr(config, "model_type", None) != "clip":
            raise InvalidInputError(
                f"{str(location)!r} holds a {getattr(config, 'model_type', '?')!r} model, not CLIP; the 'hf_clip' encoder "
                "needs a CLIPModel folder"
            )
        try:
            self.model = CLIPModel.from_pretrained(str(location), local_files_only=True).to(self.device).eval()
        except OSError as error:
            raise MissingWeightsError(
                f"CLIP folder {str(location)!r} has a config but no weights ({str(error).splitlines()[0][:160]}); "
                "expected model.safetensors or pytorch_model.bin"
            ) from None
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(location), local_files_only=True)
        except (OSError, ValueError) as error:
            raise MissingWeightsError(
                f"CLIP folder {str(location)!r} has no usable tokenizer ({str(error).splitlines()[0][:160]}); expected "
                "tokenizer.json and tokenizer_config.json"
            ) from None
        self._validate_tokenizer()
        vision = self.model.config.vision_config
        self.image_size = (vision.image_size, vision.image_size)
        mean, std = self._image_stats(location)
        self._mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self.context_length = int(self.model.config.text_config.max_position_embeddings)

    def _validate_tokenizer(self) -> None:
        vocab = len(self.tokenizer)
        expected = int(self.model.config.text_config.vocab_size)
        ids = self.tokenizer("a photo of a dog", add_special_tokens=False)["input_ids"]
        unk = getattr(self.tokenizer, "unk_token_id", None)
        if vocab < 1000 or vocab > expected or (unk is not None and all(i == unk for i in ids)):
            raise InvalidInputError(
                f"the tokenizer of {self.model_name!r} is unusable (vocabulary {vocab} tokens, text model expects "
                f"{expected}; 'a photo of a dog' -> {ids}); save the model's real tokenizer into the folder"
            )

    @staticmethod
    def _image_stats(location) -> tuple[tuple, tuple]:
        try:
            from transformers import CLIPImageProcessor

            processor = CLIPImageProcessor.from_pretrained(str(location), local_files_only=True)
            return tuple(processor.image_mean), tuple(processor.image_std)
        except (OSError, ValueError, TypeError):
            logger.info("no image processor config in %s; using CLIP's standard mean/std", location)
            return _OPENAI_MEAN, _OPENAI_STD

    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings, float32 ``(P, E)``."""
        if isinstance(prompts, str):
            prompts = [prompts]
        tokens = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=self.context_length, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        feats = self.model.get_text_features(**tokens)
        feats = getattr(feats, "pooler_output", feats)
        return torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> np.ndarray:
        """L2-normalised image embeddings, float32 ``(N, E)``, from float ``(N, 3, H, W)`` in [0, 1].

        Raises:
            InvalidInputError: wrong shape, or a size mismatch without ``resize``.
        """
        images = check_image_size(torch.as_tensor(images).float(), self.image_size, self.resize, self.model_name)
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size].to(self.device)
            feats = self.model.get_image_features(pixel_values=(batch - self._mean) / self._std)
            feats = getattr(feats, "pooler_output", feats)
            out.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu())
        return torch.cat(out).numpy().astype(np.float32)

    @property
    def fingerprint(self) -> str:
        """Identifies the model (for embedding caches)."""
        return f"hf_clip|{Path(self.model_name).expanduser().resolve() if Path(self.model_name).exists() else self.model_name}|{self.image_size}|{self.resize}"
