"""Core or spurious, automatically: background swaps, object removal and heat inside the object mask.

For each important (class, feature), the class's top-activating images (or, with
``image_selection: spread``, images spread over its activation ranking) are examined
with their object masks. Every verdict keeps all the signals below, says which one
decided (``decided_by``) and why (``explanation``).

* **background reliance** (default causal test, from real content; Backgrounds Challenge,
  Xiao et al., ICLR 2021): backgrounds of ``n_donors`` images of the class and of
  ``n_donors`` images of the whole dataset, each donor's own object filled in with its
  own neighbouring background (:mod:`auditor.counterfactuals`). The reliance is the
  feature's mean activation on the class's backgrounds minus the ``reliance_quantile``
  of its activations on other classes' backgrounds, as a fraction of its activation on
  the examined images, with a bootstrap interval. It is calibrated by construction: a
  feature that ignores backgrounds scores 0 whatever the data look like, no fill texture
  enters, and the upper-quantile reference keeps a feature that other classes' own cues
  merely suppress (a clean control class) near 0.
* **swap reliance**: the same comparison with each examined image's object pasted onto
  ``n_swaps`` backgrounds of each kind (mixed-same vs mixed-rand), with an interval over
  the images; it sees features that need the object and the background together. With
  ``swap_relight`` (on for the dataset's masks) the pasted object is first moved to its new
  background's light and colour (shifted, or scaled with ``relight_mode``), so a cast or vignette
  over the whole scene leaves with it.
* **object reliance**: the relative drop when the object is replaced by the image's own
  neighbouring background.
* **population AUROC** (``population_images``): a random sample of the class's objects, not
  its top images, pasted onto same-class and other-class backgrounds; how well the feature
  ranks the former above the latter against the spread of the whole class. A spurious
  verdict needs it to reach ``population_threshold``, and a core one reaching
  ``population_flag_threshold`` turns spurious (both ``decided_by: "population"``): the
  top images see a faint cue's effect against a small spread, and miss a cue whose top
  images the object drives.
* **heat density ratio**: the heatmap's mass per unit area inside the object divided by
  its mass per unit area outside (normalised for object area).
* **legacy fill ablation** (``object_drop``, ``background_drop``): object or background
  replaced by a grey+noise or blurred fill. ``background_drop`` also gates the swap: the
  class's own backgrounds must beat a neutral one by ``swap_min_background_drop``, so a
  feature that every other class's cue suppresses does not pass the swap on its class's
  plain backgrounds. With ``neutral_relight`` (on by default, acting where swaps re-light) the
  kept object is first re-lit to the fill, so a cast that also colours the object leaves it.

Spurious when the background reliance reaches ``reliance_threshold`` or the swap
reliance reaches ``swap_threshold`` while backgrounds alone do not point the other way
(the background reliance's interval reaches 0, ``swap_background_check``) and the neutral fill costs the feature at least
``swap_min_background_drop``, each with its interval above 0 (the swap's above ``swap_margin``;
"mixed" when the
object reliance reaches ``reliance_threshold`` too); or when the heat density puts the
evidence outside the object and either removing the object raises the feature (object
reliance interval below 0: a background feature even if other classes share that
background) or both reliances point that way without being conclusive.
The fill ablation decides when ``counterfactual`` is "neutral" or "blur", or when no swap
is possible (a single class, empty masks).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from auditor.config import DIRECTION_REFERENCES, VerdictConfig
from auditor.counterfactuals import (
    background_contrast,
    class_swap_contrast,
    clean_backgrounds,
    dilate_masks,
    paste_object,
    pick_donors,
    reliance_scores,
    relight_object,
    remove_object,
    separation_against,
    swap_separation,
)
from auditor.data import ImageSource
from auditor.errors import InvalidInputError
from auditor.features import FeatureCache
from auditor.heatmaps import compute_heatmaps, resize_masks
from auditor.model import ModelAdapter
from auditor.results import FeatureVerdict

logger = logging.getLogger(__name__)


def heat_inside_mask(heatmaps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image: fraction of heat inside the mask, mask area fraction, and inside/outside density ratio.

    Args:
        heatmaps: float ``(N, h, w)``, non-negative.
        masks: float ``(N, h, w)`` in [0, 1] (soft masks on the heatmap grid).

    Returns:
        ``(heat_inside (N,), area (N,), density_ratio (N,))``; the ratio is 1 for uniform heat.

    Example:
        >>> heat = np.array([[[1., 0.], [0., 0.]]]); mask = np.array([[[1., 0.], [0., 0.]]])
        >>> [round(float(a[0]), 6) for a in heat_inside_mask(heat, mask)][:2]
        [1.0, 0.25]
    """
    eps = 1e-8
    total = heatmaps.sum((1, 2)) + eps
    inside = (heatmaps * masks).sum((1, 2)) / total
    area = masks.mean((1, 2))
    density_in = inside / np.maximum(area, eps)
    density_out = (1 - inside) / np.maximum(1 - area, eps)
    ratio = density_in / np.maximum(density_out, eps)
    return inside, area, ratio


@dataclass(frozen=True)
class NeutralFill:
    """A colourless fill with the images' own pixel noise, in the model's input space.

    Attributes:
        colour: ``(C, 1, 1)`` grey at the sample's mean brightness (model input space).
        noise_std: ``(C, 1, 1)`` per-pixel noise of the sample (model input space).
    """

    colour: torch.Tensor
    noise_std: torch.Tensor


def neutral_fill(source: ImageSource, rng: np.random.Generator, n_samples: int = 256) -> NeutralFill:
    """Estimate a neutral fill from a random sample of the source's images.

    The colour is grey (equal RGB) at the sample's mean brightness, so a fill never
    carries a colour cast of the data; the noise level is the median absolute
    difference of neighbouring pixels (robust to edges), so a filled region has the
    same texture statistics as a plain one.
    """
    indices = np.sort(rng.choice(len(source), size=min(n_samples, len(source)), replace=False))
    brightness, noise = [], []
    for _, images, _, _ in source.batches(indices):
        unit = source.unit_images(images)
        brightness.append(unit.mean((1, 2, 3)))
        diffs = (unit[..., 1:] - unit[..., :-1]).abs().flatten(2)
        noise.append(diffs.median(2).values.mean(1) / 0.6745 / np.sqrt(2))
    grey = float(torch.cat(brightness).mean())
    sigma = float(torch.cat(noise).mean())
    channels = source.image_shape[0]
    colour = torch.full((1, channels, 1, 1), grey)
    noise_std = torch.full((1, channels, 1, 1), sigma)
    if source.mean is not None:
        colour = (colour - source.mean[:, :channels]) / source.std[:, :channels]
        noise_std = noise_std / source.std[:, :channels]
    return NeutralFill(colour[0], noise_std[0])


def ablate(
    images: torch.Tensor, masks: torch.Tensor, fill: NeutralFill | str, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(object removed, background removed)`` copies of ``images``.

    Args:
        images: ``(N, C, H, W)``.
        masks: bool ``(N, H, W)`` object masks.
        fill: a :class:`NeutralFill`, or "blur" for a heavily blurred copy of each image.
        generator: random generator for the fill's noise.
    """
    m = masks[:, None].to(images.dtype)
    if isinstance(fill, str):
        k = max(3, (images.shape[-1] // 4) | 1)
        filler = F.avg_pool2d(images, k, stride=1, padding=k // 2, count_include_pad=False)
    else:
        noise = torch.randn(images.shape, generator=generator).to(images)
        filler = fill.colour.to(images) + noise * fill.noise_std.to(images)
    return images * (1 - m) + filler * m, images * m + filler * (1 - m)


def _relative_drop(before: torch.Tensor, after: torch.Tensor) -> float:
    scale = before.abs().mean().clamp(min=1e-8)
    return float((before.mean() - after.mean()) / scale)


def _features(adapter: ModelAdapter, images: torch.Tensor, batch_size: int) -> np.ndarray:
    """float64 ``(N, D)`` features of ``images``, in batches."""
    out = [adapter.forward(images[i : i + batch_size]).features.detach().cpu().double().numpy() for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0))


class _Masks:
    """Object masks of dataset images, computed once per image."""

    def __init__(self, source: ImageSource, provider, labels: np.ndarray):
        self.source, self.provider, self.labels = source, provider, labels
        self.memo: dict[int, np.ndarray] = {}

    def get(self, indices: np.ndarray, images: torch.Tensor) -> np.ndarray:
        missing = [n for n, i in enumerate(indices) if int(i) not in self.memo]
        if missing:
            subset = images[missing]
            ids = [int(indices[n]) for n in missing]
            labels = [int(self.labels[i]) for i in ids]
            new = np.asarray(self.provider.masks(self.source.unit_images(subset), labels, ids), bool)
            if new.shape != (len(ids), *images.shape[-2:]):
                raise InvalidInputError(
                    f"the mask provider returned masks of shape {new.shape[1:]} for images of shape "
                    f"{tuple(images.shape[-2:])}; masks must match the image size"
                )
            self.memo.update(zip(ids, new))
        return np.stack([self.memo[int(i)] for i in indices])


class _Backgrounds:
    """Object-free backgrounds of donor images (their own object, grown by ``dilation`` pixels, filled with
    their own background)."""

    def __init__(self, source: ImageSource, masks: _Masks, dilation: int = 0):
        self.source, self.masks, self.dilation = source, masks, dilation
        self.memo: dict[int, torch.Tensor] = {}

    def get(self, indices: np.ndarray) -> torch.Tensor:
        missing = sorted({int(i) for i in indices} - set(self.memo))
        if missing:
            images, _, _ = self.source.load(missing)
            masks = dilate_masks(torch.from_numpy(self.masks.get(np.asarray(missing), images)), self.dilation)
            self.memo.update(zip(missing, clean_backgrounds(images, masks)))
        return torch.stack([self.memo[int(i)] for i in indices])


def _swap(images: torch.Tensor, masks: torch.Tensor, backgrounds: torch.Tensor, config: VerdictConfig,
          source: ImageSource, light: torch.Tensor | None = None) -> torch.Tensor:
    """The objects pasted onto ``backgrounds``, first re-lit (``verdicts.swap_relight``, ``relight_mode``) to them or,
    when given, to the light of ``light`` (same shape)."""
    if config.swap_relight:
        images = relight_object(images, masks, backgrounds if light is None else light, mode=config.relight_mode,
                                mean=source.mean, std=source.std)
    return paste_object(images, masks, backgrounds)


def _swapped_features(adapter: ModelAdapter, images: torch.Tensor, masks: torch.Tensor, backgrounds: _Backgrounds,
                      donors: np.ndarray, n_swaps: int, config: VerdictConfig, source: ImageSource,
                      batch_size: int) -> np.ndarray:
    """float64 ``(N, n_swaps, D)`` features of the objects pasted onto the backgrounds of ``donors[:, s]`` (int
    ``(N, S)``, S at least ``n_swaps``), for each swap s."""
    return np.stack([_features(adapter, _swap(images, masks, backgrounds.get(donors[:, s]), config, source), batch_size)
                     for s in range(n_swaps)], 1)


def examined_images(activations: np.ndarray, members: np.ndarray, n_images: int, selection: str) -> np.ndarray:
    """The images of a class that one (class, feature)'s verdict examines.

    Args:
        activations: float ``(N,)``, the feature's activation on each of the class's images.
        members: int ``(N,)``, those images' dataset indices.
        n_images: how many to examine (all of them when the class has fewer).
        selection: "top" (the ``n_images`` most activating) or "spread" (evenly spaced ranks from the
            most activating to the least, both included).

    Returns:
        int ``(min(n_images, N),)`` dataset indices, sorted.

    Raises:
        ValueError: for an unknown ``selection``.
    """
    order = np.argsort(-activations, kind="stable")
    n = min(n_images, len(order))
    if selection == "top":
        ranks = np.arange(n)
    elif selection == "spread":
        ranks = np.unique(np.round(np.linspace(0, len(order) - 1, n)).astype(int))
    else:
        raise ValueError(f"image selection must be 'top' or 'spread'; got {selection!r}")
    return np.sort(members[order[ranks]])


def _twin(rng: np.random.Generator) -> np.random.Generator:
    """A generator that will draw what ``rng`` draws next, without advancing ``rng``."""
    twin = np.random.Generator(type(rng.bit_generator)())
    twin.bit_generator.state = rng.bit_generator.state
    return twin


def _swap_means(on_own: np.ndarray, on_others: np.ndarray, own_donors: np.ndarray, other_donors: np.ndarray,
                donor_classes: np.ndarray) -> SwapMeans:
    """Average swap features ``on_own`` and ``on_others`` (float ``(N, S, D)``), whose donor backgrounds are
    ``own_donors`` and ``other_donors`` (dataset indices, int ``(N, S)``) and whose other-class donors' classes are
    ``donor_classes`` (int ``(N, S)``)."""
    dims = on_own.shape[-1]
    own_flat = on_own.reshape(-1, dims).astype(np.float64)
    flat = on_others.reshape(-1, dims).astype(np.float64)
    donors, others = donor_classes.reshape(-1), other_donors.reshape(-1)
    classes = np.unique(donors)
    return SwapMeans(own=own_flat.mean(0),
                     by_donor_class={int(k): flat[donors == k].mean(0) for k in classes},
                     counts={int(k): int((donors == k).sum()) for k in classes},
                     own_donors=DonorMoments.of(own_flat, own_donors.reshape(-1)),
                     donors_by_class={int(k): DonorMoments.of(flat[donors == k], others[donors == k]) for k in classes})


def _fmt(value: float) -> str:
    return f"{value:+.2f}"


def population_auroc(config: VerdictConfig, pooled: float, against_clean: float) -> float:
    """The population AUROC the gate reads: against the clean classes' backgrounds where measured and
    ``config.population_reference`` is "clean_classes", else against every other class's."""
    if config.population_reference == "clean_classes" and math.isfinite(against_clean):
        return against_clean
    return pooled


def population_verdict(config: VerdictConfig, verdict: tuple[bool, str, bool, bool, str], population: float,
                       object_reliance: float) -> tuple[bool, str, bool, bool, str]:
    """The examined images' verdict after the population checks.

    A spurious verdict found by comparing the class's backgrounds with other classes' (``decided_by`` in
    :data:`COMPARATIVE_TESTS`) whose population AUROC is below ``population_threshold`` turns core; a core one whose
    population AUROC reaches ``population_flag_threshold`` turns spurious (both ``decided_by: "population"``). A
    background feature every class shares, found by removing the object ("object", "heatmap"), is not the gate's to
    clear: no class's backgrounds separate it. An unmeasured (NaN) AUROC changes nothing.

    Args:
        config: the thresholds (0 turns either check off) and ``mixed_threshold``.
        verdict: ``(spurious, decided_by, counterfactual says spurious, mixed, explanation)`` from the examined images.
        population: the population AUROC (:func:`population_auroc`).
        object_reliance: the examined images' object reliance, for "mixed".

    Returns:
        The verdict tuple, changed or as given.
    """
    spurious, decided_by, test_spurious, _, reason = verdict
    if not math.isfinite(population):
        return verdict
    sample = (f"Over a random sample of the class's images, object kept, the feature ranks them on the class's own "
              f"backgrounds above other classes' backgrounds with AUROC {population:.2f}")
    if spurious and decided_by in COMPARATIVE_TESTS and 0 < config.population_threshold and population < config.population_threshold:
        return False, "population", test_spurious, False, (
            f"{sample}, below {config.population_threshold:g}: across the class the backgrounds barely separate its "
            f"images by this feature, so it is core although its top images said spurious. {reason}")
    if not spurious and 0 < config.population_flag_threshold <= population:
        mixed = math.isfinite(object_reliance) and object_reliance >= config.mixed_threshold
        tail = f"; the object matters too (object reliance {_fmt(object_reliance)}), so the feature is mixed" if mixed else ""
        return True, "population", True, mixed, (
            f"{sample}, at least {config.population_flag_threshold:g}: across the class the backgrounds separate its "
            f"images by this feature, although its top images alone were not conclusive{tail}. {reason}")
    return verdict


def decide_verdict(
    config: VerdictConfig,
    background: tuple[float, float, float] | None,
    swap: tuple[float, float, float],
    object_reliance: float,
    object_high: float,
    heat_spurious: bool,
    density: float,
    object_drop: float,
    background_drop: float,
    separation: float = float("nan"),
    population: float = float("nan"),
) -> tuple[bool, str, bool, bool, str]:
    """The verdict rule on one (class, feature)'s measured evidence; replayable on recorded evidence.

    Args:
        config: the thresholds (``reliance_threshold``, ``swap_threshold``, ``swap_margin``,
            ``swap_min_background_drop``, ``swap_background_check``, ``density_threshold``,
            ``min_activation_drop``), ``heat_fallback`` and the counterfactual in use.
        background: ``(background reliance, CI low, CI high)``, or None when no swap was possible.
        swap: ``(swap reliance, CI low, CI high)``.
        object_reliance: drop when the object is replaced by its own background; object_high its CI's upper end.
        heat_spurious: the heat density is below ``density_threshold``.
        density: the heat density ratio.
        object_drop, background_drop: the legacy fill ablation's drops (the verdict when ``background`` is
            None; otherwise ``background_drop`` gates the swap, see ``swap_min_background_drop``).
        separation: the swap AUROC (``swap_auroc``); decides only when ``separation_threshold`` is above 0.
        population: the population AUROC (:func:`population_auroc`), read by :func:`population_verdict`. NaN: not
            measured.

    Returns:
        ``(spurious, decided_by, counterfactual says spurious, mixed, explanation)``.
    """
    verdict = _examined_verdict(config, background, swap, object_reliance, object_high, heat_spurious, density,
                                object_drop, background_drop, separation)
    return population_verdict(config, verdict, population, object_reliance)


def _examined_verdict(config: VerdictConfig, background: tuple[float, float, float] | None,
                      swap: tuple[float, float, float], object_reliance: float, object_high: float, heat_spurious: bool,
                      density: float, object_drop: float, background_drop: float,
                      separation: float) -> tuple[bool, str, bool, bool, str]:
    """:func:`decide_verdict` on the examined images' evidence alone."""
    heat_text = f"heat density inside/outside the object is {density:.2f} (threshold {config.density_threshold:g})"
    if background is None:
        conclusive = max(object_drop, background_drop) >= config.min_activation_drop
        ablation_spurious = background_drop > object_drop
        fill = config.counterfactual if config.counterfactual in ("neutral", "blur") else config.ablation_fill
        prefix = "" if config.counterfactual != "swap" else "No background swap was possible (no donors or empty masks); "
        if conclusive:
            side = "background" if ablation_spurious else "object"
            return ablation_spurious, "ablation", ablation_spurious, False, (
                f"{prefix}removing the {side} with the {fill} fill lowered the feature more "
                f"(background drop {_fmt(background_drop)}, object drop {_fmt(object_drop)})."
            )
        return heat_spurious, "heatmap", heat_spurious, False, (
            f"{prefix}the {fill} fill ablation had no effect (drops below {config.min_activation_drop:g}), "
            f"so the heatmap decided: {heat_text}."
        )
    value, low, high = background
    swap_value, swap_low, swap_high = swap
    threshold, swap_threshold = config.reliance_threshold, config.swap_threshold
    grown = (f", object masks grown by {config.background_test_dilation} pixel"
             f"{'s' if config.background_test_dilation > 1 else ''} for this test" if config.background_test_dilation > 0 else "")
    ci = f"background reliance {_fmt(value)} [{_fmt(low)}, {_fmt(high)}]{grown}"
    swap_ci = f"swap reliance {_fmt(swap_value)} [{_fmt(swap_low)}, {_fmt(swap_high)}]"
    mixed = object_reliance >= config.mixed_threshold
    tail = (f"; the object matters too (object reliance {_fmt(object_reliance)}), so the feature is mixed"
            if mixed else f"; object reliance {_fmt(object_reliance)}")
    if low > 0 and value >= threshold:
        return True, "background", True, mixed, (
            f"With the objects removed, the feature responds more to its class's own backgrounds than to "
            f"other classes' ({ci}, at least {threshold:g} and above 0){tail}."
        )
    # Against other classes' backgrounds only, a feature that every other class's cue suppresses would pass
    # (its own plain backgrounds are the best on offer); its own backgrounds must also beat a neutral one.
    raised_by_own = not background_drop < config.swap_min_background_drop
    backgrounds_agree = (high if config.swap_background_check == "interval" else value) >= 0
    if swap_low > config.swap_margin and swap_value >= swap_threshold and backgrounds_agree and raised_by_own:
        others = ("than on the backgrounds of the other class that suits it best" if config.swap_reference == "classes"
                  else "than on other classes'")
        if config.swap_reference == "classes" and config.class_swap_statistic == "median":
            others += " (medians of the swaps)"
        kept = "With the object kept and re-lit to each new background" if config.swap_relight else "With the object kept"
        return True, "swap", True, mixed, (
            f"{kept}, the feature is higher on its class's own backgrounds {others} "
            f"({swap_ci}, at least {swap_threshold:g} and its interval above {config.swap_margin:g}) and than on a "
            f"neutral background (drop {_fmt(background_drop)}, at least {config.swap_min_background_drop:g}), although "
            f"backgrounds alone barely move it ({ci}): it needs the object and the background together{tail}."
        )
    if 0 < config.separation_threshold <= separation and backgrounds_agree and raised_by_own:
        return True, "separation", True, mixed, (
            f"With the object kept, the feature's activations on its class's own backgrounds rank above those on "
            f"other classes' backgrounds with AUROC {separation:.2f} (at least {config.separation_threshold:g}), and "
            f"its own backgrounds raise it over a neutral one (drop {_fmt(background_drop)}), although the mean "
            f"effects stay under their thresholds ({ci}; {swap_ci}){tail}."
        )
    if config.heat_fallback and heat_spurious and object_high < 0:
        return True, "object", True, False, (
            f"Replacing the object with the image's own background raises the feature (object reliance "
            f"{_fmt(object_reliance)}, interval below 0) and the {heat_text}: it measures the background, "
            f"even though other classes' backgrounds carry it as well ({ci})."
        )
    if (config.heat_fallback and heat_spurious and value >= 0 and swap_value >= 0
            and (high >= threshold or swap_high >= swap_threshold)):
        return True, "heatmap", False, False, (
            f"The {heat_text}, so its evidence lies outside the object, and the background swaps point the "
            f"same way without being conclusive ({ci}; {swap_ci})."
        )
    heat = f"; the {heat_text}" if heat_spurious else ""
    return False, "background", False, False, (
        f"The feature responds about as much to other classes' backgrounds as to its own ({ci}, "
        f"threshold {threshold:g}; {swap_ci}, threshold {swap_threshold:g}; a reliance counts when it reaches "
        f"its threshold with its interval above 0, the swap's above {config.swap_margin:g}); object reliance "
        f"{_fmt(object_reliance)}{heat}."
    )


@dataclass(frozen=True)
class DonorMoments:
    """Sums over donor backgrounds of the mean features that the objects swapped onto each donor got.

    Attributes:
        n: donors.
        total: float64 ``(D,)``, the sum of the donors' mean features.
        total_sq: float64 ``(D,)``, the sum of their squares.
    """

    n: int
    total: np.ndarray
    total_sq: np.ndarray

    @staticmethod
    def of(features: np.ndarray, donors: np.ndarray) -> DonorMoments:
        """The moments of swap ``features`` float ``(M, D)`` whose donors are int ``(M,)``."""
        means = np.stack([features[donors == k].mean(0) for k in np.unique(donors)]).astype(np.float64)
        return DonorMoments(n=len(means), total=means.sum(0), total_sq=(means**2).sum(0))

    @staticmethod
    def pooled(parts: Iterable[DonorMoments]) -> DonorMoments:
        """The moments of several donor sets together."""
        parts = list(parts)
        return DonorMoments(n=sum(p.n for p in parts), total=sum(p.total for p in parts),
                            total_sq=sum(p.total_sq for p in parts))

    def mean_variance(self) -> np.ndarray | None:
        """float64 ``(D,)``: the variance of the mean over donors (the donors' sample variance over ``n``); None with
        fewer than two donors."""
        if self.n < 2:
            return None
        mean = self.total / self.n
        variance = np.maximum(self.total_sq / self.n - mean**2, 0.0) * self.n / (self.n - 1)
        return variance / self.n


@dataclass(frozen=True)
class SwapMeans:
    """A class's background swaps, averaged: its examined objects on its own class's backgrounds and on each other
    class's.

    Attributes:
        own: float64 ``(D,)``, the mean penultimate features of the objects on their own class's backgrounds.
        by_donor_class: donor class -> float64 ``(D,)``, the mean features of the objects on that class's backgrounds.
        counts: donor class -> the number of swaps behind its mean (at least 1).
        own_donors: the moments over the own class's donor backgrounds (None when not kept).
        donors_by_class: donor class -> the moments over its donor backgrounds.
    """

    own: np.ndarray
    by_donor_class: dict[int, np.ndarray]
    counts: dict[int, int]
    own_donors: DonorMoments | None = None
    donors_by_class: dict[int, DonorMoments] = field(default_factory=dict)

    def _classes(self, reference: Iterable[int] | None) -> list[int]:
        wanted = set(self.counts) if reference is None else set(reference) & set(self.counts)
        return sorted(wanted or self.counts)

    def direction(self, reference: Iterable[int] | None = None) -> np.ndarray:
        """The change of every feature when the objects move from the ``reference`` classes' backgrounds to their own.

        Args:
            reference: donor classes to measure against; None, or classes of which none was a donor, for every donor
                class (weighted by its swaps).

        Returns:
            float64 ``(D,)``: ``own`` minus the swap-weighted mean over the reference donor classes.
        """
        classes = self._classes(reference)
        weights = np.array([self.counts[k] for k in classes], np.float64)
        donors = np.stack([self.by_donor_class[k] for k in classes])
        return self.own - weights @ donors / weights.sum()

    def standard_error(self, reference: Iterable[int] | None = None) -> np.ndarray | None:
        """float64 ``(D,)``: the standard error of :meth:`direction` over the donor backgrounds drawn (each donor's
        swaps averaged first, since swaps onto one background are not independent); None without the moments or with
        fewer than two donors on either side."""
        classes = self._classes(reference)
        if self.own_donors is None or any(k not in self.donors_by_class for k in classes):
            return None
        own = self.own_donors.mean_variance()
        other = DonorMoments.pooled(self.donors_by_class[k] for k in classes).mean_variance()
        return None if own is None or other is None else np.sqrt(own + other)


@dataclass(frozen=True)
class VerdictResult:
    """Output of :func:`run_verdicts`.

    Attributes:
        verdicts: one :class:`FeatureVerdict` per important (class, feature).
        swap_means: class -> its :class:`SwapMeans`, from the background swaps of its examined images. Classes where
            no swap was possible are absent.
    """

    verdicts: tuple[FeatureVerdict, ...]
    swap_means: dict[int, SwapMeans] = field(default_factory=dict)


def run_verdicts(
    adapter: ModelAdapter,
    source: ImageSource,
    cache: FeatureCache,
    important: dict[int, list[int]],
    importance: np.ndarray,
    mask_provider,
    config: VerdictConfig,
    rng: np.random.Generator,
    progress: bool = True,
) -> VerdictResult:
    """The verdict stage: judge every important (class, feature) core or spurious, with its evidence.

    Args:
        adapter: the model adapter.
        source: images of the split the cache was computed on (train); the donors of
            background swaps are drawn from it too.
        cache: its FeatureCache (rows with label < 0 are neither examined nor donors).
        important: class -> important features.
        importance: float ``(K, D)`` contributions.
        mask_provider: object with ``masks(unit_images, labels, indices) -> bool (N, H, W)``.
        config: verdict settings.
        rng: random generator (donors, the neutral fill sample, bootstrap).
        progress: show a progress bar.

    Returns:
        A :class:`VerdictResult`: one verdict per (class, feature), in class then importance order, and each swapped
        class's :class:`SwapMeans`.

    Raises:
        InvalidInputError: masks whose size differs from the images.
    """
    legacy_fill = config.counterfactual if config.counterfactual in ("neutral", "blur") else config.ablation_fill
    fill = "blur" if legacy_fill == "blur" else neutral_fill(source, rng)
    labels = np.asarray(cache.labels)
    valid = np.flatnonzero(labels >= 0)
    masks = _Masks(source, mask_provider, labels)
    backgrounds = _Backgrounds(source, masks, config.background_dilation)
    grown = config.background_test_dilation > 0
    test_backgrounds = _Backgrounds(source, masks, config.background_dilation + config.background_test_dilation) if grown else backgrounds
    swap = config.counterfactual == "swap"
    batch = max(1, source.batch_size)
    pool = np.sort(rng.choice(valid, size=min(config.n_donors, len(valid)), replace=False)) if swap else valid[:0]
    pool_set = set(pool.tolist())
    pool_features = ungrown_pool_features = None
    verdicts = []
    swap_means: dict[int, SwapMeans] = {}
    swap_pools: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for c, features in tqdm(list(important.items()), desc="core/spurious verdicts", disable=not progress):
        if not features:
            continue
        members = valid[labels[valid] == c]
        chosen_by_feature = {}
        for f in features:
            chosen_by_feature[f] = examined_images(np.asarray(cache.activations[members, f]), members,
                                                   config.n_images, config.image_selection)
        union = np.unique(np.concatenate(list(chosen_by_feature.values())))
        images, _, _ = source.load(union)
        union_masks = masks.get(union, images)
        mask_tensor = torch.from_numpy(union_masks)
        base = _features(adapter, images, batch)
        no_object, no_background = ablate(images, mask_tensor, fill, torch.Generator().manual_seed(int(rng.integers(2**31))))
        other_pool = pool[labels[pool] != c]
        if config.neutral_relight and config.swap_relight:  # without re-lighting the paste would change nothing
            light = None
            if config.neutral_relight_reference == "other_classes" and len(other_pool):
                light = backgrounds.get(other_pool).mean(0, keepdim=True).expand_as(images)
            no_background = _swap(images, mask_tensor, no_background, config, source, light=light)
        legacy_object = _features(adapter, no_object, batch)
        legacy_background = _features(adapter, no_background, batch)

        area = union_masks.mean((1, 2))
        swappable = (area > 0) & (area < 1)
        same_pool = np.sort(rng.choice(members, size=min(config.n_donors, len(members)), replace=False)) if swap else members[:0]
        n_swaps = 0
        if swap and swappable.sum() >= 2 and len(same_pool) >= 2 and len(other_pool) >= 1:
            same_donors = pick_donors(same_pool, union, config.n_swaps, rng)
            rand_donors = pick_donors(other_pool, union, config.n_swaps, rng)
            n_swaps = min(same_donors.shape[1], rand_donors.shape[1])
        if n_swaps > 0:
            if pool_features is None:
                pool_features = _features(adapter, test_backgrounds.get(pool), batch)
                ungrown_pool_features = _features(adapter, backgrounds.get(pool), batch) if grown else pool_features
            other_bg = pool_features[labels[pool] != c]
            same_bg = _features(adapter, test_backgrounds.get(same_pool), batch)
            ungrown_other_bg = ungrown_pool_features[labels[pool] != c]
            ungrown_same_bg = _features(adapter, backgrounds.get(same_pool), batch) if grown else same_bg
            same_acts = _swapped_features(adapter, images, mask_tensor, backgrounds, same_donors, n_swaps, config, source, batch)
            rand_acts = _swapped_features(adapter, images, mask_tensor, backgrounds, rand_donors, n_swaps, config, source, batch)
            removed = _features(adapter, remove_object(images, dilate_masks(mask_tensor, config.background_dilation)), batch)
            swap_pools[int(c)] = (members, same_pool, other_pool)
            swap_means[int(c)] = _swap_means(same_acts[swappable], rand_acts[swappable], same_donors[swappable, :n_swaps],
                                             rand_donors[swappable, :n_swaps], labels[rand_donors[swappable, :n_swaps]])
            for index in set(same_pool.tolist()) - pool_set:  # not needed by later classes
                backgrounds.memo.pop(int(index), None)
                test_backgrounds.memo.pop(int(index), None)
        elif swap:
            logger.warning("class %d: no background swap possible (%d same-class and %d other-class donors, %d images with a "
                           "partial object mask); the %s fill ablation decides", c, len(same_pool), len(other_pool),
                           int(swappable.sum()), legacy_fill)
        position = {int(i): n for n, i in enumerate(union)}

        for f in features:
            chosen = chosen_by_feature[f]
            rows = np.array([position[int(i)] for i in chosen])
            heat = compute_heatmaps(adapter, images[rows], [f] * len(rows), config.heatmap)
            soft = resize_masks(union_masks[rows], heat.shape[1:])
            inside, obj_area, ratio = heat_inside_mask(heat, soft)
            usable = obj_area > 0
            if not usable.any():
                logger.warning("class %d feature %d: every examined image has an empty object mask; verdict from ablation only", c, f)
                usable[:] = True
            density = float(np.exp(np.log(np.maximum(ratio[usable], 1e-6)).mean()))
            heat_spurious = bool(density < config.density_threshold)
            object_drop = _relative_drop(torch.from_numpy(base[rows, f]), torch.from_numpy(legacy_object[rows, f]))
            background_drop = _relative_drop(torch.from_numpy(base[rows, f]), torch.from_numpy(legacy_background[rows, f]))

            swap_rows = rows[swappable[rows]]
            evidence: dict = {}
            background = None
            swap_evidence = (float("nan"),) * 3
            separation = float("nan")
            object_reliance = object_high = float("nan")
            if n_swaps > 0 and len(swap_rows) >= 2:
                scale = base[rows, f].mean(keepdims=True)
                ungrown = _twin(rng) if grown else None  # the same resamples, with the masks as they are
                value, low, high = background_contrast(same_bg[:, [f]], other_bg[:, [f]], scale, rng,
                                                       config.reliance_quantile, config.reliance_confidence)
                background = (float(value[0]), float(low[0]), float(high[0]))
                ungrown_background = background
                if grown:
                    u_value, u_low, u_high = background_contrast(ungrown_same_bg[:, [f]], ungrown_other_bg[:, [f]], scale,
                                                                 ungrown, config.reliance_quantile, config.reliance_confidence)
                    ungrown_background = (float(u_value[0]), float(u_low[0]), float(u_high[0]))
                on_same, on_others = same_acts[swap_rows][..., [f]], rand_acts[swap_rows][..., [f]]
                donor_classes = labels[rand_donors[swap_rows, :n_swaps]]
                rel = reliance_scores(base[swap_rows][:, [f]], on_same, on_others, removed[swap_rows][:, [f]], rng,
                                      config.reliance_confidence, quantile=config.reliance_quantile)
                object_reliance, object_high = float(rel.object[0]), float(rel.object_high[0])
                twin = _twin(rng)  # the median on the mean's resamples
                by_class = class_swap_contrast(on_same, on_others, donor_classes, scale, rng,
                                               confidence=config.reliance_confidence)
                by_class_median = class_swap_contrast(on_same, on_others, donor_classes, scale, twin,
                                                      confidence=config.reliance_confidence, statistic="median")
                class_means = (float(by_class[0][0]), float(by_class[1][0]), float(by_class[2][0]))
                class_medians = (float(by_class_median[0][0]), float(by_class_median[1][0]), float(by_class_median[2][0]))
                class_evidence = class_medians if config.class_swap_statistic == "median" else class_means
                pooled_auroc, worst_class_auroc = swap_separation(on_same, on_others, donor_classes, scale)
                separation = float(pooled_auroc[0])
                swap_evidence = (float(rel.background[0]), float(rel.background_low[0]), float(rel.background_high[0]))
                if config.swap_reference == "classes" and np.isfinite(class_evidence[0]):
                    swap_evidence = class_evidence
                evidence = dict(
                    counterfactual="swap",
                    background_reliance=background[0],
                    reliance_ci_low=background[1],
                    reliance_ci_high=background[2],
                    background_test_dilation=config.background_test_dilation,
                    ungrown_background_reliance=ungrown_background[0],
                    ungrown_reliance_ci_low=ungrown_background[1],
                    ungrown_reliance_ci_high=ungrown_background[2],
                    swap_reliance=float(rel.background[0]),
                    swap_ci_low=float(rel.background_low[0]),
                    swap_ci_high=float(rel.background_high[0]),
                    class_swap_reliance=class_means[0],
                    class_swap_ci_low=class_means[1],
                    class_swap_ci_high=class_means[2],
                    class_median_swap_reliance=class_medians[0],
                    class_median_swap_ci_low=class_medians[1],
                    class_median_swap_ci_high=class_medians[2],
                    swap_auroc=separation,
                    class_swap_auroc=float(worst_class_auroc[0]),
                    random_background_drop=float(rel.random_drop[0]),
                    same_background_drop=float(rel.same_drop[0]),
                    object_reliance=object_reliance,
                    object_ci_low=float(rel.object_low[0]),
                    object_ci_high=float(rel.object_high[0]),
                    n_swaps=n_swaps,
                    n_backgrounds=[len(same_bg), len(other_bg)],
                )
            spurious, decided_by, test_spurious, mixed, explanation = decide_verdict(
                config, background, swap_evidence, object_reliance, object_high, heat_spurious, density, object_drop, background_drop,
                separation=separation)
            verdicts.append(
                FeatureVerdict(
                    class_index=int(c),
                    feature=int(f),
                    label="spurious" if spurious else "core",
                    importance=float(importance[c, f]),
                    heat_inside=float(inside[usable].mean()),
                    object_area=float(obj_area[usable].mean()),
                    density_ratio=density,
                    object_drop=object_drop,
                    background_drop=background_drop,
                    heat_says_spurious=heat_spurious,
                    ablation_says_spurious=bool(test_spurious),
                    confirmed=bool(heat_spurious == spurious and test_spurious == spurious),
                    image_indices=[int(i) for i in chosen],
                    mixed=mixed,
                    decided_by=decided_by,
                    explanation=explanation,
                    **{"counterfactual": legacy_fill, **evidence},
                )
            )
    if config.population_images > 0 and swap_pools:
        verdicts = _with_population_separation(verdicts, swap_pools, adapter, source, cache, masks, backgrounds, config, rng,
                                               progress)
    return VerdictResult(verdicts=tuple(verdicts), swap_means=swap_means)


def _with_population_separation(verdicts: list[FeatureVerdict], swap_pools: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]],
                                adapter: ModelAdapter, source: ImageSource, cache: FeatureCache, masks: _Masks,
                                backgrounds: _Backgrounds, config: VerdictConfig, rng: np.random.Generator,
                                progress: bool) -> list[FeatureVerdict]:
    """``verdicts`` with ``population_swap_auroc`` and ``population_clean_swap_auroc`` filled in: each swapped class's
    random sample of ``config.population_images`` objects pasted onto ``n_swaps`` same-class and other-class
    backgrounds, the AUROC of every feature's activations on the former above the latter."""
    labels = np.asarray(cache.labels)
    clean = {int(c) for c in np.unique(labels[labels >= 0])} - {v.class_index for v in verdicts if v.label == "spurious"}
    batch = max(1, source.batch_size)
    measured: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    kept = set(backgrounds.memo)  # the shared donor pool's backgrounds; a class's own donors are dropped after it
    for c, (members, same_pool, other_pool) in tqdm(list(swap_pools.items()), desc="population AUROC", disable=not progress):
        sample = np.sort(rng.choice(members, size=min(config.population_images, len(members)), replace=False))
        images, _, _ = source.load(sample)
        sample_masks = masks.get(sample, images)
        area = sample_masks.mean((1, 2))
        keep = (area > 0) & (area < 1)
        if keep.sum() < 2:
            continue
        sample, images, mask_tensor = sample[keep], images[torch.from_numpy(keep)], torch.from_numpy(sample_masks[keep])
        same_donors = pick_donors(same_pool, sample, config.n_swaps, rng)
        other_donors = pick_donors(other_pool, sample, config.n_swaps, rng)
        n_swaps = min(same_donors.shape[1], other_donors.shape[1])
        if n_swaps == 0:
            continue
        same = _swapped_features(adapter, images, mask_tensor, backgrounds, same_donors, n_swaps, config, source, batch)
        other = _swapped_features(adapter, images, mask_tensor, backgrounds, other_donors, n_swaps, config, source, batch)
        for index in set(same_donors[:, :n_swaps].ravel().tolist()) - kept:  # as the verdict loop does
            backgrounds.memo.pop(int(index), None)
        scale = np.asarray(cache.activations[members], np.float64).mean(0)
        donor_classes = labels[other_donors[:, :n_swaps]]
        measured[c] = (swap_separation(same, other, donor_classes, scale)[0],
                       separation_against(same, other, donor_classes, scale, clean))
    out = []
    for v in verdicts:
        if v.class_index in measured:
            pooled, against_clean = (float(a[v.feature]) for a in measured[v.class_index])
            v = dataclasses.replace(v, population_swap_auroc=pooled, population_clean_swap_auroc=against_clean)
            examined = (v.label == "spurious", v.decided_by, v.ablation_says_spurious, v.mixed, v.explanation)
            verdict = population_verdict(config, examined, population_auroc(config, pooled, against_clean),
                                         v.object_reliance)
            if verdict != examined:
                spurious, decided_by, test_spurious, mixed, explanation = verdict
                v = dataclasses.replace(v, label="spurious" if spurious else "core", decided_by=decided_by,
                                        ablation_says_spurious=test_spurious, mixed=mixed, explanation=explanation,
                                        confirmed=v.heat_says_spurious == spurious and test_spurious == spurious)
        out.append(v)
    return out


def spurious_by_class(verdicts: Sequence[FeatureVerdict]) -> dict[int, list[int]]:
    """class -> the spurious features that carry the cue best (classes with none are absent).

    These are the features that rank images by spuriosity. A mixed feature also responds
    to the object, so ranking by it would partly rank by the object; when a class has
    spurious features whose background reliance is at least their object reliance, only
    those are returned. A class whose spurious features are all object-dominated keeps
    them all, and verdicts without swap evidence (NaN reliances) always count.

    Args:
        verdicts: the verdicts of :func:`run_verdicts`.

    Returns:
        class index -> feature indices, in verdict order.
    """
    spurious: dict[int, list[FeatureVerdict]] = {}
    for v in verdicts:
        if v.label == "spurious":
            spurious.setdefault(v.class_index, []).append(v)
    result: dict[int, list[int]] = {}
    for c, found in spurious.items():
        dominant = [v for v in found if not v.background_reliance < v.object_reliance]
        result[c] = [v.feature for v in (dominant or found)]
    return result


COMPARATIVE_TESTS = ("background", "swap", "separation", "population")
"""The verdict tests that compare a class's own backgrounds with other classes' (``FeatureVerdict.decided_by``)."""


@dataclass(frozen=True)
class CueDirections:
    """Output of :func:`ranking_directions`.

    Attributes:
        directions: class -> float64 ``(D,)`` cue direction.
        standard_errors: class -> float64 ``(D,)``, each component's standard error over the donor backgrounds drawn
            (classes whose swaps kept too few donors to tell are absent).
    """

    directions: dict[int, np.ndarray]
    standard_errors: dict[int, np.ndarray] = field(default_factory=dict)


def ranking_directions(verdicts: Sequence[FeatureVerdict], swap_means: dict[int, SwapMeans],
                       reference: str = "clean_classes") -> CueDirections:
    """The cue directions fit to rank their class: those of classes with a spurious feature that a comparison of the
    class's own backgrounds with other classes' found (``decided_by`` in :data:`COMPARATIVE_TESTS`).

    Where a class's spurious features were found otherwise (a background shared by every class, the heatmap, the fill
    ablation), its own backgrounds do not differ from the others' and its direction is noise.

    With ``reference="clean_classes"`` the direction is measured against the backgrounds of the classes in which no
    feature was judged spurious, so that other classes' own cues do not enter it as their absence; where no donor class
    is clean, against every other class.

    Args:
        verdicts: the final verdicts (after any human annotation).
        swap_means: ``VerdictResult.swap_means``.
        reference: "clean_classes" or "other_classes".

    Returns:
        A :class:`CueDirections` for a subset of ``swap_means``' classes.

    Raises:
        ValueError: an unknown ``reference``.
    """
    if reference not in DIRECTION_REFERENCES:
        raise ValueError(f"direction reference must be one of {DIRECTION_REFERENCES}; got {reference!r}")
    flagged = {v.class_index for v in verdicts if v.label == "spurious"}
    found = {v.class_index for v in verdicts if v.label == "spurious" and v.decided_by in COMPARATIVE_TESTS}
    directions, errors = {}, {}
    for c, means in swap_means.items():
        if c in found:
            clean = set(means.counts) - flagged if reference == "clean_classes" else None
            directions[c] = means.direction(clean)
            error = means.standard_error(clean)
            if error is not None:
                errors[c] = error
    return CueDirections(directions=directions, standard_errors=errors)
