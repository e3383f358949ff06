"""auditor: audit an image classifier for spurious correlations, and repair its head.

    >>> import auditor
    >>> report = auditor.audit(model, train_set, val_set)   # doctest: +SKIP
"""

from auditor.api import audit
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
from auditor.report.audit_report import AuditReport

__version__ = "0.1.0"

__all__ = [
    "audit",
    "AuditConfig",
    "AuditReport",
    "load_config",
    "AuditorError",
    "ConfigError",
    "InvalidInputError",
    "MissingDependencyError",
    "MissingWeightsError",
    "NumericalError",
    "UnsupportedModelError",
]
