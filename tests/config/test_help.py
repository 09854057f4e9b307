"""honing.config.help: describe_fields lists every leaf key of a config, dotted through sections, with
its type, default and docstring."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from honing.config.base import StrictModel
from honing.config.help import describe_fields


class Inner(StrictModel):
    rate: float = 0.5
    """How fast."""
    mode: Literal["a", "b"] = "a"
    """Which mode."""


class Needs(StrictModel):
    name: str
    """Required, so this section has no default instance."""


class Outer(StrictModel):
    steps: int = Field(3, ge=1)
    """Number of steps."""
    enabled: bool = True
    """On or off."""
    inner: Inner = Inner(rate=0.25)
    """A section."""
    optional: Inner | None = None
    """A section that is off by default."""
    label: str | None = None


def test_every_leaf_with_type_default_and_doc():
    rows = describe_fields(Outer)
    assert rows == [
        ("steps", "int", "3", "Number of steps."),
        ("enabled", "bool", "true", "On or off."),
        ("inner.rate", "float", "0.25", "How fast."),  # the outer default's value, not the section's own
        ("inner.mode", "a | b", "a", "Which mode."),
        ("optional", "section", "null", "A section that is off by default."),
        ("label", "str | None", "null", ""),
    ]


def test_prefix_and_a_config_without_defaults():
    rows = describe_fields(Needs, prefix="model.")
    assert rows == [("model.name", "str", "required", "Required, so this section has no default instance.")]


def test_a_real_stage_config_describes_nested_keys():
    from honing.config.stages import STAGES

    keys = {row[0]: row for row in describe_fields(STAGES["sft"].config)}
    assert "model.path" in keys and keys["model.path"][3]
    assert all(not key.endswith(".") for key in keys)
