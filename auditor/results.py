"""Plain result records passed between stages and stored in the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


def to_jsonable(value: Any) -> Any:
    """Recursively convert numpy scalars/arrays, dataclasses and tuples into JSON-ready values (NaN -> None)."""
    if hasattr(value, "__dataclass_fields__"):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return None if not np.isfinite(value) else value
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


@dataclass(frozen=True)
class FeatureVerdict:
    """Core-or-spurious verdict for one (class, feature) with its evidence.

    Attributes:
        class_index: the class.
        feature: the feature index (a column of the activations).
        label: "core" or "spurious".
        importance: mean activation x head weight for the class.
        heat_inside: mean fraction of the heatmap's mass inside the object mask.
        object_area: mean fraction of the image covered by the object mask.
        density_ratio: heat density inside the object / heat density outside (1 = uniform).
        object_drop: relative drop of the feature's activation when the object is removed.
        background_drop: relative drop when the background is removed.
        heat_says_spurious: the heatmap alone says the evidence lies outside the object.
        ablation_says_spurious: the counterfactual test alone says so (the background swaps when
            ``counterfactual`` is "swap" and donors were available, else the fill ablation).
        confirmed: both signals agree with ``label``.
        image_indices: the images examined (the class's top-activating ones unless ``verdicts.image_selection``
            is "spread").
        concept_names: CLIP names of the feature (filled by the concept stage).
        counterfactual: the counterfactual test that ran: "swap", "neutral" or "blur".
        background_reliance: how much more the feature responds to its class's own backgrounds than
            to other classes' (objects removed from both): mean activation on same-class backgrounds
            minus the ``reliance_quantile`` of its activations on other-class backgrounds, as a
            fraction of its mean activation on the examined images; NaN without swaps.
        reliance_ci_low: lower end of its bootstrap confidence interval (resampling backgrounds).
        reliance_ci_high: upper end.
        background_test_dilation: pixels by which the masks were grown further for ``background_reliance`` only
            (``verdicts.background_test_dilation``; 0: the masks of the swaps).
        ungrown_background_reliance: ``background_reliance`` with the masks of the swaps (equal to it when
            ``background_test_dilation`` is 0), on the same bootstrap resamples.
        ungrown_reliance_ci_low: lower end of its interval.
        ungrown_reliance_ci_high: upper end.
        swap_reliance: with the object kept, activation on same-class backgrounds minus the
            ``reliance_quantile`` of the activations on other-class backgrounds (Backgrounds Challenge
            mixed-same vs mixed-rand), per image, as a fraction.
        swap_ci_low: lower end of its bootstrap interval over the examined images.
        swap_ci_high: upper end.
        class_swap_reliance: the swap comparison against the other class whose backgrounds raise the
            feature most (class means over the swaps, classes with at least 8 swaps); about 0 for a
            feature that some classes' cues merely suppress. NaN without swaps.
        class_swap_ci_low: lower end of its bootstrap interval over the examined images.
        class_swap_ci_high: upper end.
        class_median_swap_reliance: the same comparison with each side summarised by the median of its swaps
            (robust to a cue behind a minority of another class's images). NaN without swaps.
        class_median_swap_ci_low: lower end of its bootstrap interval over the examined images.
        class_median_swap_ci_high: upper end.
        swap_auroc: with the object kept, the AUROC of the feature's activations on same-class backgrounds
            above those on other classes' backgrounds (0.5: the backgrounds make no difference).
        class_swap_auroc: the same AUROC against the single other class whose backgrounds it separates worst.
        population_swap_auroc: the swap AUROC over a random sample of the class's images instead of its examined
            (top-activating) ones: ``verdicts.population_images`` objects, each pasted onto same-class and other-class
            backgrounds (NaN when not measured). Like the truth line, it sees the cue against the spread of the class's
            whole population.
        population_clean_swap_auroc: the same against the backgrounds of classes with no spurious verdict only (NaN
            when no class is clean or it was not measured).
        random_background_drop: relative drop from the original with other-class backgrounds.
        same_background_drop: relative drop from the original with same-class backgrounds.
        object_reliance: relative drop when the object is replaced by the image's own background.
        object_ci_low: lower end of its bootstrap interval over the examined images.
        object_ci_high: upper end.
        mixed: spurious, yet the object matters as well (object reliance also reaches the threshold).
        decided_by: the signal that decided: "background" (backgrounds alone), "swap" (the object
            pasted onto backgrounds), "object" (removing the object raises the feature and the heatmap
            lies outside it), "heatmap", "ablation" (the legacy fill) or "population" (a random sample of the
            class's images overruled the examined ones, ``verdicts.population_threshold`` and
            ``population_flag_threshold``).
        explanation: one sentence saying why.
        n_swaps: donor backgrounds per image and kind in the swaps with the object kept (0 without swaps).
        n_backgrounds: ``[same-class, other-class]`` backgrounds behind ``background_reliance``.
    """

    class_index: int
    feature: int
    label: str
    importance: float
    heat_inside: float
    object_area: float
    density_ratio: float
    object_drop: float
    background_drop: float
    heat_says_spurious: bool
    ablation_says_spurious: bool
    confirmed: bool
    image_indices: list[int] = field(default_factory=list)
    concept_names: list[str] = field(default_factory=list)
    counterfactual: str = ""
    background_reliance: float = float("nan")
    reliance_ci_low: float = float("nan")
    reliance_ci_high: float = float("nan")
    background_test_dilation: int = 0
    ungrown_background_reliance: float = float("nan")
    ungrown_reliance_ci_low: float = float("nan")
    ungrown_reliance_ci_high: float = float("nan")
    swap_reliance: float = float("nan")
    swap_ci_low: float = float("nan")
    swap_ci_high: float = float("nan")
    class_swap_reliance: float = float("nan")
    class_swap_ci_low: float = float("nan")
    class_swap_ci_high: float = float("nan")
    class_median_swap_reliance: float = float("nan")
    class_median_swap_ci_low: float = float("nan")
    class_median_swap_ci_high: float = float("nan")
    swap_auroc: float = float("nan")
    class_swap_auroc: float = float("nan")
    population_swap_auroc: float = float("nan")
    population_clean_swap_auroc: float = float("nan")
    random_background_drop: float = float("nan")
    same_background_drop: float = float("nan")
    object_reliance: float = float("nan")
    object_ci_low: float = float("nan")
    object_ci_high: float = float("nan")
    mixed: bool = False
    decided_by: str = ""
    explanation: str = ""
    n_swaps: int = 0
    n_backgrounds: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class GapEstimate:
    """Spurious gap of one class: accuracy on top-k minus bottom-k spuriosity images.

    Attributes:
        class_index: the class.
        gap: top-k accuracy minus bottom-k accuracy (NaN if the class was skipped).
        ci_low, ci_high: bootstrap confidence interval of the gap.
        significant: the interval excludes zero.
        k: images in each end.
        top_accuracy, bottom_accuracy: accuracy on each end.
        n_images: images of the class in the split.
        top_indices, bottom_indices: dataset indices of the two ends (highest first / lowest first).
        note: why the class was skipped, or a flag such as "negative gap: possible label noise".
    """

    class_index: int
    gap: float
    ci_low: float
    ci_high: float
    significant: bool
    k: int
    top_accuracy: float
    bottom_accuracy: float
    n_images: int
    top_indices: list[int] = field(default_factory=list)
    bottom_indices: list[int] = field(default_factory=list)
    note: str = ""


@dataclass(frozen=True)
class TuningResult:
    """One head-tuning run (ours or a baseline) with before/after metrics on validation data.

    Attributes:
        method: "low_spuriosity", "random", "error", ...
        n_train_images: images the head was tuned on.
        epochs: epochs run before stopping.
        stopped_early: the target gap was reached.
        seconds: wall time of the tuning.
        before: metrics of the original head (accuracy, mean_gap, max_gap, worst_class_accuracy, decile_accuracy).
        after: the same metrics for the tuned head.
        gaps_after: per-class gap of the tuned head.
    """

    method: str
    n_train_images: int
    epochs: int
    stopped_early: bool
    seconds: float
    before: dict[str, Any]
    after: dict[str, Any]
    gaps_after: dict[int, float] = field(default_factory=dict)
