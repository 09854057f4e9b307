"""Config of `honing lineage`: what to trace, where else to look for run records, and how to report."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from honing.config.base import StrictModel


class LineageConfig(StrictModel):
    """`honing lineage`: the graph from a model back to the raw bytes that made it, read from the run records."""

    target: str | None = None
    """What to trace: a model (a run's adapter/ or model/ directory), a run directory, a data file, or a registered
    version (registry:NAME@VERSION or registry:NAME@ALIAS)."""
    search: list[str] = []
    """More directories holding run directories (looked through 3 levels deep) that may have made the files, besides
    ./runs and the directory of every run reached."""
    verify: bool = False
    """Re-hash every file and model of the graph still on disk and flag each that changed or is missing; a failed
    check exits with code 3 after the report."""
    format: Literal["tree", "json", "dot"] = "tree"
    """tree (for the terminal), json (nodes and edges, for programs), or dot (Graphviz: dot -Tsvg)."""
    output: str | None = None
    """Write the report to this file (atomically) instead of stdout."""

    @model_validator(mode="after")
    def _check(self) -> LineageConfig:
        if not self.target:
            raise ValueError("target is required (e.g. honing lineage runs/sft-x/adapter, or target=registry:NAME@3)")
        return self
