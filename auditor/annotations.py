"""Human core/spurious annotations per (class, feature) and their agreement with the audit's verdicts.

The CSV has one row per (class, feature) label, or one row per annotator vote (several
rows for a pair are combined by majority vote). Recognised columns:

* class: ``class``, ``class_index``, ``class_name`` or ``Input.class_index``; an index,
  or a name looked up in the audit's class names;
* feature: ``feature``, ``feature_index`` or ``Input.feature_index``;
* label: ``label``, ``annotation`` or ``Answer.main``; "core" (also "main", "main_object",
  "object") or "spurious" (also "background", "separate_object", "context").

The Salient ImageNet MTurk file (``discover_spurious_features.csv``: ``Input.class_index``,
``Input.feature_index``, ``Answer.main`` with five worker votes per pair) reads as is;
its feature indices refer to the robust ResNet-50 it was made for, so agreement is only
meaningful when auditing that model.

Human labels can also be used as input (``report.annotations_as_labels``, or
``audit(..., annotations=path)``): a labelled (class, feature) then takes the human label for
the rankings, gaps and tuning, while the automated verdict is still computed and kept beside
it in the ``human_agreement`` section with the agreement. Ties of the vote go to
``report.annotation_ties`` ("spurious" by default, or "core").
"""

from __future__ import annotations

import csv
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor.errors import InvalidInputError
from auditor.labeling import spurious_by_class

logger = logging.getLogger(__name__)

CLASS_COLUMNS = ("class", "class_index", "class_name", "Input.class_index")
FEATURE_COLUMNS = ("feature", "feature_index", "Input.feature_index")
LABEL_COLUMNS = ("label", "annotation", "Answer.main")
CORE_WORDS = {"core", "main", "main_object", "object", "causal"}
SPURIOUS_WORDS = {"spurious", "background", "separate_object", "context", "non-causal"}
LABELS = ("core", "spurious")
TIES = LABELS
"""Values of ``report.annotation_ties``: the label a tied vote takes."""
EVIDENCE_FIELDS = (
    "importance", "heat_inside", "object_area", "density_ratio", "object_drop", "background_drop",
    "heat_says_spurious", "ablation_says_spurious", "confirmed", "concept_names",
    "background_reliance", "reliance_ci_low", "reliance_ci_high", "swap_reliance", "object_reliance",
    "mixed", "decided_by", "explanation",
)


@dataclass(frozen=True)
class HumanLabel:
    """The human verdict on one (class, feature).

    Attributes:
        class_index: the class.
        feature: the feature index.
        label: "core" or "spurious" (majority of the votes; a tie takes the ``ties`` label of
            :func:`read_annotations`, "spurious" by default).
        n_votes: rows (annotators) behind the label.
        n_spurious: votes for "spurious".
    """

    class_index: int
    feature: int
    label: str
    n_votes: int
    n_spurious: int


def _pick(columns: Sequence[str], options: Sequence[str], what: str, path: Path) -> str:
    for option in options:
        if option in columns:
            return option
    raise InvalidInputError(f"annotations CSV {str(path)!r} has no {what} column; expected one of {list(options)}, found {list(columns)}")


def read_annotations(path: str | Path, class_names: Sequence[str] | None = None, ties: str = "spurious") -> list[HumanLabel]:
    """Read human core/spurious labels from a CSV.

    Args:
        path: the CSV file.
        class_names: the audit's class names, to resolve class names in the CSV to indices.
        ties: the label of a pair whose votes are tied ("spurious" or "core").

    Returns:
        One :class:`HumanLabel` per (class, feature), sorted by class then feature.

    Raises:
        InvalidInputError: missing file or column, an unknown label word, a class name not
            in ``class_names``, a non-integer feature index.

    Example:
        >>> read_annotations("human.csv", ["cat", "dog"])  # doctest: +SKIP
        [HumanLabel(class_index=0, feature=12, label='spurious', n_votes=1, n_spurious=1)]
    """
    if ties not in TIES:
        raise InvalidInputError(f"ties must be one of {list(TIES)}; got {ties!r}")
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"annotations CSV {str(path)!r} does not exist")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise InvalidInputError(f"annotations CSV {str(path)!r} has no rows")
    columns = list(rows[0])
    class_col = _pick(columns, CLASS_COLUMNS, "class", path)
    feature_col = _pick(columns, FEATURE_COLUMNS, "feature", path)
    label_col = _pick(columns, LABEL_COLUMNS, "label", path)
    lookup = {name: i for i, name in enumerate(class_names or [])}
    votes: dict[tuple[int, int], Counter] = defaultdict(Counter)
    for line, row in enumerate(rows, start=2):
        raw_class, raw_feature = str(row[class_col]).strip(), str(row[feature_col]).strip()
        word = str(row[label_col]).strip().lower().replace(" ", "_")
        if raw_class.lstrip("-").isdigit():
            class_index = int(raw_class)
        elif raw_class in lookup:
            class_index = lookup[raw_class]
        else:
            raise InvalidInputError(
                f"annotations CSV {str(path)!r} line {line}: class {raw_class!r} is neither an index nor one of the "
                f"audit's class names {list(lookup)[:10]}"
            )
        if not raw_feature.lstrip("-").isdigit():
            raise InvalidInputError(f"annotations CSV {str(path)!r} line {line}: feature {raw_feature!r} is not an integer index")
        if word in CORE_WORDS:
            label = "core"
        elif word in SPURIOUS_WORDS:
            label = "spurious"
        else:
            raise InvalidInputError(
                f"annotations CSV {str(path)!r} line {line}: label {row[label_col]!r} is not one of "
                f"{sorted(CORE_WORDS)} (core) or {sorted(SPURIOUS_WORDS)} (spurious)"
            )
        votes[(class_index, int(raw_feature))][label] += 1
    labels = []
    for (class_index, feature), counter in sorted(votes.items()):
        n = sum(counter.values())
        spurious = counter["spurious"]
        label = ties if 2 * spurious == n else ("spurious" if 2 * spurious > n else "core")
        labels.append(HumanLabel(class_index, feature, label, n, spurious))
    logger.info("read %d human labels (%d rows) from %s", len(labels), len(rows), path)
    return labels


def cohen_kappa(confusion: Sequence[Sequence[int]]) -> float:
    """Cohen's kappa of a square confusion matrix (rows: rater A, columns: rater B).

    Returns:
        kappa in [-1, 1]; 1.0 when both raters agree on everything with a single label,
        NaN for an empty matrix.

    Example:
        >>> round(cohen_kappa([[20, 5], [10, 15]]), 3)
        0.4
    """
    total = sum(sum(row) for row in confusion)
    if total == 0:
        return math.nan
    size = len(confusion)
    observed = sum(confusion[i][i] for i in range(size)) / total
    rows = [sum(confusion[i]) / total for i in range(size)]
    cols = [sum(confusion[i][j] for i in range(size)) / total for j in range(size)]
    expected = sum(r * c for r, c in zip(rows, cols))
    if expected >= 1.0:
        return 1.0 if observed >= 1.0 else math.nan
    return (observed - expected) / (1 - expected)


def _verdict_dicts(results_or_verdicts: Any) -> tuple[list[dict], list[str]]:
    if isinstance(results_or_verdicts, dict):
        names = [str(n) for n in results_or_verdicts.get("class_names", [])]
        verdicts = [v for entry in results_or_verdicts.get("classes", []) for v in entry.get("verdicts", [])]
        return verdicts, names
    verdicts = []
    for v in results_or_verdicts:
        verdicts.append(v if isinstance(v, dict) else {f: getattr(v, f) for f in v.__dataclass_fields__})
    return verdicts, []


def agreement(
    human: Iterable[HumanLabel],
    verdicts: Any,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Compare human labels with the automated verdicts on the (class, feature) pairs both cover.

    Args:
        human: labels from :func:`read_annotations`.
        verdicts: a results dict (``AuditReport.to_dict()``), or a list of
            :class:`~auditor.results.FeatureVerdict` (or their dicts).
        class_names: names for the disagreement list (read from a results dict when absent).

    Returns:
        A JSON-ready dict: ``labels`` ["core", "spurious"]; ``confusion`` 2x2 counts (rows:
        human, columns: automated); ``n_compared``, ``n_agree``, ``accuracy``, ``kappa``;
        ``n_human_only`` / ``n_auto_only`` (pairs one side lacks); ``disagreements``: one
        record per disagreeing pair with both labels, the votes and the verdict's evidence.

    Example:
        >>> h = [HumanLabel(0, 3, "spurious", 1, 1)]
        >>> agreement(h, [{"class_index": 0, "feature": 3, "label": "spurious"}])["kappa"]
        1.0
    """
    verdict_list, names_from_results = _verdict_dicts(verdicts)
    names = list(class_names or names_from_results)
    auto = {(int(v["class_index"]), int(v["feature"])): v for v in verdict_list}
    humans = {(h.class_index, h.feature): h for h in human}
    shared = sorted(set(auto) & set(humans))
    confusion = [[0, 0], [0, 0]]
    disagreements = []
    for key in shared:
        h, v = humans[key], auto[key]
        if v.get("label") not in LABELS:
            continue
        confusion[LABELS.index(h.label)][LABELS.index(v["label"])] += 1
        if h.label != v["label"]:
            disagreements.append({
                "class_index": key[0],
                "class_name": names[key[0]] if 0 <= key[0] < len(names) else str(key[0]),
                "feature": key[1],
                "human": h.label,
                "automated": v["label"],
                "n_votes": h.n_votes,
                "n_spurious_votes": h.n_spurious,
                "evidence": {f: v.get(f) for f in EVIDENCE_FIELDS if f in v},
                "image_indices": list(v.get("image_indices", []))[:8],
            })
    n_compared = sum(sum(row) for row in confusion)
    n_agree = confusion[0][0] + confusion[1][1]
    if n_compared == 0:
        logger.warning("no (class, feature) pair is both annotated and audited; check the class and feature indices")
    return {
        "labels": list(LABELS),
        "confusion": confusion,
        "n_compared": n_compared,
        "n_agree": n_agree,
        "accuracy": n_agree / n_compared if n_compared else None,
        "kappa": None if n_compared == 0 or math.isnan(cohen_kappa(confusion)) else cohen_kappa(confusion),
        "n_human_only": len(set(humans) - set(auto)),
        "n_auto_only": len(set(auto) - set(humans)),
        "disagreements": disagreements,
    }


@dataclass(frozen=True)
class AnnotationResult:
    """Output of :func:`run_annotations`.

    Attributes:
        section: the JSON-ready ``human_agreement`` section.
        verdicts: the verdicts the rest of the audit uses: human labels on annotated pairs when
            ``use_as_labels``, else the automated verdicts unchanged.
        spurious: class -> spurious features for the rankings (``spurious_by_class(verdicts)``,
            plus human-spurious pairs outside the audited features when ``use_as_labels``).
    """

    section: dict[str, Any]
    verdicts: list[Any]
    spurious: dict[int, list[int]]


def apply_human_labels(
    human: Sequence[HumanLabel],
    verdicts: Sequence[Any],
    n_classes: int,
    n_features: int | None = None,
) -> tuple[list[Any], dict[int, list[int]], list[dict[str, Any]]]:
    """Let human labels decide the annotated (class, feature) pairs.

    Args:
        human: labels from :func:`read_annotations`.
        verdicts: the automated :class:`~auditor.results.FeatureVerdict` list.
        n_classes: classes of the audited head (labels of other classes are errors).
        n_features: columns of the activations (feature indices beyond are errors); None: unchecked.

    Returns:
        ``(verdicts, spurious, pairs)``: the verdicts with the human label on annotated pairs
        (evidence kept, ``decided_by`` "human" and an ``explanation`` naming the automated verdict); class -> spurious features for the rankings, human-spurious pairs
        outside the audited features included and human-core ones removed; one record per
        human label ``{"class_index", "feature", "human", "automated" (None when the audit did
        not examine the pair), "n_votes", "n_spurious_votes"}``.

    Raises:
        InvalidInputError: a label names a class or feature the model does not have.

    Example:
        >>> from auditor.results import FeatureVerdict
        >>> auto = [FeatureVerdict(0, 3, "core", 1., .1, .1, 1., 0., .5, True, True, True)]
        >>> used, spurious, pairs = apply_human_labels([HumanLabel(0, 3, "spurious", 5, 4)], auto, 2)
        >>> used[0].label, spurious, pairs[0]["automated"]
        ('spurious', {0: [3]}, 'core')
    """
    import dataclasses

    by_pair = {(h.class_index, h.feature): h for h in human}
    for (c, f) in by_pair:
        if not 0 <= c < n_classes:
            raise InvalidInputError(
                f"a human label names class {c}, but the model has {n_classes} classes (0..{n_classes - 1}); "
                "check the CSV's class column"
            )
        if n_features is not None and not 0 <= f < n_features:
            raise InvalidInputError(
                f"a human label names feature {f} of class {c}, but the model's features are 0..{n_features - 1}; "
                "the CSV must index the audited model's features"
            )
    automated = {(v.class_index, v.feature): v.label for v in verdicts}

    def decided_by_human(v):
        h = by_pair[(v.class_index, v.feature)]
        changes: dict[str, Any] = {"label": h.label}
        names = {f.name for f in dataclasses.fields(v)}
        if "decided_by" in names:
            changes["decided_by"] = "human"
        if "explanation" in names:
            changes["explanation"] = (f"human label: {h.label} ({h.n_spurious} of {h.n_votes} votes spurious); "
                                      f"the automated verdict was {v.label}")
        return dataclasses.replace(v, **changes)

    used = [decided_by_human(v) if (v.class_index, v.feature) in by_pair else v for v in verdicts]
    spurious = {c: list(fs) for c, fs in spurious_by_class(used).items()}
    for (c, f), h in sorted(by_pair.items()):
        if (c, f) in automated:
            continue
        if h.label == "spurious":
            spurious.setdefault(c, []).append(f)
    pairs = [{"class_index": c, "feature": f, "human": h.label, "automated": automated.get((c, f)),
              "n_votes": h.n_votes, "n_spurious_votes": h.n_spurious} for (c, f), h in sorted(by_pair.items())]
    return used, spurious, pairs


def run_annotations(
    path: str | Path,
    verdicts: Sequence[Any],
    class_names: Sequence[str],
    *,
    ties: str = "spurious",
    use_as_labels: bool = False,
    n_features: int | None = None,
) -> AnnotationResult:
    """The human-annotation stage: agreement with the automated verdicts, and optionally human labels as input.

    The agreement is always measured against the automated verdicts (computed as usual).

    Args:
        path: CSV of human core/spurious labels (see :func:`read_annotations`).
        verdicts: the audit's automated :class:`~auditor.results.FeatureVerdict` list.
        class_names: the audit's class names.
        ties: label of a tied vote ("spurious" or "core").
        use_as_labels: annotated pairs take the human label for the rankings, gaps and tuning.
        n_features: columns of the activations, to check the CSV's feature indices.

    Returns:
        An :class:`AnnotationResult`; its section is the :func:`agreement` dict plus
        ``enabled: True``, ``source`` (the CSV path), ``ties``, ``used_for_rankings`` and, when
        used, ``pairs`` (every human label beside the automated one, see :func:`apply_human_labels`).

    Raises:
        InvalidInputError: see :func:`read_annotations` and :func:`apply_human_labels`.
    """
    human = read_annotations(path, class_names, ties=ties)
    result = agreement(human, verdicts, class_names)
    section = {"enabled": True, "source": str(path), "ties": ties, "used_for_rankings": bool(use_as_labels), **result}
    if not use_as_labels:
        return AnnotationResult(section=section, verdicts=list(verdicts), spurious=spurious_by_class(verdicts))
    used, spurious, pairs = apply_human_labels(human, verdicts, len(class_names), n_features)
    changed = sum(1 for p in pairs if p["automated"] is not None and p["automated"] != p["human"])
    added = sum(1 for p in pairs if p["automated"] is None and p["human"] == "spurious")
    logger.info("human labels decide %d pairs (%d differ from the automated verdict, %d spurious pairs outside the "
                "audited features)", len(pairs), changed, added)
    section.update(pairs=pairs, n_changed=changed, n_human_only_spurious=added)
    return AnnotationResult(section=section, verdicts=used, spurious=spurious)
