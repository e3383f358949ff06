"""Exception types raised by auditor.

Every error subclasses :class:`AuditorError` and also a builtin, so callers that
catch ``ValueError`` or ``ImportError`` keep working.
"""

from __future__ import annotations


class AuditorError(Exception):
    """Base class of every error auditor raises on purpose."""


class ConfigError(AuditorError, ValueError):
    """A configuration key or value is invalid."""


class InvalidInputError(AuditorError, ValueError):
    """The model, dataset or an array handed to auditor is unusable as given."""


class UnsupportedModelError(AuditorError, TypeError):
    """The model's structure is not one auditor can audit (e.g. no linear head)."""


class MissingDependencyError(AuditorError, ImportError):
    """An optional package needed by the requested backend is not installed."""


class MissingWeightsError(AuditorError, FileNotFoundError):
    """Model weights (CLIP, SAM, a classifier) are not on disk and cannot be downloaded."""


class NumericalError(AuditorError, FloatingPointError):
    """The model produced NaN or infinite values."""
