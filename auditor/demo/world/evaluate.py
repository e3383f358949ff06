"""Score audit findings against the world's ground truth (cue flags, groups)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from auditor.demo.world.generator import CUES, WorldSpec, WorldSplit


def group_ids(split: WorldSplit, spec: WorldSpec) -> np.ndarray:
    """Group of each image: ``2 * true class + flag``, where flag is the class's own cue
    (any cue for control classes). Returns int64 ``(N,)``."""
    cue_of = spec.cue_of_class
    flags = np.zeros(len(split), bool)
    for c in range(len(spec.classes)):
        members = split.true_labels == c
        flags[members] = split.cue_flag(cue_of[c])[members] if c in cue_of else split.cues[members].any(1)
    return 2 * split.true_labels + flags


def group_accuracies(predictions: np.ndarray, split: WorldSplit, spec: WorldSpec) -> dict[str, float]:
    """Average accuracy, worst-group accuracy and per-group accuracy of ``predictions``."""
    correct = predictions == split.labels
    groups = group_ids(split, spec)
    per_group = {}
    for g in np.unique(groups):
        name = f"{spec.class_names[g // 2]}|{'cue' if g % 2 else 'no cue'}"
        per_group[name] = float(correct[groups == g].mean())
    return {"accuracy": float(correct.mean()), "worst_group": min(per_group.values()), "groups": per_group}


def cue_aurocs(scores: np.ndarray, split: WorldSplit, spec: WorldSpec) -> dict[str, float]:
    """Per cue class: AUROC of spuriosity ``scores`` against the class's own cue flag (NaN if no score)."""
    out = {}
    for c, cue in spec.cue_of_class.items():
        members = split.true_labels == c
        values = scores[members]
        if not np.isfinite(values).all():
            out[spec.class_names[c]] = float("nan")
            continue
        out[spec.class_names[c]] = float(roc_auc_score(split.cue_flag(cue)[members], values))
    return out


__all__ = ["CUES", "cue_aurocs", "group_accuracies", "group_ids"]
