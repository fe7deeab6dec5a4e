"""Sphinx directive ``cory-flags``: every ``TrainConfig`` field as a command-line flag.

The flags are grouped by ``agents.run.config.FLAG_GROUPS`` (group title -> field names) and
each shows its default and its attribute docstring, read from the source with ``ast``, so the
manual's flag reference is the dataclass itself and cannot drift from it. Without
``FLAG_GROUPS`` every field is listed in one group. Use it from MyST inside ``{eval-rst}``::

    .. cory-flags::
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import typing

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from agents.run.schema import field_docs

CONFIG_MODULE = "agents.run.config"
CONFIG_CLASS = "TrainConfig"


def default_text(field: dataclasses.Field) -> str:
    """The field's default as the reader would type it (a factory is called)."""
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    return f"``{value!r}``"


def aliases(cls: type) -> dict[str, tuple[str, ...]]:
    """Each field's other flag names (tyro's ``tyro.conf.arg(aliases=...)`` in its annotation)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    found: dict[str, tuple[str, ...]] = {}
    for name, hint in hints.items():
        for meta in getattr(hint, "__metadata__", ()):
            if getattr(meta, "aliases", None):
                found[name] = tuple(meta.aliases)
    return found


def flag_groups(module, names: list[str]) -> dict[str, tuple[str, ...]]:
    """``FLAG_GROUPS`` with any field it leaves out listed last, or one group of every field."""
    groups = dict(getattr(module, "FLAG_GROUPS", None) or {"Flags": tuple(names)})
    listed = {name for fields in groups.values() for name in fields}
    rest = tuple(name for name in names if name not in listed)
    if rest:
        groups["Other flags"] = rest
    return groups


def flag_lines(
    fields: dict[str, dataclasses.Field],
    docs: dict[str, str],
    groups: dict[str, tuple[str, ...]],
    other_names: dict[str, tuple[str, ...]],
) -> list[str]:
    """rST: a rubric per group, a definition list item per flag."""
    lines: list[str] = []
    for title, names in groups.items():
        lines += [f".. rubric:: {title[:1].upper()}{title[1:]}", ""]
        for name in names:
            if name not in fields:
                raise ValueError(f"FLAG_GROUPS names {name!r}, which is not a TrainConfig field")
            flag = "--" + name.replace("_", "-")
            also = "".join(f", ``{a}``" for a in other_names.get(name, ()))
            lines.append(f"``{flag}``{also} (default {default_text(fields[name])})")
            doc = docs.get(name, "(no docstring)")
            lines += ["   " + line if line else "" for line in doc.splitlines()]
            lines.append("")
    return lines


class CoryFlags(SphinxDirective):
    """``.. cory-flags::``: the run's flags, grouped, with defaults and meanings."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        module = importlib.import_module(CONFIG_MODULE)
        cls = getattr(module, CONFIG_CLASS)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        groups = flag_groups(module, list(fields))
        source = inspect.getsourcefile(module)
        if source:
            self.env.note_dependency(source)  # rebuild the page when the config changes
        container = nodes.container(classes=["cory-flags"])
        content = StringList(
            flag_lines(fields, field_docs(cls), groups, aliases(cls)), source="cory-flags"
        )
        self.state.nested_parse(content, self.content_offset, container)
        return [container]


def setup(app: Sphinx) -> dict[str, object]:
    app.add_directive("cory-flags", CoryFlags)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
