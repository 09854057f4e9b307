"""YAML files plus dotted `key=value` overrides, validated into a stage config with one-line errors."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from honing.config.base import StrictModel
from honing.errors import ConfigError


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=2e-4` -> (["train", "lr"], 2e-4). The value is read as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value (e.g. train.lr=2e-4)")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # not YAML (e.g. a prompt with quotes and colons): take it as the string it is
    if isinstance(value, str):
        value = _maybe_number(value)
    return key.split("."), value


def _maybe_number(value: str) -> Any:
    # YAML 1.1 reads "2e-4" as a string; people mean a number.
    try:
        return float(value) if any(c in value for c in ".eE") else int(value)
    except ValueError:
        return value


def read_yaml(path: Path) -> Any:
    """The YAML document in a config file (UTF-8, a byte-order mark allowed); ConfigError with file:line."""
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory; give a .yaml file")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    data = path.read_bytes()
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x}); save the config as UTF-8") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or err
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML (nested too deeply)") from None


def load_config(cls: type[StrictModel], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Build a stage config from an optional YAML file and `a.b=value` overrides (which win)."""
    data: dict[str, Any] = {}
    source = "command line"
    if path is not None:
        path = Path(path)
        source = str(path)
        loaded = read_yaml(path)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections, not {type(loaded).__name__}")
        data = loaded
    for text in overrides:
        keys, value = parse_override(text)
        field = cls.model_fields.get(keys[0])
        if len(keys) > 1 and keys[0] not in data and field is not None and isinstance(field.default, list):
            # `models.base.adapter=x` edits the default list, so the list must be there to edit.
            data[keys[0]] = [item.model_dump(exclude_unset=True) if isinstance(item, BaseModel) else item
                             for item in field.default]
        _set_path(data, keys, value, text)
    data = _merge_defaults(cls, data)
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, cls, source)) from None


def _set_path(data: dict[str, Any], keys: list[str], value: Any, text: str) -> None:
    """Set data[k1][k2]... = value. In a list, a key is an index (`models.1.adapter`) or the
    `name` of an item (`models.tuned.adapter`)."""
    node: Any = data
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        if isinstance(node, list):
            index = _list_index(node, key, text)
            if last:
                node[index] = value
                return
            if not isinstance(node[index], dict):
                node[index] = {}
            node = node[index]
            continue
        if last:
            node[key] = value
            return
        child = node.get(key)
        if not isinstance(child, (dict, list)):
            child = {}
            node[key] = child
        node = child


def _list_index(items: list[Any], key: str, text: str) -> int:
    if key.lstrip("-").isdigit():
        index = int(key)
        if -len(items) <= index < len(items):
            return index % len(items)
        if index == len(items):  # one past the end adds an item: models.1.name=tuned models.1.adapter=...
            items.append({})
            return index
        raise ConfigError(f"override {text!r}: index {index} is out of range (the list has {len(items)} items; "
                          f"index {len(items)} adds one)")
    names = [item.get("name") for item in items if isinstance(item, dict)]
    if key in names:
        return names.index(key)
    raise ConfigError(f"override {text!r}: no item named {key!r} in the list (names: {', '.join(map(str, names)) or 'none'})")


def _merge_defaults(cls: type[StrictModel], data: dict[str, Any]) -> dict[str, Any]:
    """Overlay user keys onto a stage's own section defaults (e.g. pretrain's data.packing=true),
    so that giving `data: {train: x}` keeps the stage's other data defaults."""
    defaults: dict[str, Any] = {}
    for name, field in cls.model_fields.items():
        if isinstance(field.default, BaseModel):
            defaults[name] = field.default.model_dump(exclude_unset=True)
    return _deep_merge(defaults, data)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def format_validation_error(err: ValidationError, cls: type[StrictModel], source: str) -> str:
    lines = []
    for item in err.errors():
        loc = [str(p) for p in item["loc"]]
        key = ".".join(loc)
        if item["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(cls, loc[:-1])) or "(none)"
            moved = " (the adapter to load is model.adapter now)" if loc[-1] == "adapter" and "model" in allowed else ""
            lines.append(f"{key}: unknown key; allowed here: {allowed}{moved}")
        else:
            given = item.get("input")
            shown = "" if isinstance(given, dict) else f" (got {given!r})"
            msg = item["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {msg}{shown}" if key else msg)
    head = f"invalid config from {source}: " if len(lines) == 1 else f"invalid config from {source}:\n  "
    return head + "\n  ".join(lines)


def _allowed_keys(cls: type[BaseModel], loc: list[str]) -> list[str]:
    model: Any = cls
    for part in loc:
        field = model.model_fields.get(part) if _is_model(model) else None
        if field is None:
            return []
        model = section_model(field.annotation)
    return list(model.model_fields) if _is_model(model) else []


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def section_model(annotation: Any) -> Any:
    """The BaseModel inside `X`, `X | None` or `Optional[X]`, else None."""
    if _is_model(annotation):
        return annotation
    for arg in typing.get_args(annotation):
        if _is_model(arg):
            return arg
    return None


def dump_config(config: BaseModel) -> str:
    """The resolved config as YAML (what the run directory keeps)."""
    return yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False)
