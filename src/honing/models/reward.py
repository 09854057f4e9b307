"""The reward model: a causal-LM backbone with a scalar head, how a prompt and an answer become
the row it scores, scoring answers, and its directory on disk. Its loss (Bradley–Terry) and
batch format are `honing.train.objectives.reward`.

The score of a sequence is the head applied to the hidden state of its *last real token*
(the last position whose attention mask is 1). The index is taken from the attention mask,
never from pad ids: a tokenizer whose pad token is its eos token would otherwise read the
score at the wrong place. Position ids are derived from the mask too, so a left-padded row
scores exactly like the same row right-padded or unpadded.

A prompt and an answer are rendered with the chat template and cut after the answer's
end-of-turn token (`render_side`), the same way in training and in scoring (`score_responses`,
which `honing score` and the RL stages use), so a score means the same thing in both.

On disk a reward model is a directory with
  - the backbone's causal LM as a Hugging Face directory (or, for a PEFT model, its adapter,
    naming its base portably as every honing adapter does: see honing.models.adapters),
  - `reward_head.safetensors` (the head's weight and bias),
  - `reward_config.json` (hidden size, whether the backbone is an adapter, and its base model),
  - the tokenizer, when one was given to `save_reward_model`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
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


def render_side(tokenizer: Any, messages: list[dict[str, str]], *, max_length: int) -> TokenizedExample:
    """One conversation ending in the answer to score, rendered through the chat template and cut
    after the answer's last trained token (its end-of-turn token), so whatever the template
    appends after the turn (a newline) does not become the token the score is read from.
    Labels mark the answer's tokens; `truncated` says the answer was cut at max_length."""
    from honing.data.templating import tokenize_conversation

    example = tokenize_conversation(tokenizer, messages, train_on="last_assistant", max_length=max_length)
    last = max(i for i, label in enumerate(example.labels) if label != IGNORE_INDEX)
    return TokenizedExample(example.input_ids[: last + 1], example.labels[: last + 1], example.truncated)


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
    if base and Path(base).is_dir():  # named portably (the embedded model by its id, not a cache path)
        from honing.models.adapters import write_adapter_base
        from honing.models.source import base_identity

        identity = base_identity(base)
        write_adapter_base(out, identity)
        base = identity["model_id"] or identity["path"]
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
    a run directory), by default the base it recorded, found on this machine as an adapter's
    base is (`honing.models.source.resolve_base`)."""
    from honing.config import ModelConfig
    from honing.models.load import _has_tokenizer, _tokenizer_from_dir, load_model

    directory = reward_model_dir(path)
    config = read_reward_config(directory)
    base_tokenizer = None
    if config.get("adapter"):
        base = base_model if base_model is not None else recorded_base(directory, config)
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

        if base_model is not None:
            base = base_model
        elif config.get("base_model") is None:
            raise ValueError(f"{src} holds a LoRA adapter; pass base_model= the directory of the model it adapts")
        else:
            base = recorded_base(src, config)
            if base is None or not Path(base, "config.json").is_file():  # the embedded model, a .gguf, a run
                from honing.config import ModelConfig
                from honing.models.load import load_model

                base = load_model(ModelConfig(path=base)).model
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


def recorded_base(directory: Path, config: dict[str, Any]) -> str | None:
    """The model.path of the base a LoRA reward model names, on this machine (None: the embedded
    default); a reward model saved before honing_base.json names it in reward_config.json."""
    from honing.models.adapters import BASE_FILE, read_adapter_base
    from honing.models.source import resolve_base

    if (directory / BASE_FILE).is_file():
        identity = read_adapter_base(directory)
    else:
        identity = {"model_id": None, "path": config.get("base_model"), "sha256": None}
    if not identity["model_id"] and not identity["path"]:
        from honing.errors import ModelError

        raise ModelError(f"{directory / CONFIG_FILE} names no base model; pass the base with base_model=")
    return resolve_base(identity, directory)
