"""How tokens are drawn during generation."""

from __future__ import annotations

from pydantic import Field

from honing.config.base import StrictModel


class SamplingConfig(StrictModel):
    """How tokens are drawn during generation."""

    max_new_tokens: int = Field(256, ge=1)
    """Most tokens generated per answer."""
    temperature: float = Field(0.0, ge=0.0)
    """0 means greedy decoding."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling threshold."""
    top_k: int = Field(0, ge=0)
    """Sample among the k most likely tokens; 0 disables."""
    repetition_penalty: float = Field(1.0, gt=0.0)
    """Penalty on tokens already present (1.0 disables)."""
    seed: int = 0
    """Seed for sampling."""
