"""Who is attacked, who attacks: anything with `identity` and `complete(conversations, *, seed)`.

    LocalChatModel     a local model (HF dir, .gguf, run directory, embedded default; + adapter), batched
    EndpointTeacher    an OpenAI-compatible endpoint the user configured (nothing is sent anywhere else)
    ScriptedTarget     a Python function of (conversation, seed) -> answer: tests, and replaying answers

The local and endpoint clients are the synthetic-data teacher's (honing.synth.teacher): one way to
talk to a model, whichever stage asks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from honing.config import ChatModelConfig, SamplingConfig
from honing.synth.teacher import EndpointTeacher, LocalTeacher

Messages = list[dict[str, str]]


class ChatModel(Protocol):
    identity: dict[str, Any]

    def complete(self, conversations: Sequence[Messages], *, seed: int | None = None) -> list[str]: ...


class ScriptedTarget:
    """Answers from a function of (conversation, seed): a fake model whose every answer is known."""

    def __init__(self, answer: Callable[[Messages, int | None], str], name: str = "scripted"):
        self.answer = answer
        self.identity = {"kind": "scripted", "name": name}
        self.calls = 0

    def complete(self, conversations: Sequence[Messages], *, seed: int | None = None) -> list[str]:
        self.calls += 1
        return [self.answer(list(conversation), seed) for conversation in conversations]


class LocalChatModel(LocalTeacher):
    """A local model (the synthetic-data teacher's loading and batched sampling), with a progress bar on request."""

    def __init__(self, cfg: ChatModelConfig, sampling: SamplingConfig, *, batch_size: int, progress: bool = False):
        super().__init__(cfg, sampling, batch_size=batch_size)
        self.progress = progress

    def complete(self, conversations: Sequence[Messages], *, seed: int | None = None) -> list[str]:
        from honing.generate import generate

        sampling = self.sampling if seed is None else self.sampling.model_copy(update={"seed": seed})
        return generate(self.model, self.tokenizer, list(conversations), sampling, batch_size=self.batch_size,
                        progress=self.progress)


def build_chat_model(cfg: ChatModelConfig, sampling: SamplingConfig, *, batch_size: int, role: str,
                     progress: bool = False) -> ChatModel:
    """A local model or an endpoint, per `cfg`; `role` (target, attacker) names it in errors; `progress`
    shows a local model's progress bar."""
    if cfg.endpoint:
        model = EndpointTeacher(cfg, sampling)
        model.endpoint.role = role
        return model
    return LocalChatModel(cfg, sampling, batch_size=batch_size, progress=progress)


def greedy(model: Any) -> Any:
    """The same model answering greedily (its most likely answer), where its sampling can be set; else the model."""
    if getattr(model, "sampling", None) is None:
        return model
    clone = copy.copy(model)  # shares the loaded weights
    clone.sampling = model.sampling.model_copy(update={"temperature": 0.0})
    return clone


def ask(model: Any, conversations: Sequence[Messages], *, seed: int) -> list[str]:
    """One reply per conversation, in order, from any chat model (a judge, which takes no seed, too)."""
    from honing.synth.teacher import complete

    return complete(model, conversations, seed)
