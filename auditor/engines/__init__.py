"""Engines that run the feature extraction somewhere else than this process (Ray).

Only the extraction moves: every engine writes the same committed shards
(:func:`auditor.features.commit_shard`) into the split's cache folder, and everything
after extraction reads the cache as the local engine leaves it.
"""

from __future__ import annotations

from auditor.errors import MissingDependencyError

RAY_INSTALL = 'pip install "auditor[ray]"'
"""The command that installs the Ray engine's dependencies."""


def require_ray() -> None:
    """Check Ray Data can be imported.

    Raises:
        MissingDependencyError: Ray is not installed (the message gives the pip command).
    """
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:
        raise MissingDependencyError(
            f"`engine: ray` needs Ray Data, which is not installed here ({error}); install it with: {RAY_INSTALL} "
            "(or run with `engine: local`)"
        ) from None
