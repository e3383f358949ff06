"""Counterfactual images made from real content: background swaps and object removal.

The protocol follows the Backgrounds Challenge (Xiao et al., ICLR 2021): an image's
object is kept and pasted onto the background of another image of the dataset,
either of the *same* class ("mixed-same") or of *another* class ("mixed-rand").
Both swaps leave the same paste artefacts, so the difference between a feature's
activation on them measures how much of the feature comes and goes with the
class's background; no synthetic fill (grey, noise, blur) enters the comparison.

Every function is pure and works on tensors in the model's input space (a paste
is a per-pixel selection, so it commutes with any per-channel normalisation).

* :func:`fill_from_background`: fill a region with the image's own background,
  copied from just beside the region (local texture and colour are kept).
* :func:`clean_backgrounds`: donors with their own object removed, so that no
  second object shows after a paste.
* :func:`paste_object`: the object kept, the background taken from donors.
* :func:`relight_object`: the object moved (shifted, or scaled per channel) to the light and colour of a new
  background, so that a cast or vignette over the whole scene leaves with the background instead of staying on
  the object.
* :func:`remove_object`: the image's own background with the object removed.
* :func:`background_contrast`: how much more a feature responds to its class's own
  backgrounds (object removed) than to the backgrounds of other classes.
* :func:`reliance_scores`: swap and object reliance of every feature, with bootstrap
  confidence intervals over the examined images.
* :func:`class_swap_contrast`: the swap reliance against the other class whose backgrounds
  raise the feature most, so that cues of some classes that merely suppress a feature do not
  count against the class.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from auditor.errors import InvalidInputError


def _check(images: torch.Tensor, masks: torch.Tensor, what: str = "masks") -> torch.Tensor:
    masks = torch.as_tensor(masks).to(torch.bool)
    if images.ndim != 4 or masks.shape != (images.shape[0], *images.shape[-2:]):
        raise InvalidInputError(
            f"{what} of shape {tuple(masks.shape)} do not match images of shape {tuple(images.shape)}; "
            "expected images (N, C, H, W) and bool masks (N, H, W)"
        )
    return masks.to(images.device)


def _shift(tensor: torch.Tensor, dy: int, dx: int, fill) -> torch.Tensor:
    """``out[..., y, x] = tensor[..., y - dy, x - dx]``; pixels shifted in from outside get ``fill``."""
    out = torch.full_like(tensor, fill)
    h, w = tensor.shape[-2:]
    if abs(dy) >= h or abs(dx) >= w:
        return out
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = tensor[..., ys, xs]
    return out


def dilate_masks(masks: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grow bool masks by ``pixels`` in every direction (a square structuring element).

    Args:
        masks: bool ``(N, H, W)``.
        pixels: non-negative growth; 0 returns the masks unchanged.

    Returns:
        bool ``(N, H, W)``.

    Raises:
        InvalidInputError: negative ``pixels`` or masks that are not ``(N, H, W)``.

    Example:
        >>> m = torch.zeros(1, 5, 5, dtype=torch.bool); m[0, 2, 2] = True
        >>> int(dilate_masks(m, 1).sum()), int(dilate_masks(m, 0).sum())
        (9, 1)
    """
    masks = torch.as_tensor(masks).to(torch.bool)
    if pixels < 0 or masks.ndim != 3:
        raise InvalidInputError(f"dilate_masks needs bool (N, H, W) masks and pixels >= 0; got {tuple(masks.shape)} and {pixels}")
    if pixels == 0:
        return masks
    grown = F.max_pool2d(masks[:, None].float(), 2 * pixels + 1, stride=1, padding=pixels)
    return grown[:, 0] > 0


def fill_from_background(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Fill the masked region of each image with that image's own background.

    The region's pixels are copied from the nearest offsets (a bounding-box width or
    height away, in eight directions, then twice as far) whose source pixel lies
    inside the image and outside the mask, so the fill carries the image's own
    texture, colour cast and noise. Pixels no offset reaches get the mean colour of
    the image's background (of the whole image when the mask covers everything).

    Args:
        images: float ``(N, C, H, W)``.
        masks: bool ``(N, H, W)``, the region to fill.

    Returns:
        float ``(N, C, H, W)``: a copy, equal to ``images`` outside the masks.

    Raises:
        InvalidInputError: masks whose shape does not match the images.

    Example:
        >>> img = torch.zeros(1, 1, 4, 4); img[0, 0, :, :2] = 1.0
        >>> hole = torch.zeros(1, 4, 4, dtype=torch.bool); hole[0, :, 0] = True
        >>> fill_from_background(img, hole)[0, 0, 0].tolist()
        [1.0, 1.0, 0.0, 0.0]
    """
    masks = _check(images, masks)
    out = images.clone()
    for n in range(len(images)):
        hole = masks[n].clone()
        if not hole.any():
            continue
        background = ~masks[n]
        if not background.any():
            out[n] = images[n].mean((1, 2), keepdim=True).expand_as(images[n])
            continue
        rows, cols = torch.nonzero(hole, as_tuple=True)
        bh = int(rows.max() - rows.min()) + 1
        bw = int(cols.max() - cols.min()) + 1
        offsets = []
        for k in (1, 2):
            for sy, sx in ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1)):
                offsets.append((k * sy * bh, k * sx * bw))
        for dy, dx in offsets:
            valid = _shift(background, dy, dx, False) & hole
            if valid.any():
                source = _shift(images[n], dy, dx, 0.0)
                out[n][:, valid] = source[:, valid]
                hole &= ~valid
                if not hole.any():
                    break
        if hole.any():
            out[n][:, hole] = images[n][:, background].mean(1, keepdim=True)
    return out


def clean_backgrounds(donor_images: torch.Tensor, donor_masks: torch.Tensor) -> torch.Tensor:
    """Donor images with their own object replaced by their own background (no object shows).

    Args:
        donor_images: float ``(N, C, H, W)``.
        donor_masks: bool ``(N, H, W)``, the donors' object masks.

    Returns:
        float ``(N, C, H, W)`` backgrounds.

    Raises:
        InvalidInputError: masks whose shape does not match the images.
    """
    return fill_from_background(donor_images, donor_masks)


def paste_object(images: torch.Tensor, masks: torch.Tensor, backgrounds: torch.Tensor) -> torch.Tensor:
    """Keep each image's object and take the rest of the image from a background.

    Args:
        images: float ``(N, C, H, W)``.
        masks: bool ``(N, H, W)``, the objects.
        backgrounds: float ``(N, C, H, W)``, one background per image (e.g. from
            :func:`clean_backgrounds` of donor images).

    Returns:
        float ``(N, C, H, W)``: object pixels equal ``images`` exactly, every other
        pixel equals ``backgrounds``.

    Raises:
        InvalidInputError: mismatched shapes.
    """
    masks = _check(images, masks)
    if backgrounds.shape != images.shape:
        raise InvalidInputError(
            f"backgrounds of shape {tuple(backgrounds.shape)} do not match images of shape {tuple(images.shape)}; "
            "pass one background per image, at the same size"
        )
    return torch.where(masks[:, None], images, backgrounds.to(images))


RELIGHT_SIGMA = 0.25
"""Standard deviation of the Gaussian that estimates local light and colour, as a fraction of the image side: wide
enough to span large objects, so the estimate exists under every object pixel."""


def local_background(images: torch.Tensor, outside: torch.Tensor, sigma: float = RELIGHT_SIGMA) -> torch.Tensor:
    """Gaussian-weighted mean colour of the pixels ``outside`` around every pixel: the local light of the background.

    Images larger than 64 pixels are averaged down to 32-63 pixels first (the estimate is smooth at this
    ``sigma``), so the cost does not grow with the image size.

    Args:
        images: float ``(N, C, H, W)``.
        outside: bool ``(N, H, W)``, the pixels that count (the background).
        sigma: the Gaussian's standard deviation as a fraction of the shorter image side (> 0).

    Returns:
        float ``(N, C, H, W)``; 0 where no counted pixel is within reach (an image with no background).

    Raises:
        InvalidInputError: mismatched shapes or ``sigma <= 0``.
    """
    outside = _check(images, outside, "background pixels")
    if sigma <= 0:
        raise InvalidInputError(f"sigma must be > 0; got {sigma}")
    h, w = images.shape[-2:]
    factor = max(1, min(h, w) // 32)
    weight = outside[:, None].to(images.dtype)
    weighted = images * weight
    if factor > 1:
        weighted = F.avg_pool2d(weighted, factor, ceil_mode=True)
        weight = F.avg_pool2d(weight, factor, ceil_mode=True)
    pixels = sigma * min(h, w) / factor
    radius = max(1, int(3 * pixels + 0.5))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(offsets**2) / (2 * pixels**2))
    kernel = kernel / kernel.sum()

    def blur(x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        x = F.conv2d(F.pad(x, (radius, radius, 0, 0)), kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
        return F.conv2d(F.pad(x, (0, 0, radius, radius)), kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)

    estimate = blur(weighted) / blur(weight).clamp_min(1e-6)
    if factor > 1:
        estimate = F.interpolate(estimate, size=(h, w), mode="bilinear", align_corners=False)
    return estimate


RELIGHT_MODES = ("shift", "ratio", "chroma")
RELIGHT_RATIO_FLOOR = 0.05
RELIGHT_RATIO_LIMIT = 4.0


def relight_object(images: torch.Tensor, masks: torch.Tensor, backgrounds: torch.Tensor,
                   sigma: float = RELIGHT_SIGMA, mode: str = "shift",
                   mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> torch.Tensor:
    """Move each image's object to the light and colour of a new background, before :func:`paste_object`.

    Every mode compares the new background's and the image's own local background colour
    (:func:`local_background`, both over the pixels outside the object), so that a colour cast or vignette that
    covers object and background alike leaves the object when the background is swapped, while the object's own
    pattern is kept:

    * "shift": every object pixel moves by the difference of the two colours. Additive, so it commutes with a
      per-channel normalisation of the inputs, as the paste does; it removes an additive cast exactly and a
      multiplicative one only in part (most for objects as bright as their background).
    * "ratio": every object pixel is scaled by the ratio of the two colours, per channel, in pixel space (von Kries
      adaptation: light and white balance scale each channel). It removes a multiplicative cast or vignette from
      bright and dark objects alike. The ratio uses a floor of ``RELIGHT_RATIO_FLOOR`` under both colours, is
      limited to ``[1 / RELIGHT_RATIO_LIMIT, RELIGHT_RATIO_LIMIT]``, and the result is clipped to [0, 1].
    * "chroma": the colour by the ratio, the light by the shift: every object pixel is scaled by the ratio of the
      two colours' chromaticities (each channel over the mean of the channels) and then shifted by the difference
      of their brightness (the mean of the channels), in pixel space. A colour cast leaves as with "ratio", while
      a darker or brighter background does not scale the object's contrast. On one channel it is "shift".

    Args:
        images: float ``(N, C, H, W)`` in the model's input space.
        masks: bool ``(N, H, W)``, the objects.
        backgrounds: float ``(N, C, H, W)``, the backgrounds the objects will be pasted onto (same space).
        sigma: see :func:`local_background`.
        mode: "shift", "ratio" or "chroma" (``verdicts.relight_mode``).
        mean: per-channel mean the inputs were normalised with, shape broadcastable to ``(1, C, 1, 1)``; with
            ``std``, "ratio" and "chroma" work on ``images * std + mean`` (pixel space, [0, 1]). None: the inputs
            are pixels.
        std: per-channel standard deviation matching ``mean``.

    Returns:
        float ``(N, C, H, W)``: ``images`` with the object pixels moved (the rest unchanged).

    Raises:
        InvalidInputError: mismatched shapes, an unknown ``mode``, or ``mean`` without ``std``.

    Example:
        >>> img = torch.full((1, 1, 8, 8), 0.7); obj = torch.zeros(1, 8, 8, dtype=torch.bool); obj[0, 3:5, 3:5] = True
        >>> img[0, 0, 3:5, 3:5] = 0.9  # an object 0.2 brighter than its surroundings
        >>> out = relight_object(img, obj, torch.full((1, 1, 8, 8), 0.4))
        >>> round(float(out[0, 0, 4, 4]), 3), round(float(out[0, 0, 0, 0]), 3)  # still 0.2 above its new background
        (0.6, 0.7)
        >>> # scaled by (0.35 + 0.05) / (0.7 + 0.05), the new light over the old above the floor
        >>> round(float(relight_object(img, obj, torch.full((1, 1, 8, 8), 0.35), mode="ratio")[0, 0, 4, 4]), 3)
        0.48
    """
    masks = _check(images, masks)
    if backgrounds.shape != images.shape:
        raise InvalidInputError(
            f"backgrounds of shape {tuple(backgrounds.shape)} do not match images of shape {tuple(images.shape)}"
        )
    if mode not in RELIGHT_MODES:
        raise InvalidInputError(f"relight mode must be one of {RELIGHT_MODES}; got {mode!r}")
    if (mean is None) != (std is None):
        raise InvalidInputError("give both mean and std (the inputs' normalisation) or neither")
    backgrounds = backgrounds.to(images)
    outside = ~masks
    if mode == "shift":
        shift = local_background(backgrounds, outside, sigma) - local_background(images, outside, sigma)
        return torch.where(masks[:, None], images + shift, images)
    if mean is not None:
        mean, std = mean.to(images), std.to(images)
        images_px, backgrounds_px = images * std + mean, backgrounds * std + mean
    else:
        images_px, backgrounds_px = images, backgrounds
    own = local_background(images_px, outside, sigma).clamp(min=0) + RELIGHT_RATIO_FLOOR
    new = local_background(backgrounds_px, outside, sigma).clamp(min=0) + RELIGHT_RATIO_FLOOR
    if mode == "ratio":
        relit = images_px * (new / own).clamp(1 / RELIGHT_RATIO_LIMIT, RELIGHT_RATIO_LIMIT)
    else:
        own_light, new_light = own.mean(1, keepdim=True), new.mean(1, keepdim=True)
        chroma = ((new / new_light) / (own / own_light)).clamp(1 / RELIGHT_RATIO_LIMIT, RELIGHT_RATIO_LIMIT)
        relit = images_px * chroma + (new_light - own_light)
    relit = relit.clamp(0, 1)
    if mean is not None:
        relit = (relit - mean) / std
    return torch.where(masks[:, None], relit, images)


def remove_object(images: torch.Tensor, masks: torch.Tensor, backgrounds: torch.Tensor | None = None) -> torch.Tensor:
    """The image's own background with its object removed.

    Args:
        images: float ``(N, C, H, W)``.
        masks: bool ``(N, H, W)``, the objects.
        backgrounds: optional float ``(N, C, H, W)`` object-free donor backgrounds;
            when given, the object's pixels are taken from them; by default they are
            filled with the image's own neighbouring background
            (:func:`fill_from_background`).

    Returns:
        float ``(N, C, H, W)``: background pixels equal ``images`` exactly.

    Raises:
        InvalidInputError: mismatched shapes.
    """
    if backgrounds is None:
        return fill_from_background(images, masks)
    masks = _check(images, masks)
    return torch.where(masks[:, None], backgrounds.to(images), images)


def pick_donors(
    candidates: np.ndarray, exclude: np.ndarray, n_swaps: int, rng: np.random.Generator
) -> np.ndarray:
    """Choose ``n_swaps`` donors per image from ``candidates``, never the image itself.

    Args:
        candidates: int ``(M,)`` dataset indices of possible donors.
        exclude: int ``(N,)`` dataset index of each image (not its own donor).
        n_swaps: donors per image; fewer when fewer candidates remain.
        rng: random generator.

    Returns:
        int ``(N, S)`` donor indices with ``S = min(n_swaps, usable candidates)``;
        ``S`` is 0 when no image has a usable donor.
    """
    candidates = np.asarray(candidates, np.int64)
    rows = []
    for index in np.asarray(exclude, np.int64):
        usable = candidates[candidates != index]
        rows.append(rng.choice(usable, size=min(n_swaps, len(usable)), replace=False) if len(usable) else usable)
    width = min((len(r) for r in rows), default=0)
    return np.stack([r[:width] for r in rows]) if rows else np.zeros((0, 0), np.int64)


def _signed_scale(mean: np.ndarray) -> np.ndarray:
    """The unit of reliance: the features' mean activation, its sign kept, never closer to 0 than 1e-8.

    Dividing by the signed mean makes a reliance positive when the background moves the
    feature in the direction of its mean (up for positive features such as ReLU outputs,
    down for negative ones such as some transformer features).
    """
    return np.where(mean < 0, np.minimum(mean, -1e-8), np.maximum(mean, 1e-8))


@dataclass(frozen=True)
class Reliance:
    """Background and object reliance of D features, estimated on N images.

    All values are fractions of the features' mean activation on the original
    images, its sign kept (1 = the whole activation comes and goes).

    Attributes:
        background: float ``(D,)``: mean over images of (activation with same-class
            backgrounds - activation with other-class backgrounds).
        background_low: float ``(D,)``, lower end of its bootstrap confidence interval.
        background_high: float ``(D,)``, upper end.
        random_drop: float ``(D,)``, drop from the original with other-class backgrounds.
        same_drop: float ``(D,)``, drop from the original with same-class backgrounds.
        object: float ``(D,)``, drop from the original when the object is removed.
        object_low: float ``(D,)``, lower end of its confidence interval.
        object_high: float ``(D,)``, upper end.
    """

    background: np.ndarray
    background_low: np.ndarray
    background_high: np.ndarray
    random_drop: np.ndarray
    same_drop: np.ndarray
    object: np.ndarray
    object_low: np.ndarray
    object_high: np.ndarray


def percentile_interval(resamples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided percentile interval over bootstrap resamples (axis 0).

    Args:
        resamples: float ``(B, ...)`` one statistic per resample.
        confidence: two-sided confidence level.

    Returns:
        ``(low, high)``, each of shape ``resamples.shape[1:]``.
    """
    alpha = (1 - confidence) / 2
    return np.quantile(resamples, alpha, axis=0), np.quantile(resamples, 1 - alpha, axis=0)


def reliance_scores(
    base: np.ndarray,
    same: np.ndarray,
    random: np.ndarray,
    removed: np.ndarray,
    rng: np.random.Generator,
    confidence: float = 0.95,
    n_bootstrap: int = 1000,
    quantile: float | None = None,
) -> Reliance:
    """How much of each feature's activation comes and goes with the background, and with the object.

    Per image i the background reliance is ``(mean_j same[i, j] - ref_j random[i, j]) / scale``,
    where ``ref`` is the mean over the other-class backgrounds, or their ``quantile`` when
    given (see :func:`background_contrast` for why a high quantile), and the object reliance ``(base[i] - removed[i]) / scale``, where ``scale`` is the
    feature's mean activation on the original images (signed, so that a reliance is
    positive when the feature moves towards its mean); the estimates are their means
    over images with percentile bootstrap intervals (resampling images).

    Args:
        base: float ``(N, D)`` activations on the original images.
        same: float ``(N, S, D)`` activations with S same-class backgrounds per image.
        random: float ``(N, S', D)`` activations with S' other-class backgrounds.
        removed: float ``(N, D)`` activations with the object removed.
        rng: random generator for the bootstrap.
        confidence: two-sided confidence level of the intervals.
        n_bootstrap: bootstrap resamples.
        quantile: reference quantile of the other-class swaps per image (None: their mean).

    Returns:
        A :class:`Reliance` of ``(D,)`` arrays.

    Raises:
        InvalidInputError: inconsistent shapes or no images.
    """
    base = np.asarray(base, np.float64)
    n = base.shape[0]
    if n == 0 or base.ndim != 2:
        raise InvalidInputError(f"reliance needs activations of shape (N, D) with N > 0; got {base.shape}")
    shapes = {"same": np.shape(same), "random": np.shape(random), "removed": np.shape(removed)}
    if shapes["same"][::2] != base.shape or shapes["random"][::2] != base.shape or shapes["removed"] != base.shape:
        raise InvalidInputError(f"activations {shapes} do not match the originals {base.shape}; expected (N, S, D) and (N, D)")
    scale = _signed_scale(base.mean(0))
    same_mean = np.asarray(same, np.float64).mean(1)
    random_mean = np.asarray(random, np.float64).mean(1)
    reference = random_mean if quantile is None else np.quantile(np.asarray(random, np.float64), quantile, axis=1)
    per_image_bg = (same_mean - reference) / scale
    per_image_obj = (base - np.asarray(removed, np.float64)) / scale
    picks = rng.integers(0, n, size=(n_bootstrap, n))

    def interval(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        means = values[picks].mean(1)
        return percentile_interval(means, confidence)

    bg_low, bg_high = interval(per_image_bg)
    obj_low, obj_high = interval(per_image_obj)
    return Reliance(
        background=per_image_bg.mean(0),
        background_low=bg_low,
        background_high=bg_high,
        random_drop=(base - random_mean).mean(0) / scale,
        same_drop=(base - same_mean).mean(0) / scale,
        object=per_image_obj.mean(0),
        object_low=obj_low,
        object_high=obj_high,
    )


def background_contrast(
    same: np.ndarray,
    other: np.ndarray,
    scale: np.ndarray,
    rng: np.random.Generator,
    quantile: float = 0.75,
    confidence: float = 0.95,
    n_bootstrap: int = 1000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How much more each feature responds to the class's backgrounds than to other classes' backgrounds.

    The contrast is ``(mean of same - quantile of other) / scale``: the feature's mean
    activation on object-free backgrounds of the class, minus the ``quantile`` of its
    activations on object-free backgrounds of other classes. With ``quantile`` 0.5 or
    more, a background type that a good share of other classes have too (a plain
    backdrop, a shared setting) is not held against the class, and a feature that other
    classes' own cues merely suppress scores about 0; only backgrounds the class has and
    the other classes mostly lack raise it. The interval resamples both donor sets.

    Args:
        same: float ``(M, D)`` activations on M backgrounds of the class.
        other: float ``(M', D)`` activations on M' backgrounds of other classes.
        scale: float ``(D,)`` the features' mean activation on the class's images (the unit of the
            result; its sign is kept, so a negative feature that grows more negative counts as positive).
        rng: random generator for the bootstrap.
        quantile: quantile of the other classes' activations used as the reference.
        confidence: two-sided confidence level.
        n_bootstrap: bootstrap resamples.

    Returns:
        ``(contrast, low, high)``, each float ``(D,)``.

    Raises:
        InvalidInputError: an empty donor set or mismatched feature counts.

    Example:
        >>> same = np.array([[2.0], [2.0]]); other = np.array([[0.0], [0.0], [2.0], [0.0]])
        >>> float(background_contrast(same, other, np.array([4.0]), np.random.default_rng(0), 0.5)[0][0])
        0.5
    """
    same, other = np.asarray(same, np.float64), np.asarray(other, np.float64)
    if same.ndim != 2 or other.ndim != 2 or len(same) == 0 or len(other) == 0 or same.shape[1] != other.shape[1]:
        raise InvalidInputError(
            f"background contrast needs two non-empty (M, D) activation sets with equal D; got {same.shape} and {other.shape}"
        )
    scale = _signed_scale(np.asarray(scale, np.float64))
    value = (same.mean(0) - np.quantile(other, quantile, axis=0)) / scale
    pick_same = rng.integers(0, len(same), size=(n_bootstrap, len(same)))
    pick_other = rng.integers(0, len(other), size=(n_bootstrap, len(other)))
    boot = (same[pick_same].mean(1) - np.quantile(other[pick_other], quantile, axis=1)) / scale
    return (value, *percentile_interval(boot, confidence))


def _swap_arrays(what: str, same, random, random_classes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``same`` (N, S, D) and ``random`` (N, S', D) as float64 and ``random_classes`` (N, S') as an array; raises
    InvalidInputError naming ``what`` when the shapes do not match."""
    same, random = np.asarray(same, np.float64), np.asarray(random, np.float64)
    random_classes = np.asarray(random_classes)
    if same.ndim != 3 or random.ndim != 3 or random_classes.shape != random.shape[:2] or same.shape[::2] != random.shape[::2]:
        raise InvalidInputError(
            f"{what} needs same (N, S, D), random (N, S', D) and donor classes (N, S'); got {same.shape}, "
            f"{random.shape} and {random_classes.shape}"
        )
    return same, random, random_classes


def class_swap_contrast(
    same: np.ndarray,
    random: np.ndarray,
    random_classes: np.ndarray,
    scale: np.ndarray,
    rng: np.random.Generator,
    min_swaps: int = 8,
    confidence: float = 0.95,
    n_bootstrap: int = 1000,
    statistic: str = "mean",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Swap reliance against the most favourable other class: same-class backgrounds minus the best other class.

    With the object kept, the feature's mean activation over the same-class swaps is compared
    with its mean over the swaps onto each other class's backgrounds, and the *highest* of
    those class means is the reference. A feature that its own class's backgrounds raise above
    every other class's scores above 0; one that only some classes' backgrounds lower (their
    cues compete with the object) scores about 0, whatever the share of such classes among the
    donors. Classes with fewer than ``min_swaps`` swaps are left out, since the highest of many
    small-sample means would be biased upwards. The interval resamples the examined images
    with their swaps.

    With ``statistic="median"`` each side is summarised by the median of its swaps instead of
    the mean: a cue that also sits behind a minority of another class's images (a leaky cue)
    raises that class's mean, and with it the reference, but not its median; likewise the few
    images of the class without its cue do not lower the same-class median.

    Args:
        same: float ``(N, S, D)`` activations with S same-class backgrounds per image.
        random: float ``(N, S', D)`` activations with S' other-class backgrounds per image.
        random_classes: int ``(N, S')`` the class of each other-class donor.
        scale: float ``(D,)`` the features' mean activation on the original images (sign kept).
        rng: random generator for the bootstrap.
        min_swaps: swaps a donor class needs to serve as a reference.
        confidence: two-sided confidence level.
        n_bootstrap: bootstrap resamples.
        statistic: "mean" or "median" of each side's swaps.

    Returns:
        ``(contrast, low, high)``, each float ``(D,)``; NaN when no donor class has ``min_swaps`` swaps.

    Raises:
        InvalidInputError: mismatched shapes, or an unknown ``statistic``.

    Example:
        >>> same = np.full((4, 2, 1), 1.0)
        >>> random = np.array([[[1.0], [0.0]]] * 4)  # class 1 backgrounds keep the feature, class 2 ones suppress it
        >>> classes = np.array([[1, 2]] * 4)
        >>> float(class_swap_contrast(same, random, classes, np.array([1.0]), np.random.default_rng(0), min_swaps=2)[0][0])
        0.0
    """
    same, random, random_classes = _swap_arrays("class swap contrast", same, random, random_classes)
    if statistic not in ("mean", "median"):
        raise InvalidInputError(f"the class swap statistic must be 'mean' or 'median'; got {statistic!r}")
    scale = _signed_scale(np.asarray(scale, np.float64))
    classes = [k for k in np.unique(random_classes) if (random_classes == k).sum() >= min_swaps]
    n, d = same.shape[0], same.shape[2]
    if not classes:
        nan = np.full(d, np.nan)
        return nan, nan.copy(), nan.copy()
    if statistic == "median":
        return _class_swap_median_contrast(same, random, random_classes, classes, scale, rng, confidence, n_bootstrap)
    same_sum, same_count = same.sum(1), np.full((n, 1), same.shape[1])
    class_sums = np.stack([(random * (random_classes == k)[..., None]).sum(1) for k in classes], 1)  # (N, K, D)
    class_counts = np.stack([(random_classes == k).sum(1) for k in classes], 1)[..., None]  # (N, K, 1)

    def contrast(rows: np.ndarray) -> np.ndarray:
        """(..., D) for image index arrays of shape (..., n)."""
        same_mean = same_sum[rows].sum(-2) / same_count[rows].sum(-2)
        counts = class_counts[rows].sum(-3)
        class_means = np.where(counts > 0, class_sums[rows].sum(-3) / np.maximum(counts, 1), -np.inf)
        return (same_mean - class_means.max(-2)) / scale

    value = contrast(np.arange(n))
    boot = contrast(rng.integers(0, n, size=(n_bootstrap, n)))
    return (value, *percentile_interval(boot, confidence))


def _pooled_median(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Median over the resampled images' swaps, NaN swaps left out; -inf where a resample has none.

    Args:
        values: float ``(N, S, D)``, NaN where a swap does not belong to the group.
        rows: int ``(..., n)`` image indices of each resample.

    Returns:
        float ``(..., D)``.
    """
    picked = values[rows]  # (..., n, S, D)
    pooled = picked.reshape(*rows.shape[:-1], -1, values.shape[-1])
    count = np.isfinite(pooled).sum(-2, keepdims=True)
    ordered = np.sort(np.where(np.isfinite(pooled), pooled, np.inf), axis=-2)
    low = np.take_along_axis(ordered, np.maximum((count - 1) // 2, 0), -2)
    high = np.take_along_axis(ordered, np.maximum(count // 2, 0), -2)
    return np.where(count > 0, (low + high) / 2, -np.inf)[..., 0, :]


def _class_swap_median_contrast(same, random, random_classes, classes, scale, rng, confidence, n_bootstrap):
    """:func:`class_swap_contrast` with medians: (median same-class swap - highest median other-class swap) / scale."""
    n = same.shape[0]
    by_class = [np.where((random_classes == k)[..., None], random, np.nan) for k in classes]

    def contrast(rows: np.ndarray) -> np.ndarray:
        best = np.max(np.stack([_pooled_median(values, rows) for values in by_class]), 0)
        return (_pooled_median(same, rows) - best) / scale

    value = contrast(np.arange(n))
    boot = contrast(rng.integers(0, n, size=(n_bootstrap, n)))
    return (value, *percentile_interval(boot, confidence))


def _auroc(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """AUROC of ``positive`` (P, D) above ``negative`` (Q, D) per column, ties counted half (Mann-Whitney)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([positive, negative], 0), axis=0)
    p, q = len(positive), len(negative)
    return (ranks[:p].sum(0) - p * (p + 1) / 2) / (p * q)


def swap_separation(
    same: np.ndarray,
    random: np.ndarray,
    random_classes: np.ndarray,
    scale: np.ndarray,
    min_swaps: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """How well a feature tells the class's own backgrounds from other classes', with the objects kept: an AUROC.

    Every activation of the examined objects pasted onto same-class backgrounds is compared with
    every activation of the same objects pasted onto other classes' backgrounds. Unlike a mean
    difference, the AUROC is measured against the feature's spread over the class's objects, the
    way a cue's effect on the feature is judged against the images with and without it.

    Args:
        same: float ``(N, S, D)`` activations with S same-class backgrounds per image.
        random: float ``(N, S', D)`` activations with S' other-class backgrounds per image.
        random_classes: int ``(N, S')`` the class of each other-class donor.
        scale: float ``(D,)`` the features' mean activation on the original images; a negative mean flips the
            direction, as in :func:`class_swap_contrast`.
        min_swaps: swaps a donor class needs to count in the per-class AUROC.

    Returns:
        ``(pooled, worst_class)``, each float ``(D,)`` in [0, 1]: the AUROC against all other-class swaps, and the
        lowest AUROC against one donor class with at least ``min_swaps`` swaps (NaN when none has).

    Raises:
        InvalidInputError: mismatched shapes.

    Example:
        >>> same = np.array([[[2.0], [3.0]], [[2.5], [3.5]]])
        >>> random = np.array([[[1.0], [2.2]], [[0.5], [2.8]]])
        >>> pooled, worst = swap_separation(same, random, np.array([[1, 2], [1, 2]]), np.array([2.0]), min_swaps=2)
        >>> float(pooled[0]), float(worst[0])
        (0.8125, 0.625)
    """
    same_flat, random_flat, donor_classes = _signed_swaps(same, random, random_classes, scale)
    pooled = _auroc(same_flat, random_flat)
    per_class = [_auroc(same_flat, random_flat[donor_classes == k]) for k in np.unique(donor_classes)
                 if (donor_classes == k).sum() >= min_swaps]
    worst = np.min(per_class, 0) if per_class else np.full(same_flat.shape[1], np.nan)
    return pooled, worst


def _signed_swaps(same: np.ndarray, random: np.ndarray, random_classes: np.ndarray,
                  scale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The swaps of :func:`swap_separation`, checked and flattened: ``(same (N*S, D), random (N*S', D), donor classes
    (N*S',))``, each feature's sign flipped where its ``scale`` is negative."""
    same, random, random_classes = _swap_arrays("swap separation", same, random, random_classes)
    sign = np.where(np.asarray(scale, np.float64) < 0, -1.0, 1.0)
    d = same.shape[2]
    return same.reshape(-1, d) * sign, random.reshape(-1, d) * sign, random_classes.reshape(-1)


def separation_against(
    same: np.ndarray,
    random: np.ndarray,
    random_classes: np.ndarray,
    scale: np.ndarray,
    classes: Iterable[int],
) -> np.ndarray:
    """:func:`swap_separation`'s pooled AUROC against the swaps onto backgrounds of ``classes`` only.

    Args:
        same: float ``(N, S, D)`` activations on same-class backgrounds.
        random: float ``(N, S', D)`` activations on other-class backgrounds.
        random_classes: int ``(N, S')`` the class of each other-class donor.
        scale: float ``(D,)`` the features' mean activation; a negative mean flips the direction.
        classes: the donor classes to compare with.

    Returns:
        float ``(D,)``: the AUROC per feature, NaN where no swap has a donor of ``classes``.

    Raises:
        InvalidInputError: mismatched shapes.
    """
    same_flat, random_flat, donor_classes = _signed_swaps(same, random, random_classes, scale)
    chosen = np.isin(donor_classes, np.fromiter(classes, np.int64))
    if not chosen.any():
        return np.full(same_flat.shape[1], np.nan)
    return _auroc(same_flat, random_flat[chosen])
