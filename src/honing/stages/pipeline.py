"""`honing pipeline PIPELINE.yaml`: run named steps (any honing command, or a registry gate) in order, skipping
the ones whose command, config and input files are unchanged since they last finished."""

from __future__ import annotations

from typing import Any

from honing.config.pipeline import PipelineConfig


def run(cfg: PipelineConfig) -> dict[str, Any]:
    """Plan, run or skip each step, and return what happened (a failed gate: result["gate"]["passed"] is false)."""
    from honing.registry.pipeline import run_pipeline

    return run_pipeline(cfg)
