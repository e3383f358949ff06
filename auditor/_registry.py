"""A tiny name -> factory registry used for every pluggable backend."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, TypeVar

from auditor.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps backend names to factories.

    Args:
        kind: what the registry holds, used in error messages ("mask provider").
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``factory`` under ``name``.

        Raises:
            ValueError: if ``name`` is already registered.
        """

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = factory
            return factory

        return decorate

    def get(self, name: str) -> Callable[..., T]:
        """Return the factory registered as ``name``.

        Raises:
            ConfigError: naming the valid choices (and the closest one) when unknown.
        """
        try:
            return self._factories[name]
        except KeyError:
            hint = difflib.get_close_matches(name, self._factories, n=1)
            did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}; choose one of {sorted(self._factories)}.{did_you_mean}"
            ) from None

    def create(self, name: str, *args, **kwargs) -> T:
        """Build the backend ``name`` with the given arguments."""
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        """Sorted list of registered names."""
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories
