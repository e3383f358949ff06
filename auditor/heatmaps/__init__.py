"""Neural activation maps of single features: "cam" (last spatial layer) and "gradient"."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from auditor._registry import Registry
from auditor.model import ModelAdapter

HeatmapMethod = Callable[[ModelAdapter, torch.Tensor, Sequence[int]], np.ndarray]
HEATMAPS: Registry[HeatmapMethod] = Registry("heatmap method")


def _normalise(maps: torch.Tensor) -> np.ndarray:
    maps = maps.clamp(min=0)
    peak = maps.flatten(1).max(1).values.clamp(min=1e-12).view(-1, 1, 1)
    return (maps / peak).float().cpu().numpy()


@HEATMAPS.register("cam")
def cam_heatmaps(adapter: ModelAdapter, images: torch.Tensor, features: Sequence[int]) -> np.ndarray:
    """Channel ``features[n]`` of the last spatial layer for image n, ReLU'd and scaled to [0, 1].

    Falls back to :func:`gradient_heatmaps` when the model has no spatial layer whose
    channels are the features (e.g. a ViT).

    Returns:
        float32 ``(N, h, w)`` at the spatial layer's resolution.
    """
    if adapter.locate_spatial_layer(images) is None:
        return gradient_heatmaps(adapter, images, features)
    spatial = adapter.forward(images, with_spatial=True).spatial
    picked = spatial[torch.arange(len(images)), torch.as_tensor(list(features))]
    return _normalise(picked.detach())


@HEATMAPS.register("gradient")
def gradient_heatmaps(adapter: ModelAdapter, images: torch.Tensor, features: Sequence[int]) -> np.ndarray:
    """|d feature / d input| (max over channels), smoothed; works for any architecture.

    Returns:
        float32 ``(N, H, W)`` at the input resolution.
    """
    x = images.clone().to(adapter.device).requires_grad_(True)
    out = adapter.forward(x, grad=True)
    picked = out.features[torch.arange(len(x)), torch.as_tensor(list(features), device=out.features.device)]
    (grad,) = torch.autograd.grad(picked.sum(), x)
    saliency = grad.abs().amax(1, keepdim=True)
    saliency = F.avg_pool2d(saliency, 5, stride=1, padding=2, count_include_pad=False)[:, 0]
    return _normalise(saliency.detach())


def compute_heatmaps(adapter: ModelAdapter, images: torch.Tensor, features: Sequence[int], method: str = "cam") -> np.ndarray:
    """Heatmap of ``features[n]`` on ``images[n]`` with the named method.

    Args:
        adapter: the model adapter.
        images: ``(N, C, H, W)`` as the dataset yields them.
        features: one feature index per image.
        method: a name in :data:`HEATMAPS` ("cam", "gradient").

    Returns:
        float32 ``(N, h, w)`` in [0, 1].

    Raises:
        ConfigError: unknown method.
    """
    return HEATMAPS.get(method)(adapter, images, features)


def resize_masks(masks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Area-average bool masks ``(N, H, W)`` onto a ``shape`` grid: float32 ``(N, h, w)`` in [0, 1]."""
    tensor = torch.from_numpy(np.asarray(masks, np.float32))[:, None]
    return F.adaptive_avg_pool2d(tensor, shape)[:, 0].numpy()
