"""Named registries: the one helper behind tasks, rewards and learners.

A registry maps a name to a factory; registering a name twice is refused unless the caller
asks to replace it, so a plug-in cannot silently shadow a built-in. The modules that own
a registry (:mod:`cory_env.tasks.base`, :mod:`cory_env.rewards`, ``agents.rl.learner``)
wrap it in their ``register_*``, ``available_*`` and ``make_*`` functions, so every
registry refuses, replaces and lists in the same words.

A spec holding ``:`` is an import path instead of a name (:func:`is_import_path`):
``package.module:attribute`` or ``path/to/file.py:attribute``, resolved by
:func:`load_object`; registered names never hold one.

    >>> shapes = Registry("shape")
    >>> shapes.register("unit", lambda: 1)
    >>> shapes.get("unit")()
    1
    >>> shapes.register("unit", lambda: 2)
    Traceback (most recent call last):
    ValueError: a shape named 'unit' is already registered (pass replace=True to replace it)
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

__all__ = ["Imported", "PluginError", "Registry", "is_import_path", "load_object"]

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
        if ":" in name:
            raise ValueError(
                f"a {self.kind} name must not contain ':' (it marks an import path, "
                f"module:function), got {name!r}"
            )
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


class PluginError(ValueError):
    """An import path (``module:attribute``) that does not resolve to a callable."""


def is_import_path(spec: object) -> bool:
    """Whether ``spec`` is an import path (a string holding ``:``) rather than a name."""
    return isinstance(spec, str) and ":" in spec


def load_object(spec: str, kind: str = "object") -> Any:
    """The callable that ``spec`` names: ``package.module:attribute`` (imported as Python
    imports it, with the current folder searched last, as ``python -m`` would search it
    first) or ``path/to/file.py:attribute`` (that file loaded as a module of its own; a
    relative path is taken from the current folder). ``attribute`` may be dotted
    (``Class.method``). Every failure is one :class:`PluginError` naming ``kind`` and
    ``spec``: no module or file, an import that raised, a missing attribute, not callable."""
    where, _, attribute = spec.rpartition(":")
    if not where or not attribute:
        raise PluginError(
            f"{kind} {spec!r}: an import path is module:function or path/to/file.py:function"
        )
    module = _load_module(where, kind, spec)
    obj: Any = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n, v in vars(module).items() if callable(v) and n[0] != "_")
            raise PluginError(
                f"{kind} {spec!r}: {where} has no attribute {attribute!r} "
                f"(its callables: {', '.join(names) or 'none'})"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise PluginError(f"{kind} {spec!r} is a {type(obj).__name__}, not a callable")
    return obj


class Imported:
    """A callable given by its import path: resolved (:func:`load_object`) when built, named
    by ``spec`` (its ``__name__``, so messages about it, such as the reward checks of
    :func:`cory_env.rewards.score`, name the path the user gave), pickled as ``spec``."""

    def __init__(self, spec: str, kind: str = "object") -> None:
        self.spec, self.kind, self.__name__ = spec, kind, spec
        self.fn = load_object(spec, kind)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __reduce__(self) -> tuple[type[Imported], tuple[str, str]]:
        return (type(self), (self.spec, self.kind))

    def __repr__(self) -> str:
        return f"Imported({self.spec!r}, {self.kind!r})"


def _load_module(where: str, kind: str, spec: str) -> Any:
    """The module named by the part of an import path before ``:``."""
    if where.endswith(".py") or "/" in where or os.sep in where:
        return _load_file(Path(where).expanduser(), kind, spec)
    try:
        return _import(where)
    except ModuleNotFoundError as error:
        if error.name is None or not (where == error.name or where.startswith(error.name + ".")):
            raise PluginError(
                f"{kind} {spec!r}: importing {where} raised ModuleNotFoundError: {error}"
            ) from error
        raise PluginError(
            f"{kind} {spec!r}: no module named {error.name!r} on the Python path or in the "
            f"current folder ({os.getcwd()}); install it, run from the folder that holds it, "
            "or give a file: path/to/file.py:function"
        ) from None
    except Exception as error:  # the module's own code failed
        raise PluginError(
            f"{kind} {spec!r}: importing {where} raised {type(error).__name__}: {error}"
        ) from error


def _import(name: str) -> Any:
    """``importlib.import_module(name)``, retried with the current folder on the path."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        cwd = os.getcwd()
        if cwd in sys.path or "" in sys.path:
            raise
        sys.path.append(cwd)  # a script's path starts at its own folder, not the current one
        importlib.invalidate_caches()
        return importlib.import_module(name)


def _load_file(path: Path, kind: str, spec: str) -> Any:
    """The module of the Python file ``path``, loaded once per resolved path."""
    if not path.is_file():
        raise PluginError(f"{kind} {spec!r}: no such file {path} (from {os.getcwd()})")
    resolved = path.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:10]
    name = f"_cory_plugin_{resolved.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise PluginError(f"{kind} {spec!r}: {path} is not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # pickling and dataclasses look the module up by name
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise PluginError(
            f"{kind} {spec!r}: running {path} raised {type(error).__name__}: {error}"
        ) from error
    return module
