"""`honing <stage> --help`: every field of a config with its type, default and docstring."""

from __future__ import annotations

import typing
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from honing.config.loader import section_model


def describe_fields(cls: type[BaseModel], prefix: str = "", defaults: Any = None) -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, doc) for every leaf field, recursing into sections."""
    rows: list[tuple[str, str, str, str]] = []
    if defaults is None:
        try:
            defaults = cls()
        except ValidationError:
            defaults = None
    for name, field in cls.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        section = section_model(field.annotation)
        current = getattr(defaults, name, None) if defaults is not None else field.default
        if section is not None and (current is not None or field.annotation is section):
            rows.extend(describe_fields(section, key + ".", current))
            continue
        rows.append((key, _type_name(field.annotation), _default_text(current), (field.description or "").strip()))
    return rows


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(str(a) for a in typing.get_args(annotation))
    if section_model(annotation) is not None:
        return "section"
    text = str(annotation).replace("typing.", "")
    return getattr(annotation, "__name__", text) if origin is None else text


def _default_text(value: Any) -> str:
    from pydantic_core import PydanticUndefined

    if value is PydanticUndefined:  # a required field of a section that has no default instance
        return "required"
    if isinstance(value, BaseModel):
        return "{...}"
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)
