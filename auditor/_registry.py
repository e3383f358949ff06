"""A tiny name -> factory registry used for every pluggable backend."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from auditor.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps backend names to factories.

    Plugins outside the library (the demo's tiny models, a user's package) register through
    Python entry points: every entry point of ``entry_point_group`` is loaded the first time
    a name is not found, and registered under its entry-point name.

    Args:
        kind: what the registry holds, used in error messages ("mask provider").
        entry_point_group: entry-point group read on a miss (None: no plugins).
    """

    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._factories: dict[str, Callable[..., T]] = {}
        self._plugins_loaded = entry_point_group is None

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        from importlib.metadata import entry_points

        for point in entry_points(group=self.entry_point_group):
            if point.name not in self._factories:
                self._factories[point.name] = point.load()

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
        if name not in self._factories:
            self._load_plugins()
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

    def build(self, name: str, **available) -> T:
        """Build the backend ``name``, passing only the arguments its factory declares.

        The caller offers everything it has (``source``, ``config``, ``device``, ...); each
        backend names what it needs, and backends take no catch-all ``**kwargs``, so a
        misspelt option fails with its name instead of being ignored.
        """
        import inspect

        factory = self.get(name)
        parameters = inspect.signature(factory).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return factory(**available)
        return factory(**{k: v for k, v in available.items() if k in parameters})

    def names(self) -> list[str]:
        """Sorted list of registered names, plugins included."""
        self._load_plugins()
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        if name not in self._factories:
            self._load_plugins()
        return name in self._factories
