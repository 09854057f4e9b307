"""Reward modelling: a causal-LM backbone with a scalar head, trained with the Bradley–Terry loss.

The score of a sequence is the head applied to the hidden state of its *last real token*
(the last position whose attention mask is 1). The index is taken from the attention mask,
never from pad ids: a tokenizer whose pad token is its eos token would otherwise read the
score at the wrong place. Position ids are derived from the mask too, so a left-padded row
scores exactly like the same row right-padded or unpadded.

A preference batch holds 2B rows: the B chosen sequences, then the B rejected ones, in the
same pair order. The loss for a pair is −log σ(s_chosen − s_rejected − margin).

On disk a reward model is a directory with
  - the backbone's causal LM as a Hugging Face directory (or, for a PEFT model, its adapter),
  - `reward_head.safetensors` (the head's weight and bias),
  - `reward_config.json` (hidden size, whether the backbone is an adapter, and its base model).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from honing.data.types import IGNORE_INDEX
from honing.train.objectives.causal_lm import causal_lm_of

HEAD_FILE = "reward_head.safetensors"
CONFIG_FILE = "reward_config.json"


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the last position whose mask is 1, under right or left padding.

    A row with no real token would have no score; it is an error rather than a silent 0."""
    mask = attention_mask.bool()  # (B, T)
    if not bool(mask.any(dim=1).all()):
        raise ValueError("a row of the batch has no real token (its attention mask is all zeros)")
    T = mask.shape[1]
    return T - 1 - mask.flip(1).int().argmax(dim=1)  # (B,)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) positions counting real tokens only, so left padding does not shift positions."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


class RewardModel(nn.Module):
    """A causal LM's backbone (the transformer without its vocabulary head) plus a scalar head.

    `model` is a transformers *ForCausalLM or a PEFT wrapper around one; its output head is
    kept (so the backbone saves as an ordinary HF directory) but never used.
    """

    def __init__(self, model: nn.Module, head: nn.Linear | None = None):
        super().__init__()
        self.model = model
        lm = causal_lm_of(model)
        hidden = lm.config.hidden_size
        if head is None:
            head = nn.Linear(hidden, 1)
            nn.init.normal_(head.weight, std=1.0 / math.sqrt(hidden + 1))
            nn.init.zeros_(head.bias)
            param = next(model.parameters())
            head = head.to(device=param.device)
        self.head = head  # (H -> 1)

    @property
    def backbone(self) -> nn.Module:
        lm = causal_lm_of(self.model)
        return getattr(lm, lm.base_model_prefix)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: torch.Tensor,  # (B, T), 1 for real tokens
    ) -> torch.Tensor:
        position_ids = position_ids_from_mask(attention_mask)
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state  # (B, T, H)
        last = last_token_index(attention_mask)  # (B,)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        selected = hidden[rows, last]  # (B, H)
        return self.head(selected.to(self.head.weight.dtype)).squeeze(-1).float()  # (B,)


def bradley_terry_loss(
    chosen_scores: torch.Tensor,  # (B,)
    rejected_scores: torch.Tensor,  # (B,)
    margin: torch.Tensor | float | None = None,  # (B,) or scalar: how much better chosen must be
) -> torch.Tensor:
    """Per-pair −log σ(s_chosen − s_rejected − margin); ln 2 when the scores are equal and no margin."""
    diff = chosen_scores.float() - rejected_scores.float()
    if margin is not None:
        diff = diff - torch.as_tensor(margin, dtype=diff.dtype, device=diff.device)
    return -F.logsigmoid(diff)  # (B,)


def pairwise_accuracy(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> torch.Tensor:
    """Fraction of pairs whose chosen response scores strictly higher (a tie counts as wrong)."""
    return (chosen_scores > rejected_scores).float().mean()


class RewardObjective(nn.Module):
    """Bradley–Terry over a batch of 2B rows (B chosen, then the B rejected in the same order).

    forward returns (summed loss over pairs, number of pairs, metrics); the engine divides
    the sum by the pairs of the whole optimiser step, as it does with target tokens.
    """

    def __init__(self, reward_model: RewardModel):
        super().__init__()
        self.reward_model = reward_model

    def forward(
        self,
        input_ids: torch.Tensor,  # (2B, T)
        attention_mask: torch.Tensor,  # (2B, T)
        margin: torch.Tensor | None = None,  # (B,)
        **_: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        if input_ids.shape[0] % 2:
            raise ValueError(f"a preference batch has 2B rows (chosen then rejected), got {input_ids.shape[0]}")
        scores = self.reward_model(input_ids, attention_mask)  # (2B,)
        chosen, rejected = scores.chunk(2)  # (B,), (B,)
        losses = bradley_terry_loss(chosen, rejected, margin)
        n_pairs = torch.tensor(chosen.shape[0], device=scores.device)
        with torch.no_grad():
            metrics = {
                "accuracy": pairwise_accuracy(chosen, rejected),
                "chosen_score": chosen.mean(),
                "rejected_score": rejected.mean(),
                "margin": (chosen - rejected).mean(),
            }
        return losses.sum(), n_pairs, metrics


@dataclass
class PreferencePair:
    """One tokenized preference record: the prompt followed by each answer, ending at the
    answer's end-of-turn token (where the score is read)."""

    chosen_ids: list[int]
    rejected_ids: list[int]
    truncated: bool = False
    """True when either side was cut at max_length: its score is then read mid-answer."""


def tokenize_preference(tokenizer: Any, record: dict[str, Any], *, max_length: int) -> PreferencePair:
    """Tokenize a normalised preference record (`normalize(record, "preference")`).

    Each side is rendered through the chat template as prompt + answer and cut after its last
    trained token (the answer's end-of-turn token), so whatever the template appends after the
    turn (a newline) does not become the token the score is read from.
    """
    from honing.data.templating import tokenize_conversation

    sides = []
    truncated = False
    for key in ("chosen", "rejected"):
        example = tokenize_conversation(
            tokenizer, record["prompt"] + record[key], train_on="last_assistant", max_length=max_length
        )
        last = max(i for i, label in enumerate(example.labels) if label != IGNORE_INDEX)
        sides.append(example.input_ids[: last + 1])
        truncated = truncated or example.truncated
    return PreferencePair(sides[0], sides[1], truncated)


def pad_pairs(
    chosen: list[list[int]], rejected: list[list[int]], pad_id: int, *, side: str = "right"
) -> dict[str, torch.Tensor]:
    """A 2B-row batch (chosen rows, then rejected rows) with input_ids and attention_mask."""
    if len(chosen) != len(rejected):
        raise ValueError("chosen and rejected must hold the same number of sequences")
    rows = list(chosen) + list(rejected)
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(0, len(r)) if side == "right" else slice(T - len(r), T)
        ids[i, sl] = torch.tensor(r, dtype=torch.long)
        mask[i, sl] = 1
    return {"input_ids": ids, "attention_mask": mask}


def save_reward_model(reward_model: RewardModel, directory: str | Path) -> Path:
    """Write the backbone (HF directory or PEFT adapter), the head and a small config."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    model = reward_model.model
    is_adapter = hasattr(model, "peft_config")
    lm = causal_lm_of(model)
    model.save_pretrained(out)  # a PEFT model writes its adapter; a plain one, the whole LM
    head = reward_model.head
    save_file(
        {"weight": head.weight.detach().cpu().contiguous(), "bias": head.bias.detach().cpu().contiguous()},
        str(out / HEAD_FILE),
    )
    config = {
        "kind": "reward_model",
        "hidden_size": lm.config.hidden_size,
        "adapter": is_adapter,
        "base_model": str(lm.config._name_or_path) if is_adapter else None,
        "head_dtype": str(head.weight.dtype).removeprefix("torch."),
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return out


def load_reward_model(directory: str | Path, *, base_model: str | Path | None = None, **load_kwargs: Any) -> RewardModel:
    """Load what `save_reward_model` wrote. For an adapter, `base_model` overrides the recorded base path."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    src = Path(directory)
    config_path = src / CONFIG_FILE
    if not config_path.exists():
        raise FileNotFoundError(f"{src} is not a reward model directory: no {CONFIG_FILE}")
    config = json.loads(config_path.read_text())
    if config.get("adapter"):
        from peft import PeftModel

        base_path = base_model or config.get("base_model")
        if not base_path:
            raise ValueError(f"{src} holds a LoRA adapter; pass base_model= the directory of the model it adapts")
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path, **load_kwargs), str(src))
    else:
        model = AutoModelForCausalLM.from_pretrained(src, **load_kwargs)
    state = load_file(str(src / HEAD_FILE))
    head = nn.Linear(config["hidden_size"], 1, dtype=getattr(torch, config.get("head_dtype", "float32")))
    head.load_state_dict(state)
    head = head.to(next(model.parameters()).device)
    return RewardModel(model, head)
