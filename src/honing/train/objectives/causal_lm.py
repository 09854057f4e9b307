"""Causal language modelling (pre-training and SFT): summed next-token cross-entropy over target tokens.

The objective returns the *sum* of the token losses and the number of target tokens; the
engine divides by the target tokens of the whole optimiser step (all micro-batches, all
ranks), so gradient accumulation and data parallelism do not change the result.

The output head is applied only at positions that have a target. In SFT most positions are
prompt tokens, and the head (hidden × vocab) is the largest matrix the model multiplies, so
skipping it where no loss is taken saves much of the step without changing a single number.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from honing.data.types import IGNORE_INDEX

# Config attributes that mean the head's logits are transformed after the matmul; such
# models go through their own forward so the transformation is applied exactly.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def causal_lm_of(model: nn.Module) -> nn.Module:
    """The transformers *ForCausalLM inside a PEFT wrapper (LoRA layers stay injected), or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class TargetedCausalLM(nn.Module):
    """Wraps a causal LM so that forward returns (summed loss, target count).

    Wrap this module (not the inner model) in DDP, so gradient synchronisation sees the
    whole computation.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        lm = causal_lm_of(model)
        config = lm.config
        self.head_only_on_targets = not any(getattr(config, name, None) for name in _LOGIT_TRANSFORMS)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        labels: torch.Tensor,  # (B, T), IGNORE_INDEX where no target
        position_ids: torch.Tensor | None = None,  # (B, T); restarting per packed example
        attention_mask: torch.Tensor | None = None,  # (B, T); None for packed rows
    ) -> tuple[torch.Tensor, torch.Tensor]:
        targets = labels[:, 1:]  # (B, T-1): token t+1 is predicted at position t
        mask = targets != IGNORE_INDEX
        n_targets = mask.sum()
        inputs = dict(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask, use_cache=False)
        if self.head_only_on_targets:
            lm = causal_lm_of(self.model)
            backbone = getattr(lm, lm.base_model_prefix)
            hidden = backbone(**inputs).last_hidden_state  # (B, T, H)
            selected = hidden[:, :-1][mask]  # (N, H)
            logits = lm.get_output_embeddings()(selected)  # (N, V)
        else:
            logits = self.model(**inputs).logits[:, :-1][mask]  # (N, V)
        loss_sum = F.cross_entropy(logits.float(), targets[mask], reduction="sum")
        return loss_sum, n_targets


def count_targets(labels: torch.Tensor) -> int:
    """Target tokens in a batch, counted the way the loss counts them (shifted)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())
