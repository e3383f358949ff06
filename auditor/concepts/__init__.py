"""CLIP concept encoders ("open_clip", "hf_clip") and the concept stage."""

from auditor.concepts.base import CONCEPT_ENCODERS, ConceptEncoder
from auditor.concepts.hf_clip import (
    HfClipEncoder,  # registers "hf_clip"; weights load lazily
)
from auditor.concepts.open_clip_backend import OpenClipEncoder  # registers "open_clip"

__all__ = ["CONCEPT_ENCODERS", "ConceptEncoder", "HfClipEncoder", "OpenClipEncoder"]
