"""Config of `honing registry`: where the database is, how promotion is gated, and the MLflow mirror."""

from __future__ import annotations

from pydantic import Field, model_validator

from honing.config.base import StrictModel
from honing.config.evaluation import GENERAL_SUITE, EvalTaskConfig


def default_gate_tasks() -> list[EvalTaskConfig]:
    """The general-capability suite (GENERAL_SUITE), as regression tasks."""
    return [task.model_copy() for task in GENERAL_SUITE]


class RegistryGateConfig(StrictModel):
    """What `promote` (and a pipeline's gate step) checks before production moves: an eval with the gate on,
    the candidate against production (before the first promotion: against the model it was trained from)."""

    tasks: list[EvalTaskConfig] = Field(default_factory=default_gate_tasks)
    """The gate's eval tasks (default: the general-capability suite, as regression tasks). Add your own held-out
    task with `min:` thresholds to gate on quality, not only on regressions."""
    regression_tolerance: float = Field(0.02, ge=0.0)
    """Largest drop of a regression task's primary score (a share: 0.02 = 2 points) that still passes."""
    batch_size: int = Field(8, ge=1)
    """Prompts (or sequences) evaluated together."""
    cache: bool = True
    """Reuse answers computed before for the same weights and examples (production's are usually cached)."""

    @model_validator(mode="after")
    def _checks_something(self) -> RegistryGateConfig:
        if not any(task.regression or task.min for task in self.tasks):
            raise ValueError("gate.tasks checks nothing: give at least one task with regression: true or a min: "
                             "threshold (a gate that checks nothing would pass everything)")
        return self


class RegistryConfig(StrictModel):
    """`honing registry <verb>`: versions, aliases and their history in one SQLite file."""

    path: str | None = None
    """The database file; default HONING_REGISTRY, else .honing/registry.sqlite in the working directory."""
    gate: RegistryGateConfig = Field(default_factory=RegistryGateConfig)
    """How `promote` gates."""
    mlflow_uri: str | None = None
    """Mirror registered versions, their runs (params, metrics, artifacts) and alias moves into MLflow's tracking
    store and Model Registry at this URI (e.g. sqlite:///mlflow.db or a server URL); needs the mlflow extra."""
