"""The teacher: the model that writes synthetic data.

A teacher is anything with `identity` (a dict recorded in every record's provenance) and
`complete(conversations, seed=...) -> list[str]`, one reply per conversation in order: a local
model through honing's batched generation, or an OpenAI-compatible endpoint that the user
configured (nothing is sent anywhere else). The API key is read from the environment at run
time and never written anywhere.
"""

from __future__ import annotations

import inspect
import json
import os
import urllib.error
import urllib.request
from typing import Any, Protocol, Sequence

from honing.config import SamplingConfig
from honing.errors import HoningError
from honing.synth.config import SynthConfig, TeacherConfig

Messages = list[dict[str, str]]


class Teacher(Protocol):
    identity: dict[str, Any]

    def complete(self, conversations: Sequence[Messages], *, seed: int | None = None) -> list[str]: ...


def complete(teacher: Any, conversations: Sequence[Messages], seed: int) -> list[str]:
    """Ask the teacher, passing the batch's seed when it takes one (a judge object also works as a teacher)."""
    if not conversations:
        return []
    takes_seed = "seed" in inspect.signature(teacher.complete).parameters
    replies = teacher.complete(list(conversations), seed=seed) if takes_seed else teacher.complete(list(conversations))
    if len(replies) != len(conversations):
        raise HoningError(f"the teacher returned {len(replies)} replies for {len(conversations)} prompts")
    return [reply if isinstance(reply, str) else "" for reply in replies]


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
    """An OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp server, TGI, a hosted API)."""

    def __init__(self, cfg: TeacherConfig, sampling: SamplingConfig):
        self.url = cfg.endpoint.rstrip("/") + "/chat/completions"
        self.model = cfg.endpoint_model
        self.sampling = sampling
        self.timeout = cfg.timeout_s
        self.api_key = os.environ.get(cfg.api_key_env)
        self.identity = {"kind": "endpoint", "endpoint": cfg.endpoint, "model": cfg.endpoint_model}

    def complete(self, conversations: Sequence[Messages], *, seed: int | None = None) -> list[str]:
        return [self._one(messages, None if seed is None else seed + i) for i, messages in enumerate(conversations)]

    def _one(self, messages: Messages, seed: int | None) -> str:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": self.sampling.temperature,
                                "top_p": self.sampling.top_p, "max_tokens": self.sampling.max_new_tokens}
        if seed is not None:
            body["seed"] = seed  # honoured by vLLM and OpenAI (best effort); ignored elsewhere
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as err:
            raise HoningError(f"teacher endpoint {self.url} answered HTTP {err.code}: {err.read()[:200]!r}") from None
        except (urllib.error.URLError, TimeoutError) as err:
            raise HoningError(f"teacher endpoint {self.url} cannot be reached: {getattr(err, 'reason', err)}") from None
        try:
            return payload["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise HoningError(f"teacher endpoint {self.url} returned no choices[0].message.content") from None


def build_teacher(cfg: SynthConfig) -> Teacher:
    if cfg.teacher.endpoint:
        return EndpointTeacher(cfg.teacher, cfg.sampling)
    return LocalTeacher(cfg.teacher, cfg.sampling, batch_size=cfg.batch_size)
