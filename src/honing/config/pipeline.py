"""Config of `honing pipeline`: named steps, each a honing command (or a registry gate), run in order, where a
later step names an earlier one's outputs as `${steps.<step>.<output>}`."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from honing.config.base import StrictModel
from honing.config.registry import RegistryConfig, RegistryGateConfig


class PipelineGateConfig(RegistryGateConfig):
    """A gate step: evaluate `candidate` against the registry's production version of `name`, then register and
    promote it (pass) or register it as rejected with the report (fail: the pipeline stops with exit code 3).
    The gate's other keys (tasks, regression_tolerance, batch_size, cache) default to the pipeline's registry.gate."""

    candidate: str = Field(min_length=1)
    """The run to gate: a reference to an earlier training step, e.g. ${steps.sft.run_dir}."""
    name: str = Field(min_length=1)
    """The registry's model name the candidate becomes a version of."""
    reason: str | None = None
    """Recorded in the registry's history with the promotion or the rejection."""


class PipelineStepConfig(StrictModel):
    """One step: a command with its config file and overrides, or a gate."""

    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
    """The step's name (letters, digits, '_' and '-'): later steps refer to it (${steps.<name>.run_dir}) and --from STEP starts at it."""
    command: str | None = None
    """The honing command it runs, as typed after `honing`: sft, dpo, eval, redteam, constitute, data clean, ..."""
    gate: PipelineGateConfig | None = None
    """Instead of a command: a registry gate (candidate, name, and the gate's eval settings)."""
    config: str | None = None
    """The command's YAML config file (relative to the working directory, like every honing path)."""
    overrides: dict[str, Any] | list[str] = {}
    """key=value overrides of the command's config, a mapping ({train.max_steps: 2}) or a list
    ([train.max_steps=2]); values may hold ${steps.<step>.<output>} references to earlier steps."""

    @model_validator(mode="after")
    def _one_kind(self) -> PipelineStepConfig:
        if (self.command is None) == (self.gate is None):
            raise ValueError(f"step {self.name}: give either command: (a honing command) or gate: (a registry gate)")
        if self.gate is not None and (self.config or self.overrides):
            raise ValueError(f"step {self.name}: a gate step takes its settings under gate:, not config/overrides")
        return self


class PipelineOutputConfig(StrictModel):
    """Where the pipeline keeps its state and its steps' run directories."""

    dir: str | None = None
    """The pipeline's directory (state.json, one run directory per step); default runs/pipeline-<name>."""


class PipelineConfig(StrictModel):
    """`honing pipeline PIPELINE.yaml`: run named steps in order; a rerun skips steps whose command, resolved config
    and input files are unchanged (--from STEP forces that step and every later one)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    """The pipeline's name (its default directory is runs/pipeline-<name>)."""
    steps: list[PipelineStepConfig] = Field(min_length=1)
    """The steps, in the order they run (override one as steps.<step name>.overrides.<key>=value)."""
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    """The registry gate steps write to (path, default gate settings, mlflow_uri); a path given here is also
    HONING_REGISTRY while the pipeline runs, so the steps' registry: references read the same registry."""
    output: PipelineOutputConfig = PipelineOutputConfig()
    from_step: str | None = None
    """Force this step and every later one to run even when unchanged (the --from option)."""

    @model_validator(mode="after")
    def _names(self) -> PipelineConfig:
        names = [step.name for step in self.steps]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"step names must be unique; {', '.join(twice)} appears more than once")
        if self.from_step is not None and self.from_step not in names:
            raise ValueError(f"--from {self.from_step}: no such step (steps: {', '.join(names)})")
        return self
