"""auditor: audit an image classifier for spurious correlations, and repair its head.

    >>> import auditor
    >>> report = auditor.audit(model, train_set, val_set)   # doctest: +SKIP

Importing the package is light: ``audit`` and ``AuditReport`` (which need torch) are
imported on first use, so ``auditor --help`` and ``auditor config`` start fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from auditor.config import AuditConfig, load_config
from auditor.errors import (
    AuditorError,
    ConfigError,
    InvalidInputError,
    MissingDependencyError,
    MissingWeightsError,
    NumericalError,
    UnsupportedModelError,
)

if TYPE_CHECKING:  # pragma: no cover
    from auditor.api import audit
    from auditor.report.audit_report import AuditReport

__version__ = "0.1.0"

_LAZY = {"audit": "auditor.api", "AuditReport": "auditor.report.audit_report"}

__all__ = [
    "AuditConfig",
    "AuditReport",
    "AuditorError",
    "ConfigError",
    "InvalidInputError",
    "MissingDependencyError",
    "MissingWeightsError",
    "NumericalError",
    "UnsupportedModelError",
    "audit",
    "load_config",
]


def __getattr__(name: str) -> Any:
    """Import ``audit`` / ``AuditReport`` (and torch with them) on first access."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'auditor' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
