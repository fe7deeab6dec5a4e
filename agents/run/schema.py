"""A flat settings dataclass read as a schema: its fields' docstrings (the CLI's help and the
flags reference) and settings files (YAML or JSON) checked against its field names and types.

A settings file is one mapping, ``field: value``; a key that is not a field, or a value of the
wrong type, is refused with one line naming the file and the key.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

__all__ = ["field_docs", "read_settings"]


def field_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` of a dataclass and its bases: the string literal under each
    annotated field, dedented, its paragraphs kept."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0]
        if not isinstance(body, ast.ClassDef):
            continue
        for node, after in zip(body.body, body.body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def read_settings(
    path: str | Path, cls: type, ignore: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The settings in ``path`` (``.yaml``/``.yml`` or ``.json``) as ``{field: value}`` of the
    dataclass ``cls``, each value checked against its field's type (lists of a tuple field
    become tuples, integers of a float field floats); keys in ``ignore`` are dropped.
    Raises ``ValueError`` naming the file and the key."""
    path = Path(path)
    data = _load(path)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    settings: dict[str, Any] = {}
    for key, value in data.items():
        if key in ignore:
            continue
        if key not in names:
            raise ValueError(
                f"{path}: unknown key {key!r} (not a setting; the settings are the "
                "flags' names with underscores)"
            )
        ok, settings[key] = _conform(value, hints[key])
        if not ok:
            raise ValueError(f"{path}: {key} must be {_describe(hints[key])}, got {value!r}")
    return settings


def _load(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"{path}: cannot read the settings file ({err.strerror})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        mark = getattr(err, "problem_mark", None)
        number = mark.line + 1 if mark is not None else getattr(err, "lineno", None)
        line = f" (line {number})" if number else ""
        raise ValueError(
            f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}{line}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: a settings file holds one mapping of setting: value, "
            f"got {type(data).__name__}"
        )
    return data


def _conform(value: Any, hint: Any) -> tuple[bool, Any]:
    """``(fits, value as the field holds it)`` for a value read from a file."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return _conform(value, args[0])
    if origin in (Union, types.UnionType):
        for arg in args:
            ok, out = _conform(value, arg)
            if ok:
                return ok, out
        return False, value
    if origin is Literal:
        return value in args and not isinstance(value, bool), value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, value
        item = args[0]
        conformed = [_conform(v, item) for v in value]
        items = [v for _, v in conformed]
        return all(ok for ok, _ in conformed), tuple(items) if origin is tuple else items
    return _conform_scalar(value, hint)


def _conform_scalar(value: Any, hint: Any) -> tuple[bool, Any]:
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, str):  # YAML reads 3e-4 (no dot) as text
            try:
                return True, float(value)
            except ValueError:
                return False, value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False, value
        return True, float(value)
    if hint is str:
        return isinstance(value, str), value
    return False, value


def _describe(hint: Any) -> str:
    """A field's type in words: ``an integer or None``, ``one of 'kl', 'abs'`` ..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return _describe(args[0])
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple):
        return f"a list of ({_describe(args[0])})"
    names = {
        type(None): "None",
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "text",
    }
    return names.get(hint, str(hint))
