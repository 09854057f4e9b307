"""The teacher: the model that writes synthetic data.

A teacher is anything with `identity` (a dict recorded in every record's provenance) and
`complete(conversations, seed=...) -> list[str]`, one reply per conversation in order: a local
model through honing's batched generation, or an OpenAI-compatible endpoint that the user
configured (nothing is sent anywhere else). The API key is read from the environment at run
time and never written anywhere.
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol, Sequence

from honing.config import SamplingConfig
from honing.errors import HoningError
from honing.config.synth import SynthConfig, TeacherConfig

Messages = list[dict[str, str]]


class Teacher(Protocol):
    identity: dict[str, Any]

    def complete(self, conversations: Sequence[Messages], *, seed: int | None = None) -> list[str]: ...


def complete(teacher: Any, conversations: Sequence[Messages], seed: int) -> list[str]:
    """Ask any chat model (teacher, red-team target, judge), passing the batch's seed when it takes one."""
    if not conversations:
        return []
    takes_seed = "seed" in inspect.signature(teacher.complete).parameters
    replies = teacher.complete(list(conversations), seed=seed) if takes_seed else teacher.complete(list(conversations))
    if len(replies) != len(conversations):
        raise HoningError(f"the model returned {len(replies)} replies for {len(conversations)} conversations")
    return [reply if isinstance(reply, str) else "" for reply in replies]


PREFILL = {"continue_final_message": True, "add_generation_prompt": False}
"""Request fields that make an OpenAI-compatible server (vLLM) continue the final assistant turn."""


class LocalTeacher:
    """A local model (any honing model source, optionally with an adapter), on the GPU when there is one."""

    def __init__(self, cfg: TeacherConfig, sampling: SamplingConfig, *, batch_size: int = 8):
        import torch

        from honing.config import ModelConfig
        from honing.stages.generate import load_for_inference

        loaded = load_for_inference(ModelConfig(path=cfg.path), cfg.adapter)
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        if torch.cuda.is_available():
            self.model.to("cuda")
        self.sampling = sampling
        self.batch_size = batch_size
        self.identity = {"kind": "local", "path": cfg.path or "embedded default", "adapter": cfg.adapter,
                         "sha256": loaded.source.get("sha256"), "adapter_sha256": loaded.source.get("adapter_sha256")}

    def complete(self, conversations: Sequence[Messages], *, seed: int | None = None) -> list[str]:
        from honing.generate import generate

        sampling = self.sampling if seed is None else self.sampling.model_copy(update={"seed": seed})
        return generate(self.model, self.tokenizer, list(conversations), sampling, batch_size=self.batch_size,
                        progress=False)


class EndpointTeacher:
    """An OpenAI-compatible chat-completions endpoint as the teacher."""

    def __init__(self, cfg: TeacherConfig, sampling: SamplingConfig):
        from honing.endpoint import ChatEndpoint

        self.endpoint = ChatEndpoint(cfg.endpoint, cfg.endpoint_model, api_key_env=cfg.api_key_env,
                                     timeout_s=cfg.timeout_s, role="teacher")
        self.sampling = sampling
        self.identity = {"kind": "endpoint", "endpoint": cfg.endpoint, "model": cfg.endpoint_model}

    def complete(self, conversations: Sequence[Messages], *, seed: int | None = None) -> list[str]:
        params = {"temperature": self.sampling.temperature, "top_p": self.sampling.top_p,
                  "max_tokens": self.sampling.max_new_tokens}
        # The seed is honoured by vLLM and OpenAI (best effort) and ignored elsewhere. A conversation ending with
        # an assistant turn is a prefill, continued with vLLM's continue_final_message (others may answer afresh).
        return [self.endpoint.complete(messages, **params, **({} if seed is None else {"seed": seed + i}),
                                       **(PREFILL if messages and messages[-1]["role"] == "assistant" else {}))
                for i, messages in enumerate(conversations)]


def build_teacher(cfg: SynthConfig) -> Teacher:
    if cfg.teacher.endpoint:
        return EndpointTeacher(cfg.teacher, cfg.sampling)
    return LocalTeacher(cfg.teacher, cfg.sampling, batch_size=cfg.batch_size)
