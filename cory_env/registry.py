"""Named registries: the one helper behind tasks, rewards and learners.

A registry maps a name to a factory; registering a name twice is refused unless the caller
asks to replace it, so a plug-in cannot silently shadow a built-in. The modules that own
a registry (:mod:`cory_env.tasks.base`, :mod:`cory_env.rewards`, ``agents.rl.learner``)
wrap it in their ``register_*``, ``available_*`` and ``make_*`` functions, so every
registry refuses, replaces and lists in the same words.

    >>> shapes = Registry("shape")
    >>> shapes.register("unit", lambda: 1)
    >>> shapes.get("unit")()
    1
    >>> shapes.register("unit", lambda: 2)
    Traceback (most recent call last):
    ValueError: a shape named 'unit' is already registered (pass replace=True to replace it)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to factories of one ``kind`` (the word its errors use: "task", "reward", ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, factory: T, *, replace: bool = False) -> None:
        """Register ``factory`` as ``name``; a name already taken is refused unless
        ``replace`` is true (then ``factory`` takes the name's place)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._items and not replace:
            raise ValueError(
                f"a {self.kind} named {name!r} is already registered "
                "(pass replace=True to replace it)"
            )
        self._items[name] = factory

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a test's temporary registration); unknown names are refused."""
        self.get(name)
        del self._items[name]

    def get(self, name: str) -> T:
        """The factory registered as ``name``; an unknown name is refused, listing the known."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise ValueError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names()) or 'none'}"
            ) from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._items
        except TypeError:  # an unhashable name is not registered
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
