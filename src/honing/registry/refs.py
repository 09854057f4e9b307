"""`registry:NAME@V` and `registry:NAME@alias`: a registered model wherever a model is named.

A reference resolves to the version's run directory (which loads the way any run directory does:
its model/, or its adapter/ over the base it names), after checking that the weights on disk are
still the ones registered.
"""

from __future__ import annotations

import re

from honing.errors import HoningError
from honing.registry.store import Registry, Version, default_path

PREFIX = "registry:"
NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
"""A model name: ASCII letters, digits, '.', '_' and '-', starting with a letter or digit."""
ALIAS = r"[A-Za-z0-9_-]+"
"""A version number or an alias: ASCII letters, digits, '_' and '-'."""
_REF = re.compile(rf"^registry:(?P<name>{NAME})(@(?P<which>{ALIAS}))?$")


def is_ref(text: object) -> bool:
    return isinstance(text, str) and text.startswith(PREFIX)


def parse_ref(text: str) -> tuple[str, str]:
    """(name, version number or alias); no @ means production."""
    match = _REF.match(text.strip())
    if not match:
        raise HoningError(f"{text!r} is not a registry reference; write registry:NAME@VERSION or registry:NAME@ALIAS "
                          "(e.g. registry:support-bot@3, registry:support-bot@production)")
    return match["name"], match["which"] or "production"


def parse_spec(text: str) -> tuple[str, str | None]:
    """NAME@V or NAME (the CLI's form, with or without the registry: prefix)."""
    text = text.removeprefix(PREFIX)
    name, _, which = text.partition("@")
    if not name:
        raise HoningError(f"{text!r}: give NAME@VERSION or NAME@ALIAS")
    return name, which or None


def resolve_ref(text: str, *, check_weights: bool = True) -> Version:
    """The version a reference names; a one-line error when the registry, name, version or alias is unknown,
    when the version was rejected, or when its weights are gone or changed since it was registered."""
    name, which = parse_ref(text)
    path = default_path()
    if not path.exists():
        raise HoningError(f"{text}: no registry at {path} (set HONING_REGISTRY, or register a run first)")
    with Registry(path, create=False) as registry:
        version = registry.get(name, which)
    if version.status == "rejected":
        raise HoningError(f"{text} is {name} v{version.version}, which was rejected; name another version")
    missing = version.missing()
    if missing:
        raise HoningError(f"{text} is {name} v{version.version}, but its {', '.join(missing)} no longer exist "
                          "(`honing registry show` and `honing lineage` still answer from the registry)")
    if check_weights:
        from honing.models.source import weight_files, weights_sha256

        actual = weights_sha256(weight_files(version.model_path))
        if actual != version.weights_sha256:
            raise HoningError(f"{text}: the weights in {version.model_path} changed since {name} v{version.version} "
                              f"was registered (sha256 {actual[:12]}… ≠ {version.weights_sha256[:12]}…)")
    return version


def pin(text: object) -> str | None:
    """NAME@NUMBER of the version a reference names now (an alias pinned to its version), or None when
    `text` is not a reference. Run records keep this, so an alias that moves later does not rewrite history."""
    if not is_ref(text):
        return None
    version = resolve_ref(str(text), check_weights=False)
    return f"{version.name}@{version.version}"


def pinned_in_registry(model_cfg: object) -> dict[str, str]:
    """{"registry": NAME@V} for a run record's model input when the model was named by a reference; {} otherwise."""
    pinned = pin(getattr(model_cfg, "path", None)) or pin(getattr(model_cfg, "adapter", None))
    return {"registry": pinned} if pinned else {}
