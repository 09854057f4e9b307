"""PPO's value head: a linear layer on the policy's last hidden state, predicting the return from
each state. It starts at zero, so the first advantages are the plain rewards-to-go; it trains with
the policy (PolicyObjective's value loss), is checkpointed as part of the objective, and is saved
beside the model as value_head.safetensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

VALUE_HEAD_FILE = "value_head.safetensors"


def build_value_head(model: Any, device: torch.device) -> nn.Linear:
    """(…, H) hidden states → (…, 1) values, zero-initialised."""
    from honing.train.objectives.causal_lm import causal_lm_of

    head = nn.Linear(causal_lm_of(model).config.hidden_size, 1).to(device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


def save_value_head(head: nn.Module, directory: Path) -> Path:
    """Write the head's weights (weight, bias) to directory/value_head.safetensors."""
    from safetensors.torch import save_file

    from honing.io import atomic_path

    path = directory / VALUE_HEAD_FILE
    with atomic_path(path) as tmp:  # a crash mid-write leaves no half file under the final name
        save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(tmp))
    return path

