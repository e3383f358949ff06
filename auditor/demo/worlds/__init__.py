"""Proving-ground worlds: a family of generated datasets with known cues, masks and cue flags."""

from auditor.demo.worlds.catalog import (
    HELD_OUT_WORLDS,
    PROMOTED_WORLDS,
    RISK_WORLDS,
    WORLDS,
    get_world,
)
from auditor.demo.worlds.generator import (
    CUE_KINDS,
    ProvingClass,
    ProvingSplit,
    ProvingWorld,
    generate_split,
)

__all__ = ["CUE_KINDS", "HELD_OUT_WORLDS", "PROMOTED_WORLDS", "RISK_WORLDS", "WORLDS", "ProvingClass", "ProvingSplit", "ProvingWorld", "generate_split", "get_world"]
