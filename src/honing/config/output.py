"""Where a run goes and what it saves."""

from __future__ import annotations

from typing import Literal

from honing.config.base import StrictModel


class OutputConfig(StrictModel):
    """Where the run goes and what is saved."""

    dir: str | None = None
    """Run directory; default runs/<stage>-<date>-<time>."""
    save: Literal["adapter", "merged", "both"] = "adapter"
    """With an adapter: save the PEFT adapter, the merged model, or both (full fine-tuning always saves the model)."""
    tensorboard: bool = True
    """Also write TensorBoard logs when the tensorboard package is installed."""
