"""ChatModel: the one way anything in honing talks to a model.

    ChatModel.load(cfg, sampling, role=...)   a local model (HF dir, .gguf, run directory, the embedded
                                              default; + adapter) or an OpenAI-compatible endpoint, per cfg
    ChatModel.wrap(model, tokenizer)          weights already in memory (RL rollouts, eval of a live policy)
    ChatModel.scripted(fn)                    a Python function of (conversation, seed) -> text: tests, replays

Every kind answers `complete(prompts, sampling, seed=...) -> list[Completion]`, one per prompt in order,
and `texts(...)` for callers that want only the text. `identity` is what a run record stores about the
model (never a key). A local model answers in batches (honing.generate); an endpoint is asked with the
official `openai` client, `concurrency` requests at a time, retrying 429 and 5xx with exponential backoff;
only the configured URL is contacted, and the API key is read from `api_key_env` at run time.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from honing.config import ChatModelConfig, GenerationConfig, ModelConfig, SamplingConfig
from honing.data.prompts import Prompt, as_messages
from honing.errors import HoningError

Messages = list[dict[str, str]]
log = logging.getLogger(__name__)

PREFILL = {"continue_final_message": True, "add_generation_prompt": False}
"""Request fields that make an OpenAI-compatible server (vLLM) continue the final assistant turn."""


@dataclass
class Completion:
    """One answer. `token_ids` are the new tokens (cut after the stop token, which is kept); an endpoint
    that does not return them leaves the list empty. finish_reason: "stop" (the model ended its answer)
    or "length" (it ran into max_new_tokens)."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: Literal["stop", "length"] = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    sources: list[str] = field(default_factory=list)
    """With `model.rag`: the ids of the chunks that were put in the prompt, best first."""


def load_local(cfg: ChatModelConfig) -> Any:
    """The weights `cfg` names (a LoadedModel): the model, with its adapter merged in when given."""
    from honing.models.load import load_adapter_model, load_model

    model_cfg = ModelConfig(path=cfg.path, tokenizer=cfg.tokenizer, dtype=cfg.dtype,
                            attn_implementation=cfg.attn_implementation)
    if cfg.adapter:
        return load_adapter_model(model_cfg, cfg.adapter, merge=True)
    return load_model(model_cfg)


class ChatModel:
    """A model to talk to: local weights, an endpoint, or a script. Build one with `load`, `wrap` or `scripted`."""

    def __init__(self, kind: Literal["local", "endpoint", "scripted"], identity: dict[str, Any], *, role: str,
                 sampling: SamplingConfig | None = None, batch_size: int = 8, progress: bool = False):
        self.kind = kind
        self.identity = identity
        self.role = role  # judge, teacher, target, attacker, model, feedback, policy: named in errors
        self.sampling = sampling or SamplingConfig()
        self.batch_size = batch_size
        self.progress = progress
        self.model: Any = None  # local: the transformers model and its tokenizer
        self.tokenizer: Any = None
        self.source: dict[str, Any] = {}
        self.endpoint: _Endpoint | None = None
        self.answer: Callable[[Messages, int | None], str] | None = None
        self.generation = GenerationConfig()
        self.vllm: Any = None  # a honing.engine.vllm.VLLMModel when vLLM answers
        self.calls = 0  # complete() calls answered (scripted models count them for tests)
        self.retriever: Any = None  # with cfg.rag: the open index (honing.rag.search.Retriever) and its settings
        self.rag: Any = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def load(cls, cfg: ChatModelConfig, sampling: SamplingConfig | None = None, *, role: str, batch_size: int = 8,
             progress: bool = False) -> ChatModel:
        """The model `cfg` names; a local one goes on the GPU when there is one; with `cfg.rag`, answering from
        retrieved chunks."""
        chat = cls._load(cfg, sampling, role=role, batch_size=batch_size, progress=progress)
        if cfg.rag is not None:
            chat.use_rag(cfg.rag)
        return chat

    def use_rag(self, rag: Any) -> ChatModel:
        """Answer with the top `rag.k` chunks of `rag.index` in each prompt (a ModelRagConfig)."""
        from honing.rag.search import Retriever

        self.retriever = Retriever(rag.index, rag.embedding_model, rag.reranker)
        self.rag = rag
        self.identity = {**self.identity, "rag": {"index": str(rag.index), "k": rag.k, "mode": rag.mode}}
        return self

    @classmethod
    def _load(cls, cfg: ChatModelConfig, sampling: SamplingConfig | None = None, *, role: str, batch_size: int = 8,
              progress: bool = False) -> ChatModel:
        if cfg.endpoint:
            chat = cls("endpoint", {"kind": "endpoint", "endpoint": cfg.endpoint, "model": cfg.endpoint_model},
                       role=role, sampling=sampling, batch_size=batch_size)
            chat.endpoint = _Endpoint(cfg, role)
            return chat
        import torch

        from honing.engine.vllm import vllm_wanted

        if vllm_wanted(cfg):
            from honing.engine.vllm import VLLMModel

            vllm = VLLMModel(cfg)
            chat = cls("local", vllm.identity, role=role, sampling=sampling, batch_size=batch_size, progress=progress)
            chat.vllm, chat.tokenizer, chat.generation = vllm, vllm.tokenizer, cfg.generation
            return chat
        loaded = load_local(cfg)
        if torch.cuda.is_available():
            loaded.model.to("cuda")
            log.info("%s: %s runs on the GPU", role, cfg.path or "the embedded model")
        identity = {"kind": "local", "path": cfg.path or "embedded default", "adapter": cfg.adapter,
                    "sha256": loaded.source.get("sha256"), "adapter_sha256": loaded.source.get("adapter_sha256")}
        chat = cls.wrap(loaded.model, loaded.tokenizer, sampling, role=role, batch_size=batch_size, identity=identity,
                        progress=progress, generation=cfg.generation)
        chat.source = loaded.source
        return chat

    @classmethod
    def wrap(cls, model: Any, tokenizer: Any, sampling: SamplingConfig | None = None, *, role: str = "policy",
             batch_size: int = 8, identity: dict[str, Any] | None = None, progress: bool = False,
             generation: GenerationConfig | None = None) -> ChatModel:
        """A model already in memory; its weights are shared, not copied (a training step shows in the next answer)."""
        chat = cls("local", identity or {"kind": "local", "path": getattr(model, "name_or_path", None) or "in memory"},
                   role=role, sampling=sampling, batch_size=batch_size, progress=progress)
        chat.model, chat.tokenizer = model, tokenizer
        chat.generation = generation or GenerationConfig()
        return chat

    @classmethod
    def scripted(cls, answer: Callable[[Messages, int | None], str], *, name: str = "scripted",
                 role: str = "model") -> ChatModel:
        """A fake model whose every answer is known: `answer(conversation, seed)`."""
        chat = cls("scripted", {"kind": "scripted", "name": name}, role=role)
        chat.answer = answer
        return chat

    def greedy(self) -> ChatModel:
        """The same model answering greedily (its most likely answer), sharing the loaded weights; a script is itself."""
        if self.kind == "scripted":
            return self
        clone = copy.copy(self)
        clone.sampling = self.sampling.model_copy(update={"temperature": 0.0})
        return clone

    # ------------------------------------------------------------------ answering

    def complete(self, prompts: Sequence[Prompt], sampling: SamplingConfig | None = None, *, seed: int | None = None,
                 chat_template: bool = True, system_prompt: str | None = None,
                 streamer: Any = None) -> list[Completion]:
        """One completion per prompt (a conversation, or a string: one user turn), in order. `sampling`
        replaces the model's own for this call; `seed` replaces its seed (an endpoint gets seed + i for
        the i-th prompt). chat_template=False (plain-text completion) and `streamer` are local only."""
        if not prompts:
            return []
        if self.retriever is not None:
            return self._complete_with_context(prompts, sampling, seed, chat_template, system_prompt, streamer)
        return self._complete(prompts, sampling, seed, chat_template, system_prompt, streamer)

    def _complete(self, prompts: Sequence[Prompt], sampling: SamplingConfig | None, seed: int | None,
                  chat_template: bool, system_prompt: str | None, streamer: Any) -> list[Completion]:
        sampling = sampling or self.sampling
        if seed is not None:
            sampling = sampling.model_copy(update={"seed": seed})
        self.calls += 1
        if self.kind == "local":
            return self._complete_local(prompts, sampling, chat_template, system_prompt, streamer)
        if not chat_template:
            raise HoningError(f"{self.role}: plain-text completion (chat_template: false) needs a local model")
        conversations = [as_messages(prompt, system_prompt) for prompt in prompts]
        if self.kind == "endpoint":
            assert self.endpoint is not None
            # A sampled request carries the sampling seed even when the caller gave none (reproducible where the
            # server honours seeds); a greedy one only when asked.
            sent_seed = seed if seed is not None else (sampling.seed if sampling.temperature > 0 else None)
            return self.endpoint.complete(conversations, sampling, sent_seed)
        assert self.answer is not None
        completions = []
        for conversation in conversations:
            text = self.answer(conversation, seed)
            completions.append(Completion(text if isinstance(text, str) else ""))
        return completions

    def _complete_with_context(self, prompts: Sequence[Prompt], sampling: SamplingConfig | None, seed: int | None,
                               chat_template: bool, system_prompt: str | None, streamer: Any) -> list[Completion]:
        """complete() with each prompt's question (its last user turn, or the text itself) answered from the
        retrieved chunks; each completion names the chunks it was given."""
        from honing.data.prompts import last_user_text, with_question
        from honing.rag.ask import rag_prompt

        asked, sources = [], []
        for prompt in prompts:
            question = prompt if isinstance(prompt, str) else last_user_text(prompt)
            hits = self.retriever.search(question, self.rag) if question.strip() else []
            sources.append([hit.id for hit in hits])
            asked.append(with_question(prompt, rag_prompt(question, hits)))
        completions = self._complete(asked, sampling, seed, chat_template, system_prompt, streamer)
        for completion, ids in zip(completions, sources):
            completion.sources = ids
        return completions

    def texts(self, prompts: Sequence[Prompt], sampling: SamplingConfig | None = None, *, seed: int | None = None,
              chat_template: bool = True, system_prompt: str | None = None) -> list[str]:
        """The completions' texts only."""
        return [c.text for c in self.complete(prompts, sampling, seed=seed, chat_template=chat_template,
                                              system_prompt=system_prompt)]

    def sample(self, prompt_ids: Sequence[list[int]], sampling: SamplingConfig | None = None, *, samples: int = 1,
               seed: int | None = None) -> list[list[Completion]]:
        """`samples` completions of each tokenised prompt (local models): result[i][j] is prompt i's j-th sample,
        with its token ids. The rows of one prompt are generated together (a GRPO group); see sample_tokens."""
        if self.kind != "local":
            raise HoningError(f"{self.role}: sampling token ids needs a local model, not {self.kind}")
        from honing.generate import sample_tokens, stop_token_ids

        sampling = sampling or self.sampling
        if self.vllm is not None:
            groups = self.vllm.sample(prompt_ids, sampling, samples=samples, seed=seed)
            stops = set(self.vllm.stop_ids)
        else:
            stops = set(stop_token_ids(self.tokenizer, self.model))
            groups = sample_tokens(self.model, self.tokenizer, prompt_ids, sampling, samples=samples,
                                   batch_size=self.batch_size, seed=seed, generation=self.generation)
        return [[self._completion(tokens, len(ids), stops, sampling.stop) for tokens in group]
                for ids, group in zip(prompt_ids, groups)]

    def _completion(self, tokens: list[int], prompt_tokens: int, stops: set[int],
                    stop_strings: Sequence[str] = ()) -> Completion:
        from honing.generate import before_stop

        text, cut = before_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), stop_strings)
        stopped = cut or (bool(tokens) and tokens[-1] in stops)
        return Completion(text.strip(), list(tokens), "stop" if stopped else "length", prompt_tokens, len(tokens))

    def _complete_local(self, prompts: Sequence[Prompt], sampling: SamplingConfig, chat_template: bool,
                        system_prompt: str | None, streamer: Any) -> list[Completion]:
        from honing.generate import generate_answers

        if self.vllm is not None:
            return self.vllm.complete(list(prompts), sampling, chat_template=chat_template, system_prompt=system_prompt,
                                      streamer=streamer)
        answers = generate_answers(self.model, self.tokenizer, list(prompts), sampling, batch_size=self.batch_size,
                                   chat_template=chat_template, system_prompt=system_prompt, progress=self.progress,
                                   streamer=streamer, generation=self.generation)
        return [Completion(a.text, a.token_ids, "stop" if a.stopped else "length", a.prompt_tokens, len(a.token_ids))
                for a in answers]


class _Endpoint:
    """An OpenAI-compatible chat-completions API, asked through the official client."""

    def __init__(self, cfg: ChatModelConfig, role: str):
        import openai

        assert cfg.endpoint and cfg.endpoint_model
        self.url = cfg.endpoint.rstrip("/") + "/chat/completions"
        self.model = cfg.endpoint_model
        self.role = role
        self.timeout_s = cfg.timeout_s
        self.concurrency = cfg.concurrency
        key = os.environ.get(cfg.api_key_env)
        # Without a key no Authorization header is sent (a local vLLM needs none); the client's own retries
        # (429, 5xx, timeouts, dropped connections) back off exponentially and honour Retry-After.
        # (The client insists on some key; with none, the placeholder never leaves: its header is omitted.)
        self.headers = {} if key else {"Authorization": openai.Omit()}
        self.client = openai.OpenAI(base_url=cfg.endpoint, api_key=key or "no-key", timeout=cfg.timeout_s,
                                    max_retries=cfg.max_retries)

    def complete(self, conversations: list[Messages], sampling: SamplingConfig, seed: int | None) -> list[Completion]:
        params: dict[str, Any] = {"temperature": sampling.temperature, "max_tokens": sampling.max_new_tokens}
        if sampling.stop:
            params["stop"] = list(sampling.stop)
        if sampling.temperature > 0:
            params["top_p"] = sampling.top_p

        def ask(i: int) -> Completion:
            # The seed is honoured by vLLM and OpenAI (best effort) and ignored elsewhere. A conversation ending with
            # an assistant turn is a prefill, continued with vLLM's continue_final_message (others may answer afresh).
            messages = conversations[i]
            prefill = bool(messages) and messages[-1]["role"] == "assistant"
            return self._request(messages, {**params, **({} if seed is None else {"seed": seed + i})},
                                 PREFILL if prefill else None)

        pool = ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(conversations))))
        try:
            return list(pool.map(ask, range(len(conversations))))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # after a failure, requests not yet sent are not sent

    def _request(self, messages: Messages, params: dict[str, Any], extra_body: dict[str, Any] | None) -> Completion:
        import openai

        where = f"{self.role} endpoint {self.url}"
        try:
            response = self.client.chat.completions.create(model=self.model, messages=messages,  # type: ignore[arg-type]
                                                           extra_headers=self.headers, extra_body=extra_body,
                                                           **params)
        except openai.APIStatusError as err:
            raise HoningError(f"{where} answered HTTP {err.status_code}: {err.response.text[:200]!r}") from None
        except openai.APITimeoutError:
            raise HoningError(f"{where} gave no answer within timeout_s={self.timeout_s:g} s; raise "
                              f"{self.role}.timeout_s or check the server") from None
        except openai.APIConnectionError as err:
            raise HoningError(f"{where} cannot be reached: {err.__cause__ or err}") from None
        except openai.APIError as err:  # e.g. a response that is not a chat completion
            raise HoningError(f"{where} gave an answer the client cannot read: {type(err).__name__}: {err}") from None
        choices = getattr(response, "choices", None)
        if not choices or choices[0].message is None:
            raise HoningError(f"{where} returned no choices[0].message")
        usage = response.usage
        return Completion(choices[0].message.content or "", [],
                          "length" if choices[0].finish_reason == "length" else "stop",
                          getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0)
