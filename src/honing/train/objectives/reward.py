"""Reward modelling: a causal-LM backbone with a scalar head, trained with the Bradley–Terry loss.

The score of a sequence is the head applied to the hidden state of its *last real token*
(the last position whose attention mask is 1). The index is taken from the attention mask,
never from pad ids: a tokenizer whose pad token is its eos token would otherwise read the
score at the wrong place. Position ids are derived from the mask too, so a left-padded row
scores exactly like the same row right-padded or unpadded.

A preference batch holds 2B rows: the B chosen sequences, then the B rejected ones, in the
same pair order. The loss for a pair is −log σ(s_chosen − s_rejected − margin).

A prompt and an answer are rendered with the chat template and cut after the answer's
end-of-turn token, the same way in training (`tokenize_preference`) and in scoring
(`score_responses`, which `honing score` and the RL stages use), so a score means the same thing
in both.

On disk a reward model is a directory with
  - the backbone's causal LM as a Hugging Face directory (or, for a PEFT model, its adapter),
  - `reward_head.safetensors` (the head's weight and bias),
  - `reward_config.json` (hidden size, whether the backbone is an adapter, and its base model),
  - the tokenizer, when one was given to `save_reward_model`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from honing.data.types import IGNORE_INDEX, TokenizedExample
from honing.train.objectives.causal_lm import causal_lm_of

log = logging.getLogger(__name__)

HEAD_FILE = "reward_head.safetensors"
CONFIG_FILE = "reward_config.json"
REWARD_MODEL_DIR = "reward_model"
"""Where `honing reward` saves the reward model inside its run directory."""


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
        # The LM's transformer blocks, so regional compilation finds them through this module.
        self._no_split_modules = list(getattr(lm, "_no_split_modules", None) or [])

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

    forward returns (summed loss over pairs, number of pairs, metrics summed over pairs); the
    engine divides both sums by the pairs of the whole optimiser step, as it does with target
    tokens, so gradient accumulation changes nothing and the logged metrics are per-pair means.
    """

    # What the engine needs from an objective: the batch keys it takes, and its units (pairs),
    # logged as `pairs`; no labels, so no target tokens, and no perplexity (the loss is not an NLL).
    input_keys = ("input_ids", "attention_mask", "margin")
    unit = "pairs"

    def __init__(self, reward_model: RewardModel):
        super().__init__()
        self.reward_model = reward_model

    @staticmethod
    def count(batch: dict[str, torch.Tensor]) -> int:
        return int(batch["input_ids"].shape[0]) // 2  # chosen rows, then rejected rows

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
                "accuracy": (chosen > rejected).float().sum(),
                "chosen_score": chosen.sum(),
                "rejected_score": rejected.sum(),
                "margin": (chosen - rejected).sum(),
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


def render_side(tokenizer: Any, messages: list[dict[str, str]], *, max_length: int) -> TokenizedExample:
    """One conversation ending in the answer to score, rendered through the chat template and cut
    after the answer's last trained token (its end-of-turn token), so whatever the template
    appends after the turn (a newline) does not become the token the score is read from.
    Labels mark the answer's tokens; `truncated` says the answer was cut at max_length."""
    from honing.data.templating import tokenize_conversation

    example = tokenize_conversation(tokenizer, messages, train_on="last_assistant", max_length=max_length)
    last = max(i for i, label in enumerate(example.labels) if label != IGNORE_INDEX)
    return TokenizedExample(example.input_ids[: last + 1], example.labels[: last + 1], example.truncated)


def tokenize_preference(tokenizer: Any, record: dict[str, Any], *, max_length: int) -> PreferencePair:
    """Tokenize a normalised preference record (`normalize(record, "preference")`): each side is
    the prompt plus that answer, rendered by `render_side`."""
    chosen, rejected = (render_side(tokenizer, record["prompt"] + record[key], max_length=max_length)
                        for key in ("chosen", "rejected"))
    return PreferencePair(chosen.input_ids, rejected.input_ids, chosen.truncated or rejected.truncated)


class ResponseError(ValueError):
    """A prompt/response that cannot be scored; `index` is its position in the input."""

    def __init__(self, index: int, reason: str):
        super().__init__(f"response {index}: {reason}")
        self.index, self.reason = index, reason


def score_responses(
    reward_model: RewardModel,
    tokenizer: Any,
    prompts: Sequence[str | list[dict]],
    responses: Sequence[str],
    *,
    batch_size: int = 8,
    max_length: int = 1024,
    system_prompt: str | None = None,
) -> list[float]:
    """The reward model's score of each response to its prompt, in input order.

    A prompt is a string (one user turn) or a list of role/content messages; `system_prompt` is
    added to prompts that have no system message. Each prompt + response is rendered exactly as a
    side of a training pair (`render_side`). Sequences are scored in batches of similar length,
    right-padded, under no_grad with the model in eval mode (its mode is restored afterwards).
    A response longer than max_length is cut there and scored mid-answer (logged).
    """
    from honing.data.formats import with_system_prompt

    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    rows, truncated = [], 0
    for index, (prompt, response) in enumerate(zip(prompts, responses)):
        if not isinstance(response, str):
            raise ResponseError(index, f"the response must be a string, not {type(response).__name__}")
        turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        messages = with_system_prompt(turns, system_prompt) + [{"role": "assistant", "content": response}]
        try:
            side = render_side(tokenizer, messages, max_length=max_length)
        except ValueError as err:  # a prompt longer than max_length, a template that rejects the turns
            raise ResponseError(index, str(err)) from None
        rows.append(side.input_ids)
        truncated += side.truncated
    if truncated:
        log.warning("%d of %d responses were longer than max_length=%d tokens: cut there, scored mid-answer",
                    truncated, len(rows), max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(reward_model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]), reverse=True)  # little padding per batch
    scores = [0.0] * len(rows)
    modes = {module: module.training for module in reward_model.modules()}
    reward_model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                batch = pad_rows([rows[i] for i in chunk], pad_id)
                values = reward_model(batch["input_ids"].to(device), batch["attention_mask"].to(device))  # (b,)
                for i, value in zip(chunk, values.tolist()):
                    scores[i] = value
    finally:
        for module, training in modes.items():
            module.training = training
    return scores


def pad_rows(rows: Sequence[list[int]], pad_id: int, *, side: str = "right") -> dict[str, torch.Tensor]:
    """A batch of token rows with input_ids and attention_mask (B, T), padded on `side`."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(0, len(r)) if side == "right" else slice(T - len(r), T)
        ids[i, sl] = torch.tensor(r, dtype=torch.long)
        mask[i, sl] = 1
    return {"input_ids": ids, "attention_mask": mask}


def pad_pairs(
    chosen: list[list[int]], rejected: list[list[int]], pad_id: int, *, side: str = "right"
) -> dict[str, torch.Tensor]:
    """A 2B-row batch (chosen rows, then rejected rows) with input_ids and attention_mask."""
    if len(chosen) != len(rejected):
        raise ValueError("chosen and rejected must hold the same number of sequences")
    return pad_rows(list(chosen) + list(rejected), pad_id, side=side)


def save_reward_model(reward_model: RewardModel, directory: str | Path, *, tokenizer: Any = None,
                      state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the backbone (HF directory or PEFT adapter), the head, a small config and, when
    given, the tokenizer. `state_dict` (the RewardModel's, e.g. gathered from shards) is saved
    instead of the model's own tensors."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    model = reward_model.model
    is_adapter = hasattr(model, "peft_config")
    lm = causal_lm_of(model)
    if state_dict is not None:
        head_state = {"weight": state_dict["head.weight"], "bias": state_dict["head.bias"]}
        state_dict = {name.removeprefix("model."): value for name, value in state_dict.items() if name.startswith("model.")}
    else:
        head_state = {"weight": reward_model.head.weight, "bias": reward_model.head.bias}
    if not is_adapter and hasattr(lm.config, "quantization_config"):  # de-quantised from GGUF: save it plain
        from honing.models.load import _strip_gguf_quantization

        _strip_gguf_quantization(lm)
    model.save_pretrained(out, state_dict=state_dict)  # a PEFT model writes its adapter; a plain one, the whole LM
    save_file({name: value.detach().cpu().contiguous() for name, value in head_state.items()}, str(out / HEAD_FILE))
    base = str(lm.config._name_or_path) if is_adapter else None
    if base and Path(base).is_dir():
        base = str(Path(base).resolve())  # reloadable from any working directory
    config = {
        "kind": "reward_model",
        "hidden_size": lm.config.hidden_size,
        "adapter": is_adapter,
        "base_model": base,
        "head_dtype": str(head_state["weight"].dtype).removeprefix("torch."),
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def read_reward_config(directory: str | Path) -> dict[str, Any]:
    """The `reward_config.json` of a reward model directory; a clear error for any other directory."""
    from honing.errors import ModelError

    src = Path(directory)
    config_path = src / CONFIG_FILE
    if not config_path.is_file():
        what = "does not exist" if not src.exists() else f"is not a reward model (it has no {CONFIG_FILE})"
        raise ModelError(f"{src} {what}; give a `honing reward` run directory or its reward_model/ folder")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ModelError(f"{config_path} is not valid JSON: {err}") from None
    if not isinstance(config, dict) or config.get("kind") != "reward_model" or "hidden_size" not in config:
        raise ModelError(f"{config_path} does not describe a reward model")
    return config


def reward_model_dir(path: str | Path) -> Path:
    """The reward model directory: `path` itself, or the reward_model/ folder of a `honing reward` run."""
    path = Path(path).expanduser()
    if not (path / CONFIG_FILE).is_file() and (path / REWARD_MODEL_DIR / CONFIG_FILE).is_file():
        return path / REWARD_MODEL_DIR
    read_reward_config(path)  # the error that says what is wrong
    return path


def open_reward_model(path: str | Path, *, base_model: str | Path | None = None,
                      device: str | torch.device = "cpu") -> tuple[RewardModel, Any]:
    """(reward model in eval mode, its tokenizer) from a `honing reward` run directory or its
    reward_model/ folder: what `honing score` and the RL stage load.

    A LoRA reward model is put on `base_model` (anything honing loads: an HF directory, a .gguf,
    a run directory), by default the base it recorded, or the embedded default when that
    directory no longer exists (said in the log)."""
    from honing.config import ModelConfig
    from honing.models.load import _has_tokenizer, _tokenizer_from_dir, load_model

    directory = reward_model_dir(path)
    config = read_reward_config(directory)
    base_tokenizer = None
    if config.get("adapter"):
        base = base_model if base_model is not None else config.get("base_model")
        if base_model is None and base and not Path(base).exists():
            log.warning("the reward model's base %s does not exist here; using the embedded default model", base)
            base = None
        loaded = load_model(ModelConfig(path=str(base) if base else None), device=str(device))
        reward_model = load_reward_model(directory, base_model=loaded.model)
        base_tokenizer = loaded.tokenizer
    else:
        reward_model = load_reward_model(directory)
    reward_model.to(device).eval()
    if _has_tokenizer(directory):
        return reward_model, _tokenizer_from_dir(directory)
    if base_tokenizer is None:
        from honing.errors import ModelError

        raise ModelError(f"{directory} holds no tokenizer; save the reward model with save_reward_model(..., tokenizer=)")
    return reward_model, base_tokenizer


def load_reward_model(directory: str | Path, *, base_model: str | Path | nn.Module | None = None,
                      **load_kwargs: Any) -> RewardModel:
    """Load what `save_reward_model` wrote. For an adapter, `base_model` overrides the recorded
    base: a model directory, or the base model itself, already loaded (the adapter is put on it)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    src = Path(directory)
    config = read_reward_config(src)
    if config.get("adapter"):
        from peft import PeftModel

        base = base_model if base_model is not None else config.get("base_model")
        if base is None:
            raise ValueError(f"{src} holds a LoRA adapter; pass base_model= the directory of the model it adapts")
        if not isinstance(base, nn.Module):
            base = AutoModelForCausalLM.from_pretrained(base, **load_kwargs)
        model = PeftModel.from_pretrained(base, str(src))
    else:
        model = AutoModelForCausalLM.from_pretrained(src, **load_kwargs)
    state = load_file(str(src / HEAD_FILE))
    head = nn.Linear(config["hidden_size"], 1, dtype=getattr(torch, config.get("head_dtype", "float32")))
    head.load_state_dict(state)
    head = head.to(next(model.parameters()).device)
    return RewardModel(model, head)
