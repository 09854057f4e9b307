"""Where a run goes and what it saves."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import field_validator

from honing.config.base import StrictModel


class OutputConfig(StrictModel):
    """Where the run goes and what is saved."""

    dir: str | None = None
    """Run directory; default runs/<stage>-<date>-<time>."""
    save: Literal["adapter", "merged", "both"] = "adapter"
    """With an adapter: save the PEFT adapter, the merged model, or both (full fine-tuning always saves the model)."""
    tensorboard: bool = True
    """Also write TensorBoard logs when the tensorboard package is installed."""

    @field_validator("dir")
    @classmethod
    def _not_a_file(cls, value: str | None) -> str | None:
        # Caught here, before a model is loaded, rather than when the run directory is made.
        if value and Path(value).exists() and not Path(value).is_dir():
            raise ValueError(f"{value} is a file, not a directory; give a new or existing directory")
        return value
