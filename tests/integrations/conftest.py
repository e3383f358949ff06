"""A small audit with every output (HTML, evidence images, tuned heads, a gate) for the integration tests."""

from __future__ import annotations

import pytest

import auditor
from tests.conftest import PlantedDataset, TwoChannelNet

FAST = {"progress": False, "gaps": {"min_k": 5, "n_bootstrap": 100}, "verdicts": {"n_images": 8},
        "tuning": {"epochs": 20, "baselines": []}, "report": {"n_grid_images": 4}, "gate": {"fail_on": ["max_gap>0.99"]}}


def planted(n: int = 40, seed: int = 0, n_other: int = 12) -> PlantedDataset:
    """Two classes: "object" (with the planted background texture) and "other" (the first ``n_other`` images)."""
    dataset = PlantedDataset(n=n, seed=seed)
    for i in range(n_other):
        dataset.labels[i] = 1
    return dataset


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """``(report, output folder)`` of an audit of the planted two-channel model, written with its report."""
    out = tmp_path_factory.mktemp("audit") / "out"
    model = TwoChannelNet()
    report = auditor.audit(model, planted(), planted(30, seed=1, n_other=0), class_names=["object", "other"],
                           config={**FAST, "report": {**FAST["report"], "output_dir": str(out)}})
    return report, out
