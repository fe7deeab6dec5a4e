"""The manual's flag reference (``docs/_ext/cory_flags.py``) reads TrainConfig itself."""

from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "_ext"))
import cory_flags  # noqa: E402

from agents.run import config as run_config  # noqa: E402


@dataclasses.dataclass
class Small:
    alpha: int = 1
    """First line.

    Second paragraph."""
    beta: tuple[str, ...] = ("x",)
    gamma: list[int] = dataclasses.field(default_factory=lambda: [3])
    """A factory's default."""


def test_field_docs_are_the_attribute_docstrings():
    assert cory_flags.field_docs(Small) == {
        "alpha": "First line.\n\nSecond paragraph.",
        "gamma": "A factory's default.",
    }


def test_defaults_are_shown_as_typed_and_factories_called():
    fields = {f.name: f for f in dataclasses.fields(Small)}
    assert cory_flags.default_text(fields["alpha"]) == "``1``"
    assert cory_flags.default_text(fields["gamma"]) == "``[3]``"


def test_without_flag_groups_every_field_is_one_group_and_leftovers_are_listed_last():
    names = ["alpha", "beta", "gamma"]
    assert cory_flags.flag_groups(types.SimpleNamespace(), names) == {"Flags": tuple(names)}
    grouped = types.SimpleNamespace(FLAG_GROUPS={"first": ("beta",)})
    assert cory_flags.flag_groups(grouped, names) == {
        "first": ("beta",),
        "Other flags": ("alpha", "gamma"),
    }


def test_lines_name_each_flag_with_its_default_and_indented_doc():
    fields = {f.name: f for f in dataclasses.fields(Small)}
    lines = cory_flags.flag_lines(fields, cory_flags.field_docs(Small), {"group": ("alpha",)}, {})
    assert lines == [
        ".. rubric:: Group",
        "",
        "``--alpha`` (default ``1``)",
        "   First line.",
        "",
        "   Second paragraph.",
        "",
    ]
    with pytest.raises(ValueError, match="not_a_field"):
        cory_flags.flag_lines(fields, {}, {"group": ("not_a_field",)}, {})


def test_train_config_every_field_documented_and_aliases_read():
    docs = cory_flags.field_docs(run_config.TrainConfig)
    names = [f.name for f in dataclasses.fields(run_config.TrainConfig)]
    assert [n for n in names if n not in docs] == []
    assert "--rloo-k" in cory_flags.aliases(run_config.TrainConfig)["group_size"]
