"""Optional integrations with MLOps and data tools, each behind its own pip extra.

* :mod:`auditor.integrations.mlflow`: log an audit to an MLflow run (``pip install "auditor[mlflow]"``);
* :mod:`auditor.integrations.fiftyone`: load the audited images into a FiftyOne dataset
  (``pip install "auditor[fiftyone]"``).

Neither module is imported by the rest of the library until the integration is asked for;
a missing package raises :class:`~auditor.errors.MissingDependencyError` naming the pip
command (the CLI turns it into exit code 2).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from auditor.errors import MissingDependencyError

EXTRAS = {"mlflow": "mlflow", "fiftyone": "fiftyone"}
"""Integration -> the pip extra that installs it."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or say which extra to install.

    Args:
        module: the module to import, e.g. "mlflow".
        extra: auditor's pip extra that installs it, e.g. "mlflow".
        purpose: what needs it, for the message ("`auditor audit --mlflow`").

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: the module is not installed (the message has the pip command).

    Example:
        >>> require("json", "none", "a doctest").__name__
        'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(
            f"{purpose} needs the `{module}` package, which is not installed ({error}); "
            f'install it with: pip install "auditor[{extra}]"'
        ) from None
