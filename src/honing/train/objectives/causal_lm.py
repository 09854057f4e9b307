"""Causal language modelling (pre-training and SFT): summed next-token cross-entropy over target tokens.

The objective returns the *sum* of the token losses and the number of target tokens; the
engine divides by the target tokens of the whole optimiser step (all micro-batches, all
ranks), so gradient accumulation and data parallelism do not change the result.

The output head is applied only at positions that have a target. In SFT most positions are
prompt tokens, and the head (hidden × vocab) is the largest matrix the model multiplies, so
skipping it where no loss is taken saves much of the step without changing a single number.
The head and the loss on those positions go through one kernel from `honing.train.kernels`
(plain, chunked so the (tokens × vocab) logits are never whole, or Liger's fused one on CUDA).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from honing.data.types import IGNORE_INDEX
from honing.train.kernels import LossKernel, select_loss_kernel
from honing.train.shared_prefix import PrefixPlan, backbone_with_shared_prefix, plan_prefix, whole_batch

# Config attributes that mean the head's logits are transformed after the matmul; such
# models go through their own forward so the transformation is applied exactly.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def causal_lm_of(model: nn.Module) -> nn.Module:
    """The transformers *ForCausalLM inside a PEFT wrapper (LoRA layers stay injected), or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class TargetedCausalLM(nn.Module):
    """Wraps a causal LM so that forward returns (summed loss, target count).

    Wrap this module (not the inner model) in DDP, so gradient synchronisation sees the
    whole computation. With `shared_prefix` (the engine sets it where train.shared_prefix applies),
    the tokens that begin every row of a padded batch are computed once (honing.train.shared_prefix).
    """

    def __init__(self, model: nn.Module, loss_kernel: str = "auto", shared_prefix: bool = False):
        super().__init__()
        self.model = model
        self.shared_prefix = shared_prefix
        lm = causal_lm_of(model)
        config = lm.config
        self.head_only_on_targets = not any(getattr(config, name, None) for name in _LOGIT_TRANSFORMS)
        self.loss_kernel = loss_kernel
        device = next(model.parameters()).device
        self._kernels: dict[torch.device, LossKernel] = {device: select_loss_kernel(loss_kernel, device)}  # fails early

    def _kernel_for(self, device: torch.device) -> LossKernel:
        if device not in self._kernels:  # the model moved after wrapping
            self._kernels[device] = select_loss_kernel(self.loss_kernel, device)
        return self._kernels[device]

    def prefix_plan(self, batch: dict[str, torch.Tensor]) -> PrefixPlan | None:
        """The rows that share a prefix in this batch, or None (sharing off, packed rows, nothing common)."""
        if not (self.shared_prefix and self.head_only_on_targets):
            return None
        return plan_prefix(batch["input_ids"], batch["labels"], batch.get("attention_mask"), whole_batch(len(batch["input_ids"])))

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        labels: torch.Tensor,  # (B, T), IGNORE_INDEX where no target
        position_ids: torch.Tensor | None = None,  # (B, T); restarting per packed example
        attention_mask: torch.Tensor | None = None,  # (B, T); None for packed rows
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n_targets = (labels[:, 1:] != IGNORE_INDEX).sum()
        inputs = dict(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask, use_cache=False)
        if self.head_only_on_targets:
            lm = causal_lm_of(self.model)
            backbone = getattr(lm, lm.base_model_prefix)
            plan = self.prefix_plan(dict(input_ids=input_ids, labels=labels, attention_mask=attention_mask))
            if plan is not None:  # (B, S, H) of each row's suffix, and the labels aligned with it
                hidden, labels = backbone_with_shared_prefix(backbone, plan, input_ids, labels, attention_mask, position_ids)
            else:
                hidden = backbone(**inputs).last_hidden_state  # (B, T, H)
            targets = labels[:, 1:]  # (B, T-1): token t+1 is predicted at position t
            mask = targets != IGNORE_INDEX
            selected = hidden[:, :-1][mask]  # (N, H)
            head = lm.get_output_embeddings()
            if _is_plain_linear(head):
                kernel = self._kernel_for(selected.device)
                loss_sum = kernel(selected, head.weight, targets[mask], bias=head.bias)
            else:  # an adapted (LoRA) or otherwise wrapped head: its own forward is the truth
                logits = head(selected)  # (N, V)
                loss_sum = F.cross_entropy(logits.float(), targets[mask], reduction="sum")
        else:
            targets = labels[:, 1:]
            mask = targets != IGNORE_INDEX
            logits = self.model(**inputs).logits[:, :-1][mask]  # (N, V)
            loss_sum = F.cross_entropy(logits.float(), targets[mask], reduction="sum")
        return loss_sum, n_targets


def _is_plain_linear(head: nn.Module) -> bool:
    """True when the head is exactly weight @ x (+ bias) on ordinary tensors, so a kernel may
    take its weight directly. Not for PEFT-wrapped, quantised or FSDP-sharded heads (whose
    class differs) nor DTensor weights."""
    if type(head) is not nn.Linear:
        return False
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:
        return True
    return not isinstance(head.weight, DTensor)


def count_targets(labels: torch.Tensor) -> int:
    """Target tokens in a batch, counted the way the loss counts them (shifted)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())
