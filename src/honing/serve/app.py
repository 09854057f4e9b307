"""The HTTP edge of `honing serve`: OpenAI's chat-completions and completions API over the pool's engines.

    GET  /health                 200 with each name's version once the models are loaded
    GET  /v1/models              the served names (OpenAI's list shape); a model with `rag:` shows its index and k
    POST /v1/chat/completions    messages -> n answers; stream=true sends server-sent events
    POST /v1/completions         plain-text prompts (no chat template)
    POST /v1/feedback            a rating, a corrected answer, or a choice between the answers of one response
    GET  /metrics                Prometheus text (requests, latency, time to first token, tokens, in flight)

Each handler checks, in order: the API key (401), the caller's rate and concurrency (429), the body's size (413),
that it is JSON of the right shape (400, naming the field), the model (404), the prompt's and max_tokens' limits
(400); then it hands the request to the model's worker and waits, at most `request_timeout_s` (408). Every
rejection is OpenAI's error shape {"error": {"message", "type", "param", "code"}}. A request is written to the
log before its response's last byte is sent.

A model with `rag:` answers from its index: the question (a chat request's last user message; a completion's
whole prompt, as ChatModel treats a plain-text prompt) is searched on the index's own thread, and replaced by
rag_prompt's turn (the instruction to cite ids, the top k chunks labelled with their ids, the question) before the
chat template; the prompt limits count those chunks. The response names them in a top-level `sources` list
({id, source, score}: a chunk id, its document's name in the index, its score), streamed on the first chunk; the
log keeps the prompt the model saw and the chunks (with the documents' paths) in its `sources` column.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from urllib.parse import quote
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from honing.config.serve import ServeConfig
from honing.errors import HoningError
from honing.serve.log import LoggedRequest, RequestLog
from honing.serve.pool import Job, Pool, Retrieval, Target
from honing.serve.security import Keys, Limiter

log = logging.getLogger(__name__)
BODY_TIMEOUT_S = 30.0
"""Seconds a client may take to send its request body."""
SEED_RANGE = 2**63
"""Seeds are taken modulo this (torch's generators take 64-bit seeds; seed + j must stay in range)."""
DISCONNECT_CHECK_S = 1.0
"""How often a request that is not streamed checks whether its client is still there."""
MIN_TEMPERATURE = 1e-5
"""A temperature below this is greedy decoding (dividing logits by less overflows to inf and NaN)."""


class APIError(Exception):
    """A rejection: HTTP status, OpenAI error type, message, the parameter at fault and a code."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


# --------------------------------------------------------------------------- request bodies


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(max_length=256)
    n: int = Field(1, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    """Not OpenAI's; vLLM's (0: off)."""
    repetition_penalty: float = Field(1.0, ge=0.01, le=10.0)
    """Not OpenAI's; vLLM's (1: off)."""
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    logprobs: bool | int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    user: str | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("temperature")
    @classmethod
    def _greedy_below_minimum(cls, value: float) -> float:
        return 0.0 if value < MIN_TEMPERATURE else value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: Any) -> Any:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("give up to 4 non-empty stop strings")
        return value

    @property
    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise APIError(400, "only text content parts are supported", param="messages")
            parts.append(part["text"])
        return "".join(parts)


class ChatBody(_Body):
    messages: list[_Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionBody(_Body):
    prompt: str | list[str]
    echo: bool = False


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    """The response id (chatcmpl-… / cmpl-…) the feedback is about."""
    rating: Literal["up", "down"] | None = None
    index: int = Field(0, ge=0)
    """Which answer of the response the rating or correction is about."""
    correction: str | None = Field(None, min_length=1)
    choice: int | None = Field(None, ge=0)
    """The index of the preferred answer among the response's n answers."""
    comment: str | None = None


# --------------------------------------------------------------------------- one generation


@dataclass
class _Answer:
    tokens: list[int] = field(default_factory=list)
    result: Any = None
    sent: int = 0  # characters already streamed
    text: str = ""  # decoded so far (incrementally: only the newest tokens are decoded each time)
    prefix_offset: int = 0
    read_offset: int = 0

    def decode_new(self, tokenizer: Any) -> None:
        """Extend `text` by the newest tokens, decoded against the few before them (so a word's leading space
        and a character split across tokens come out right); nothing while a character is still incomplete."""
        before = tokenizer.decode(self.tokens[self.prefix_offset:self.read_offset], skip_special_tokens=True)
        after = tokenizer.decode(self.tokens[self.prefix_offset:], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before):]
            self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)


class Generation:
    """The n engine requests of one API request, and the events they send back to the event loop."""

    def __init__(self, target: Target, prompt_ids: list[int], body: _Body, max_tokens: int, seed: int):
        from honing.engine import Request, Sampling

        self.target = target
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.answers = [_Answer() for _ in range(body.n)]
        vocab = len(target.tokenizer)
        sampling = Sampling(body.temperature, body.top_p, body.top_k if body.top_k < vocab else 0,
                            body.repetition_penalty)
        draft = target.worker.cfg.generation.draft_tokens
        self.requests = [Request(list(prompt_ids), max_tokens, sampling, (seed + j) % SEED_RANGE, body.stops,
                                 target.stop_ids,
                                 on_token=self._sender(j, "token"), on_finish=self._sender(j, "done"),
                                 draft_tokens=draft if sampling.greedy else 0)
                         for j in range(body.n)]
        self.first_token_s: float | None = None
        self.started = time.perf_counter()
        self.streaming = body.stream

    def _sender(self, index: int, kind: str):
        def send(value: Any) -> None:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, index, value))
        return send

    def start(self) -> None:
        for j, request in enumerate(self.requests):
            fail = self._sender(j, "error")
            self.target.worker.submit(self.target.adapter, Job(request, fail))

    def cancel(self) -> None:
        for request in self.requests:
            request.cancelled = True

    @property
    def done(self) -> bool:
        return all(a.result is not None for a in self.answers)

    async def next_event(self, deadline: float, request: Any = None) -> tuple[str, int, Any]:
        """The next token, end or failure of any answer; APIError 408 at the deadline, 499 when `request`'s
        client has gone (checked every DISCONNECT_CHECK_S: nobody would read the answer)."""
        while True:
            left = deadline - time.monotonic()
            wait = left if request is None else min(left, DISCONNECT_CHECK_S)
            try:
                kind, index, value = await asyncio.wait_for(self.events.get(), timeout=max(0.0, wait))
                break
            except asyncio.TimeoutError:
                if time.monotonic() >= deadline:
                    self.cancel()
                    raise APIError(408, "the request took longer than the server's request_timeout_s",
                                   "timeout_error", code="request_timeout") from None
                if request is not None and await request.is_disconnected():
                    self.cancel()
                    raise APIError(499, "the client went away", "client_disconnected") from None
        answer = self.answers[index]
        if kind == "token":
            answer.tokens.append(value)
            if self.first_token_s is None:
                self.first_token_s = time.perf_counter() - self.started
            if self.streaming:
                answer.decode_new(self.target.tokenizer)
        elif kind == "done":
            answer.result = value
        else:
            self.cancel()
            if isinstance(value, HoningError):  # the model is being unloaded: the server is stopping
                raise APIError(503, "the server is shutting down; retry", "server_error", code="unavailable")
            log.error("generation failed: %s: %s", type(value).__name__, value)
            raise APIError(500, f"generation failed ({type(value).__name__}); see the server's log", "server_error")
        return kind, index, value

    def text(self, index: int, *, final: bool) -> str:
        """Answer `index` as text: cut at its stop string when it ended; while it runs (streaming), what can no
        longer change: up to a stop string already there, else all but what could be a stop string's start."""
        answer = self.answers[index]
        if final:
            tokens = answer.result.token_ids if answer.result is not None else answer.tokens
            text = self.target.tokenizer.decode(tokens, skip_special_tokens=True)
            stop_at = answer.result.stop_text if answer.result is not None else None
            return text if stop_at is None else text[:stop_at]
        text, stops = answer.text, self.requests[index].stop
        found = [i for i in (text.find(stop) for stop in stops) if i >= 0]
        if found:
            return text[:min(found)]
        hold = max((len(stop) for stop in stops), default=1) - 1
        return text[:len(text) - hold] if hold else text

    def finish_reason(self, index: int) -> str:
        result = self.answers[index].result
        return "length" if result is None or result.finish_reason == "length" else "stop"

    @property
    def completion_tokens(self) -> int:
        return sum(len(a.result.token_ids) if a.result is not None else len(a.tokens) for a in self.answers)


# --------------------------------------------------------------------------- the app


class Metrics:
    """The Prometheus series, in a registry of this app's own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("honing_requests", "Requests answered or refused.", ["model", "endpoint", "status"],
                                registry=self.registry)
        self.latency = Histogram("honing_request_duration_seconds", "Seconds from request to last byte.", ["model"],
                                 registry=self.registry,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300))
        self.first_token = Histogram("honing_time_to_first_token_seconds", "Seconds to the first answer token.",
                                     ["model"], registry=self.registry,
                                     buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
        self.tokens = Counter("honing_tokens", "Tokens read (prompt) and written (completion).", ["model", "kind"],
                              registry=self.registry)
        self.in_flight = Gauge("honing_requests_in_flight", "Requests being answered now.", ["model"],
                               registry=self.registry)
        self.version = Gauge("honing_model_version_info", "The version each served name answers with (value 1).",
                             ["model", "version"], registry=self.registry)
        self.feedback = Counter("honing_feedback", "Feedback received.", ["kind"], registry=self.registry)
        self.retrieval = Histogram("honing_retrieval_duration_seconds", "Seconds to retrieve a prompt's chunks "
                                   "(models with rag:).", ["model"], registry=self.registry,
                                   buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


class Server:
    """The state the handlers share: config, keys, limits, the pool, the log and the metrics."""

    def __init__(self, cfg: ServeConfig, pool: Pool, request_log: RequestLog, keys: Keys):
        self.cfg = cfg
        self.pool = pool
        self.log = request_log
        self.keys = keys
        self.limiter = Limiter(cfg.limits.rate_per_minute, cfg.limits.concurrency)
        self.metrics = Metrics()
        self.shown_versions: dict[str, str] = {}

    # ------------------------------------------------------------------ checks

    def caller(self, request: Any) -> tuple[str | None, str]:
        """(key id, the name limits count under); APIError 401 for a missing or wrong key when keys are set."""
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else None
        if not self.keys.required:
            return None, f"client {request.client.host if request.client else '?'}"
        key_id = self.keys.identify(token)
        if key_id is None:
            raise APIError(401, "a valid API key is required: send Authorization: Bearer KEY"
                           if not token else "incorrect API key provided", code="invalid_api_key")
        return key_id, f"key {key_id}"

    async def read_json(self, request: Any) -> Any:
        limit = self.cfg.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise APIError(413, f"the request body is {declared} bytes; the limit is {limit}", code="body_too_large")

        async def read() -> bytes:
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise APIError(413, f"the request body is over the limit of {limit} bytes", code="body_too_large")
                chunks.append(chunk)
            return b"".join(chunks)

        try:
            raw = await asyncio.wait_for(read(), timeout=BODY_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise APIError(408, f"the request body did not arrive within {BODY_TIMEOUT_S:g} s", "timeout_error",
                           code="request_timeout") from None
        except ClientDisconnect:
            raise APIError(499, "the client went away while sending the body", "client_disconnected") from None
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise APIError(400, f"the request body is not valid JSON: {err}", code="invalid_json") from None
        except (RecursionError, ValueError) as err:  # nested too deep; an integer of thousands of digits
            raise APIError(400, f"the request body is JSON this server does not read: {str(err)[:100]}",
                           code="invalid_json") from None

    def parse(self, model: type[BaseModel], data: Any) -> Any:
        if not isinstance(data, dict):
            raise APIError(400, "the request body must be a JSON object")
        try:
            return model.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise APIError(400, f"{where}: {first['msg']}", param=where or None) from None

    def check_request(self, body: _Body) -> int:
        """max_tokens to generate; APIError for the limits and what this server does not do."""
        limits = self.cfg.limits
        if body.model not in self.cfg.models:
            raise APIError(404, f"the model {body.model!r} does not exist here; served: {', '.join(self.pool.names())}",
                           param="model", code="model_not_found")
        asked = getattr(body, "max_completion_tokens", None) or body.max_tokens
        max_tokens = asked or limits.default_max_tokens
        if max_tokens > limits.max_tokens:
            raise APIError(400, f"max_tokens is {max_tokens}; this server allows at most {limits.max_tokens}",
                           param="max_tokens")
        if body.n > limits.max_n:
            raise APIError(400, f"n is {body.n}; this server allows at most {limits.max_n}", param="n")
        if body.logprobs:
            raise APIError(400, "logprobs are not supported by honing serve", param="logprobs")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(body, name):
                raise APIError(400, f"{name} is not supported (use repetition_penalty)", param=name)
        for name in ("tools", "functions"):
            if getattr(body, name):
                raise APIError(400, f"{name} (tool calling) is not supported by honing serve", param=name)
        if body.response_format and body.response_format.get("type", "text") != "text":
            raise APIError(400, "only response_format type text is supported", param="response_format")
        return max_tokens

    def check_prompt(self, prompt_ids: list[int], max_tokens: int, target: Target, param: str,
                     retrieved: int | None = None) -> None:
        """APIError 400 for a prompt over the limits; `retrieved`: how many of its chunks retrieval put in it."""
        limit = self.cfg.limits.max_prompt_tokens
        what = "the prompt" if retrieved is None else f"the prompt with the {retrieved} chunks retrieved for it"
        fix = "" if retrieved is None else (f" (most of it is the retrieved context: ask a shorter question, or have "
                                            f"the server lower models.{target.name}.rag.k)")
        if len(prompt_ids) > limit:
            raise APIError(400, f"{what} is {len(prompt_ids)} tokens; this server allows at most {limit}{fix}",
                           param=param, code="context_length_exceeded")
        if len(prompt_ids) + max_tokens > target.capacity:
            raise APIError(400, f"{what} ({len(prompt_ids)} tokens) plus max_tokens ({max_tokens}) is over the "
                           f"model's context of {target.capacity} tokens{fix}", param="max_tokens",
                           code="context_length_exceeded")

    # ------------------------------------------------------------------ logging

    def record(self, entry: LoggedRequest) -> None:
        self.log.record(entry)
        model = entry.model if entry.model in self.cfg.models else "-"  # a client's made-up name is no series
        self.metrics.requests.labels(model, entry.endpoint, str(entry.status)).inc()
        if entry.status == 200:
            self.metrics.latency.labels(model).observe(entry.latency_s or 0.0)
            if entry.first_token_s is not None:
                self.metrics.first_token.labels(model).observe(entry.first_token_s)
            self.metrics.tokens.labels(model, "prompt").inc(entry.prompt_tokens)
            self.metrics.tokens.labels(model, "completion").inc(entry.completion_tokens)

    def show_version(self, target: Target) -> None:
        shown = self.shown_versions.get(target.name)
        if shown != target.label:
            if shown is not None:
                self.metrics.version.remove(target.name, shown)
            self.metrics.version.labels(target.name, target.label).set(1)
            self.shown_versions[target.name] = target.label


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def _seed(body: _Body) -> int:
    return body.seed if body.seed is not None else secrets.randbelow(2**31)


def create_app(server: Server) -> Any:
    """The FastAPI application over `server`."""
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        server.pool.close()
        server.log.close()

    app = FastAPI(title="honing serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError) -> Any:
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, err: HTTPException) -> Any:
        return JSONResponse(APIError(err.status_code, str(err.detail)).body(), status_code=err.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> Any:
        log.exception("unexpected error answering %s", request.url.path)
        return JSONResponse(APIError(500, f"internal error: {type(err).__name__}", "server_error").body(),
                            status_code=500)

    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok", "models": {name: target.label for name, target in server.pool.targets.items()}}

    @app.get("/metrics")
    async def metrics() -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        server.caller(request)
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "honing", "version": target.label,
             **_rag_entry(server.pool.retrievals.get(name))}
            for name, target in server.pool.targets.items()]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        return await _generate(request, "chat.completions")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await _generate(request, "completions")

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> Any:
        key_id, who = server.caller(request)
        body = server.parse(FeedbackBody, await server.read_json(request))
        if body.rating is None and body.correction is None and body.choice is None:
            raise APIError(400, "give a rating (up/down), a correction, or a choice", param="rating")
        try:
            feedback_id = await asyncio.to_thread(server.log.feedback, body.id, rating=body.rating,
                                                  answer_index=body.index, choice=body.choice,
                                                  correction=body.correction, comment=body.comment, key_id=key_id)
        except KeyError:
            raise APIError(404, f"no answered request {body.id!r} (it must be a response id this server logged, "
                           "asked with the same key)", param="id", code="not_found") from None
        except ValueError as err:
            raise APIError(400, str(err), param="index" if "answer_index" in str(err) else "choice") from None
        for kind in ("rating", "correction", "choice"):
            if getattr(body, kind) is not None:
                server.metrics.feedback.labels(kind).inc()
        return {"id": feedback_id, "object": "feedback", "response_id": body.id}

    async def _generate(request: Request, endpoint: str) -> Any:
        started, arrived = time.perf_counter(), time.time()
        deadline = time.monotonic() + server.cfg.limits.request_timeout_s
        prefix = "chatcmpl" if endpoint == "chat.completions" else "cmpl"
        entry = LoggedRequest(id=_new_id(prefix), endpoint=endpoint, status=0, created=arrived)
        held = _Held(server)  # what this request holds (a limiter slot, a target), each released exactly once
        generation: Generation | None = None
        streaming = False
        try:
            entry.key_id, caller = server.caller(request)
            refused = server.limiter.admit(caller)
            if refused:
                raise APIError(429, refused, "rate_limit_exceeded", code="rate_limit_exceeded")
            held.caller = caller
            body = server.parse(ChatBody if endpoint == "chat.completions" else CompletionBody,
                                await server.read_json(request))
            entry.model, entry.n, entry.stream = body.model, body.n, body.stream
            max_tokens = server.check_request(body)
            target = await _within(server.pool.target(body.model), deadline)
            held.hold(target)
            entry.model_version = target.version
            asked = _asked(body, endpoint, target)
            entry.request = {"messages": asked} if isinstance(asked, list) else {"prompt": asked}
            retrieval = server.pool.retrievals.get(body.model)
            if retrieval is not None:  # the log keeps what the model saw: the question with its chunks
                asked = await _ground(server, retrieval, asked, entry, deadline)
                entry.request = {"messages": asked} if isinstance(asked, list) else {"prompt": asked}
            prompt_ids = await asyncio.to_thread(_encode, asked, target)
            server.check_prompt(prompt_ids, max_tokens, target, "messages" if isinstance(asked, list) else "prompt",
                                None if entry.sources is None else len(entry.sources["chunks"]))
            entry.request.update({k: v for k, v in body.model_dump(exclude={"messages", "prompt"}).items()
                                  if v is not None})
            entry.prompt_tokens = len(prompt_ids)
            generation = Generation(target, prompt_ids, body, max_tokens, _seed(body))
            try:
                generation.start()
            except HoningError:  # the model is being unloaded: the server is stopping
                raise APIError(503, "the server is shutting down; retry", "server_error", code="unavailable") from None
            headers = {"x-honing-model-version": quote(target.label, safe="@:/")}
            if body.stream:
                ending = _Ending(server, generation, entry, started, held)
                response = _Stream(_stream(generation, body, entry, deadline, started, ending), ending,
                                   media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"})
                streaming = True  # from here the stream's ending releases and logs, however the stream ends
                return response
            while not generation.done:
                await generation.next_event(deadline, request)
            answer = _response(generation, body, entry, endpoint)
            _finish_entry(entry, generation, started, 200)
            await asyncio.to_thread(server.record, entry)  # on disk before the answer leaves
            return JSONResponse(answer, headers=headers)
        except BaseException as err:
            if generation is not None:
                generation.cancel()
            if not streaming:
                _failed_entry(entry, generation, started, err)
                await asyncio.shield(asyncio.to_thread(server.record, entry))
            raise
        finally:
            if not streaming:
                held.release()

    async def _stream(generation: Generation, body: _Body, entry: LoggedRequest, deadline: float, started: float,
                      ending: _Ending) -> AsyncIterator[bytes]:
        chat_mode = entry.endpoint == "chat.completions"
        kind = "chat.completion.chunk" if chat_mode else "text_completion"
        base = {"id": entry.id, "object": kind, "created": int(entry.created), "model": entry.model,
                "system_fingerprint": generation.target.label}

        first = _public_sources(entry)  # on the first chunk sent

        def event(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
            return {**base, "choices": choices, **extra}

        def sent(payload: dict[str, Any]) -> bytes:
            if first:
                payload = {**payload, **first}
                first.clear()
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()

        def delta(index: int, text: str, finish: str | None = None, role: bool = False) -> dict[str, Any]:
            if chat_mode:
                content = {"role": "assistant", "content": text} if role else ({"content": text} if text else {})
                return {"index": index, "delta": content, "logprobs": None, "finish_reason": finish}
            return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}

        try:
            if chat_mode:
                yield sent(event([delta(j, "", role=True) for j in range(body.n)]))
            endings: list[dict[str, Any]] = []  # each answer's last piece, held until the log has the request
            while not generation.done:
                _, index, _ = await generation.next_event(deadline)
                answer = generation.answers[index]
                final = answer.result is not None
                text = generation.text(index, final=final)
                piece = text[answer.sent:]
                answer.sent = max(answer.sent, len(text))
                if final:
                    endings.append(event([delta(index, piece, generation.finish_reason(index))]))
                elif piece:
                    yield sent(event([delta(index, piece)]))
            _finish_entry(entry, generation, started, 200)
            await ending.record()  # on disk before the answer's end is sent
            for piece in endings:
                yield sent(piece)
            if (body.stream_options or {}).get("include_usage"):
                yield sent(event([], usage=_usage(entry)))
            yield b"data: [DONE]\n\n"
        except APIError as err:
            await ending.fail(err)
            yield f"data: {json.dumps(err.body())}\n\n".encode()
        finally:  # also a client gone (cancelled) or the stream closed early: stop generating, keep the record
            await ending.fail(asyncio.CancelledError())

    return app


class _Stream(StreamingResponse):
    """A streamed answer whose ending (log row, released slot) runs even when its body never started."""

    def __init__(self, content: Any, ending: _Ending, **kwargs: Any):
        super().__init__(content, **kwargs)
        self.ending = ending

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.ending.fail(asyncio.CancelledError())


class _Ending:
    """How a streamed request ends, once: its log row written (answered or not) and what it held released."""

    def __init__(self, server: Server, generation: Generation, entry: LoggedRequest, started: float, held: _Held):
        self.server, self.generation, self.entry, self.started, self.held = server, generation, entry, started, held
        self.recorded = False

    async def record(self) -> None:
        if not self.recorded:
            self.recorded = True
            await asyncio.shield(asyncio.to_thread(self.server.record, self.entry))

    async def fail(self, err: BaseException) -> None:
        """Stop generating; log the request as `err` ended it (unless it was logged already); release."""
        self.generation.cancel()
        try:
            if not self.recorded:
                _failed_entry(self.entry, self.generation, self.started, err)
                await self.record()
        finally:
            self.held.release()


class _Held:
    """A request's limiter slot and target, released once whichever way the request ends."""

    def __init__(self, server: Server):
        self.server = server
        self.caller: str | None = None
        self.target: Target | None = None

    def hold(self, target: Target) -> None:
        """Own the hold pool.target() took on `target`."""
        self.target = target
        self.server.metrics.in_flight.labels(target.name).inc()
        self.server.show_version(target)

    def release(self) -> None:
        if self.caller is not None:
            self.server.limiter.done(self.caller)
            self.caller = None
        if self.target is not None:
            self.server.metrics.in_flight.labels(self.target.name).dec()
            self.target.release()
            self.target = None


async def _within(awaitable: Any, deadline: float) -> Any:
    """`awaitable`, or APIError 408 when the request's deadline passes first (a model still loading)."""
    try:
        return await asyncio.wait_for(awaitable, timeout=max(0.0, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        raise APIError(408, "the model was not ready within the server's request_timeout_s", "timeout_error",
                       code="request_timeout") from None


def _failed_entry(entry: LoggedRequest, generation: Generation | None, started: float, err: BaseException) -> None:
    """What the log keeps of a request that did not complete: its status, error type and any partial answers."""
    if isinstance(err, APIError):
        status, kind = err.status, err.kind
    elif isinstance(err, (asyncio.CancelledError, ClientDisconnect)):
        status, kind = 499, "client_disconnected"
    else:
        status, kind = 500, "server_error"
    if generation is not None:
        _finish_entry(entry, generation, started, status)
    else:
        entry.status, entry.latency_s = status, time.perf_counter() - started
    entry.error = kind


def _asked(body: _Body, endpoint: str, target: Target) -> list[dict[str, str]] | str:
    """What the model is asked: a chat request's messages (with the model's system prompt) or a completion's
    prompt text; APIError for what this server does not do."""
    from honing.data.prompts import as_messages

    if endpoint == "chat.completions":
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in body.messages]  # type: ignore[attr-defined]
        if messages[-1]["role"] == "assistant":
            raise APIError(400, "the last message must not be the assistant's (continuing an answer is not supported)",
                           param="messages")
        return as_messages(messages, target.system_prompt)  # what the model sees is what the log keeps
    prompt = body.prompt  # type: ignore[attr-defined]
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise APIError(400, "give one prompt per request (a list of several is not supported)", param="prompt")
        prompt = prompt[0]
    if body.echo:  # type: ignore[attr-defined]
        raise APIError(400, "echo is not supported", param="echo")
    return prompt


def _encode(asked: list[dict[str, str]] | str, target: Target) -> list[int]:
    """The prompt's token ids: messages through the model's chat template, a completion's text as it is."""
    from jinja2 import TemplateError

    from honing.data.prompts import encode_prompts

    if isinstance(asked, str):
        return encode_prompts(target.tokenizer, [asked], chat_template=False)[0]
    try:
        return encode_prompts(target.tokenizer, [asked])[0]
    except TemplateError as err:  # e.g. a template that wants user and assistant turns to alternate
        raise APIError(400, f"the model's chat template refuses these messages: {err}", param="messages") from None


async def _ground(server: Server, retrieval: Retrieval, asked: list[dict[str, str]] | str, entry: LoggedRequest,
                  deadline: float) -> list[dict[str, str]] | str:
    """`asked` with its question (the last user message; a completion's prompt) replaced by rag_prompt's turn over
    the chunks retrieved for it, as ChatModel does for `rag:` elsewhere; the chunks go in `entry.sources`."""
    from honing.data.prompts import last_user_text, with_question
    from honing.rag.ask import rag_prompt

    question = asked if isinstance(asked, str) else last_user_text(asked)
    if not question.strip():
        missing = isinstance(asked, list) and not any(m["role"] == "user" for m in asked)
        where = "prompt" if isinstance(asked, str) else "last user message"
        raise APIError(400, f"the model {entry.model!r} answers from an index: its question is the {where}, which "
                       f"is {'missing' if missing else 'empty'}", param="prompt" if isinstance(asked, str) else "messages")
    started = time.perf_counter()
    try:
        hits = await asyncio.wait_for(asyncio.wrap_future(retrieval.search(question)),
                                      timeout=max(0.0, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        raise APIError(408, "retrieval took longer than the server's request_timeout_s", "timeout_error",
                       code="request_timeout") from None
    except (asyncio.CancelledError, APIError):
        raise
    except Exception as err:  # noqa: BLE001  (a bug, or the index changed under the server: the log has it)
        log.error("%s: retrieval failed: %s: %s", entry.model, type(err).__name__, err)
        raise APIError(500, f"retrieval failed ({type(err).__name__}); see the server's log", "server_error") from None
    server.metrics.retrieval.labels(retrieval.name).observe(time.perf_counter() - started)
    entry.sources = {"index": str(retrieval.rag.index),
                     "chunks": [{"id": hit.id, "source": hit.chunk["source"], "path": hit.chunk["path"],
                                 "score": hit.score} for hit in hits]}
    return with_question(asked, rag_prompt(question, hits))


def _public_sources(entry: LoggedRequest) -> dict[str, Any]:
    """{"sources": [{id, source, score}]} for a response grounded by retrieval, else {} (the documents' paths on the
    server stay in the log: they are not the client's business)."""
    if entry.sources is None:
        return {}
    return {"sources": [{k: chunk[k] for k in ("id", "source", "score")} for chunk in entry.sources["chunks"]]}


def _rag_entry(retrieval: Retrieval | None) -> dict[str, Any]:
    """What /v1/models says of a model's retrieval: the index's name, k and mode (not the server's path)."""
    if retrieval is None:
        return {}
    from pathlib import Path

    rag = retrieval.rag
    return {"rag": {"index": Path(rag.index).name, "k": rag.k, "mode": rag.mode}}


def _choices(generation: Generation) -> list[dict[str, Any]]:
    return [{"index": j, "text": generation.text(j, final=True) if a.result is not None else
             generation.target.tokenizer.decode(a.tokens, skip_special_tokens=True),
             "finish_reason": generation.finish_reason(j) if a.result is not None else None,
             "completion_tokens": len(a.result.token_ids) if a.result is not None else len(a.tokens)}
            for j, a in enumerate(generation.answers)]


def _finish_entry(entry: LoggedRequest, generation: Generation, started: float, status: int) -> None:
    entry.status = status
    entry.latency_s = time.perf_counter() - started
    entry.first_token_s = generation.first_token_s
    entry.completion_tokens = generation.completion_tokens
    entry.finish_reason = generation.finish_reason(0) if generation.answers[0].result is not None else None
    if entry.choices is None:
        entry.choices = _choices(generation)


def _usage(entry: LoggedRequest) -> dict[str, int]:
    return {"prompt_tokens": entry.prompt_tokens, "completion_tokens": entry.completion_tokens,
            "total_tokens": entry.prompt_tokens + entry.completion_tokens}


def _response(generation: Generation, body: _Body, entry: LoggedRequest, endpoint: str) -> dict[str, Any]:
    entry.choices = _choices(generation)
    chat_mode = endpoint == "chat.completions"
    choices = []
    for choice in entry.choices:
        item: dict[str, Any] = {"index": choice["index"], "finish_reason": choice["finish_reason"], "logprobs": None}
        if chat_mode:
            item["message"] = {"role": "assistant", "content": choice["text"]}
        else:
            item["text"] = choice["text"]
        choices.append(item)
    entry.completion_tokens = generation.completion_tokens
    return {"id": entry.id, "object": "chat.completion" if chat_mode else "text_completion",
            "created": int(entry.created), "model": body.model, "system_fingerprint": generation.target.label,
            "choices": choices, "usage": _usage(entry), **_public_sources(entry)}
