"""The scheduler: continuous batching over a static KV cache, with shared prefixes prefilled once.

    Engine(model, tokenizer, settings).run(requests, progress=...) -> list[Result], in the requests' order

A run keeps up to `max_batch` sequences in flight. Each step is one forward pass that decodes one token for
every live row and prefills the prompts of the requests taking free slots; a row that ends (a stop token,
a stop string, its max_new_tokens) leaves at once and the next queued request takes its slot in the next
step, so the batch never waits for its longest answer and no row is computed after it ends.

Prefixes. Before a run, the prompts are sorted and each one's longest common prefix with its neighbours
found; a prefix that two or more requests share (a system prompt, a few-shot block, a GRPO group's prompt)
is prefilled once, its keys and values kept, and copied into each slot that starts with it. The prompt's
last token is always computed in the request's own prefill, so its first answer token comes from its own
forward pass. Kept prefixes outlive the run (up to `prefix_cache_mb`) and are dropped when the weights
change (an optimiser step, a merge, a move to another device): each entry records the weights' version.
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from honing.engine.decoder import Decoder, KVCache
from honing.engine.sampling import Sampling, next_tokens

RECENT_PROMPTS = 32
"""serve() compares each new prompt with this many recent ones to find a prefix worth keeping."""
MIN_SHARED_PREFIX = 16
"""Fewer shared tokens than this are not worth a cache entry and a copy."""


@dataclass
class Request:
    """One prompt to answer, with its own settings."""

    prompt_ids: list[int]
    max_new_tokens: int = 256
    sampling: Sampling = Sampling()
    seed: int = 0
    stop: tuple[str, ...] = ()
    """Strings that end the answer; the answer's text stops before the first one (OpenAI's `stop`)."""
    stop_token_ids: frozenset[int] = frozenset()
    """Tokens that end the answer; the one that ends it is kept in the token ids."""
    on_token: Callable[[int], None] | None = None
    """Called with each new token as it is chosen (streaming)."""
    draft_tokens: int = 0
    """Greedy requests only: up to this many tokens guessed per step by prompt lookup and checked in the
    same pass (0: none). The answer is the one plain greedy decoding gives; only the steps are fewer."""
    on_finish: Callable[[Result], None] | None = None
    """Called with the Result as soon as this request ends (a server answers it while others run on)."""
    cancelled: bool = False
    """Set (from any thread) to stop the request at the next step; it ends with finish_reason "cancelled"."""


@dataclass
class Result:
    """The answer to one Request."""

    token_ids: list[int]
    finish_reason: Literal["stop", "length", "cancelled"]
    prompt_tokens: int
    cached_tokens: int = 0
    """Prompt tokens that came from a shared prefix instead of being computed for this request."""
    stop_text: int | None = None
    """When a stop string ended the answer: the length of the text before it."""
    first_token_s: float = 0.0
    """Seconds from the start of the run to this request's first token."""
    total_s: float = 0.0
    """Seconds from the start of the run to its last token."""


@dataclass
class RunStats:
    """What a run computed: prompt tokens prefilled, prompt tokens taken from shared prefixes, decode steps."""

    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0
    decode_steps: int = 0
    rows_per_step: float = 0.0
    drafted: int = 0
    """Tokens guessed by prompt lookup, and of them accepted (each saves a step)."""
    accepted: int = 0
    seconds: float = 0.0


@dataclass
class _Live:
    index: int
    request: Request
    tokens: list[int]
    generator: torch.Generator | None
    seen: torch.Tensor | None
    cached: int
    first_token_s: float = 0.0

    def room(self, capacity: int) -> int:
        """Guesses this row can still take: within its max_new_tokens and the cache."""
        return max(0, min(self.request.max_new_tokens - len(self.tokens) - 1,
                          capacity - len(self.request.prompt_ids) - len(self.tokens) - 1))


class PrefixCache:
    """Prefilled prefixes (token ids -> per-layer keys and values), least recently used dropped first."""

    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self.entries: OrderedDict[tuple[int, ...], tuple[list[torch.Tensor], list[torch.Tensor]]] = OrderedDict()
        self.version: Any = None
        self.used = 0

    def clear(self) -> None:
        self.entries.clear()
        self.used = 0

    def check_version(self, version: Any) -> None:
        if version != self.version:
            self.clear()
            self.version = version

    def get(self, ids: tuple[int, ...]) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
        entry = self.entries.get(ids)
        if entry is not None:
            self.entries.move_to_end(ids)
        return entry

    def longest(self, ids: Sequence[int]) -> tuple[int, ...] | None:
        """The longest kept prefix of `ids`."""
        for key in sorted(self.entries, key=len, reverse=True):
            if len(key) <= len(ids) and tuple(ids[:len(key)]) == key:
                return key
        return None

    def put(self, ids: tuple[int, ...], keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        size = sum(t.numel() * t.element_size() for t in keys + values)
        if size > self.budget:
            return
        while self.used + size > self.budget and self.entries:
            _, (old_k, old_v) = self.entries.popitem(last=False)
            self.used -= sum(t.numel() * t.element_size() for t in old_k + old_v)
        self.entries[ids] = (keys, values)
        self.used += size


def shared_prefixes(prompts: Sequence[Sequence[int]], minimum: int = MIN_SHARED_PREFIX) -> list[int]:
    """For each prompt, how many of its first tokens it shares with another prompt of the list (0 when fewer
    than `minimum`), never its last token."""
    order = sorted(range(len(prompts)), key=lambda i: prompts[i])
    shared = [0] * len(prompts)
    for a, b in zip(order, order[1:]):
        x, y = prompts[a], prompts[b]
        n = 0
        limit = min(len(x), len(y))
        while n < limit and x[n] == y[n]:
            n += 1
        shared[a] = max(shared[a], n)
        shared[b] = max(shared[b], n)
    return [min(n, len(p) - 1) if n >= minimum else 0 for n, p in zip(shared, prompts)]


def weights_version(model: torch.nn.Module) -> int:
    """Changes whenever a parameter is replaced, moved, cast or modified in place (torch counts in-place
    writes; `.to()` keeps the Parameter object but not its storage)."""
    return hash(tuple((id(p), p._version, p.data_ptr(), p.dtype, p.device) for p in model.parameters()))


class Engine:
    """Generation for one local model. `run` is not re-entrant: one run at a time per engine."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, max_batch: int = 16, prefix_cache_mb: int = 512,
                 kv_cache_mb: int = 4096):
        self._model = weakref.ref(model)  # the engine lives as long as its model, never longer (engine_for)
        self.tokenizer = tokenizer
        self.decoder = Decoder(model)
        self.max_batch = max_batch
        self.kv_budget = kv_cache_mb * 2**20
        self.prefixes = PrefixCache(prefix_cache_mb * 2**20)
        self.step_tokens = 40
        """Guesses are added to a step only while it holds fewer tokens than this (beyond it the pass costs
        more than the steps it saves, measured on 2 CPU cores)."""
        self.last: RunStats = RunStats()
        self._recent: deque[list[int]] = deque(maxlen=RECENT_PROMPTS)
        """serve(): the latest prompts, so a prefix they share with a new one is kept and reused."""

    @property
    def model(self) -> torch.nn.Module:
        model = self._model()
        if model is None:
            raise RuntimeError("the engine's model no longer exists")
        return model

    def run(self, requests: Sequence[Request], *, progress: Callable[[int], None] | None = None,
            max_batch: int | None = None) -> list[Result]:
        """Answer every request; results in the requests' order."""
        if not requests:
            return []
        for i, request in enumerate(requests):
            if not request.prompt_ids:
                raise ValueError(f"request {i} has an empty prompt")
        started = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                results = self._run(requests, max_batch or self.max_batch, progress, started)
        finally:
            self.model.train(was_training)
        self.last.seconds = time.perf_counter() - started
        return results

    def serve_cache(self, capacity: int, max_batch: int | None = None) -> KVCache:
        """A KV cache for serve(): as many slots of `capacity` tokens as max_batch and kv_cache_mb allow."""
        slots = max(1, min(max_batch or self.max_batch,
                           self.kv_budget // max(1, capacity * self.decoder.bytes_per_token())))
        return self.decoder.new_cache(slots, capacity)

    def serve(self, feed: Callable[[int], Sequence[Request]], *, capacity: int, max_batch: int | None = None,
              cache: KVCache | None = None) -> None:
        """Answer requests as they arrive: before each step `feed(free)` hands over up to `free` new requests
        (it must not block); each is answered through its `on_finish` as soon as it ends. Returns when `feed`
        has nothing and every row has ended. A request longer than `capacity` (prompt + max_new_tokens) gets
        fewer new tokens. The KV cache (`cache`, else one of the engine's own) is kept between calls."""
        if cache is None:
            cache = getattr(self, "_serve_cache", None)
            if cache is None or cache.capacity != capacity:
                self._serve_cache = cache = self.serve_cache(capacity, max_batch)
        cache.lengths = [0] * cache.slots
        started = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                self._run([], cache.slots, None, started, feed=feed, cache=cache)
        finally:
            self.model.train(was_training)
        self.last.seconds = time.perf_counter() - started

    # ------------------------------------------------------------------ the loop

    def _run(self, requests: Sequence[Request], max_batch: int, progress, started: float,
             feed: Callable[[int], Sequence[Request]] | None = None, cache: KVCache | None = None) -> list[Result]:
        decoder = self.decoder
        self.prefixes.check_version(weights_version(self.model))
        requests = list(requests)
        prompts = [r.prompt_ids for r in requests]
        shared = shared_prefixes(prompts) if self.prefixes.budget else [0] * len(prompts)
        if cache is None:
            capacity = max(len(r.prompt_ids) + r.max_new_tokens for r in requests)
            slots = max(1, min(max_batch, len(requests),
                               self.kv_budget // max(1, capacity * decoder.bytes_per_token())))
            cache = decoder.new_cache(slots, capacity)
        slots = cache.slots
        stats = RunStats(requests=len(requests))
        self.last = stats
        results: list[Result | None] = [None] * len(requests)
        queue = deque(range(len(requests)))
        live: list[_Live] = []
        rows_total = 0

        def take_new() -> bool:
            """Queue what `feed` hands over for the free slots; True when anything came."""
            free = slots - len(live) - len(queue)
            if feed is None or free <= 0:
                return False
            new = []
            for request in feed(free):
                if request.prompt_ids:
                    new.append(request)
                elif request.on_finish:  # nothing to continue from: an empty answer
                    request.on_finish(Result([], "length", 0))
            if not new:
                return False
            for request in new:
                request.max_new_tokens = max(1, min(request.max_new_tokens, cache.capacity - len(request.prompt_ids)))
            queue.extend(range(len(requests), len(requests) + len(new)))
            requests.extend(new)
            if self.prefixes.budget:  # shared with each other or with a recent prompt (a server's system prompt)
                recent = list(self._recent)
                shared.extend(shared_prefixes(recent + [r.prompt_ids for r in new])[len(recent):])
                self._recent.extend(r.prompt_ids for r in new)
            else:
                shared.extend([0] * len(new))
            stats.requests += len(new)
            return True

        def finish(row: int, reason: Literal["stop", "length", "cancelled"], stop_text: int | None = None) -> None:
            item = live[row]
            now = time.perf_counter() - started
            result = Result(item.tokens, reason, len(item.request.prompt_ids), item.cached, stop_text,
                            item.first_token_s, now)
            if feed is None:
                results[item.index] = result
            if item.request.on_finish:
                item.request.on_finish(result)
            stats.generated_tokens += len(item.tokens)
            last = len(live) - 1
            if row != last:
                cache.move(last, row)
                live[row] = live[last]
            cache.lengths[last] = 0
            live.pop()
            if progress:
                progress(1)

        def accept(row: int, token: int) -> bool:
            """Add `token` to row's answer; True when the row ended (and left)."""
            item = live[row]
            item.tokens.append(token)
            request = item.request
            if not item.first_token_s:
                item.first_token_s = time.perf_counter() - started
            if request.on_token:
                request.on_token(token)
            if item.seen is not None:
                item.seen = torch.cat([item.seen, torch.tensor([token], device=item.seen.device)]).unique()
            if token in request.stop_token_ids:
                finish(row, "stop")
                return True
            if request.stop:
                cut = _stop_position(self.tokenizer, item.tokens, request.stop)
                if cut is not None:
                    finish(row, "stop", cut)
                    return True
            if len(item.tokens) >= request.max_new_tokens:
                finish(row, "length")
                return True
            return False

        while True:
            take_new()
            if not queue and not live:
                break
            for row in range(len(live) - 1, -1, -1):  # stopped by the caller (a client gone, a timeout)
                if live[row].request.cancelled:
                    finish(row, "cancelled")
            # One pass per step: every live row's last token (and the tokens guessed to follow it), plus the
            # prompts of requests taking free slots.
            chunks = [[item.tokens[-1]] for item in live]
            budget = self.step_tokens - len(live)
            for row, item in enumerate(live):
                if budget <= 0:
                    break
                if item.request.draft_tokens and item.request.sampling.greedy and item.seen is None:
                    draft = lookup_draft(item.request.prompt_ids, item.tokens,
                                         min(item.request.draft_tokens, budget, item.room(cache.capacity)))
                    chunks[row] += draft
                    budget -= len(draft)
            for _ in range(min(len(queue), slots - len(live))):
                index = queue.popleft()
                request = requests[index]
                if feed is not None:
                    requests[index] = None  # type: ignore[call-overload]  (a long-running server keeps no old requests)
                if request.cancelled:
                    result = Result([], "cancelled", len(request.prompt_ids))
                    if feed is None:
                        results[index] = result
                    if request.on_finish:
                        request.on_finish(result)
                    continue
                start, cached = self._start(cache, len(chunks), request.prompt_ids, shared[index])
                stats.prompt_tokens += len(request.prompt_ids)
                stats.cached_tokens += cached
                chunks.append(request.prompt_ids[start:])
                seen = None
                if request.sampling.repetition_penalty != 1.0:
                    seen = torch.tensor(request.prompt_ids, device=decoder.device).unique()
                generator = None
                if not request.sampling.greedy:
                    generator = torch.Generator(device=decoder.device)
                    generator.manual_seed(request.seed)
                live.append(_Live(index, request, [], generator, seen, cached))
            if not live:
                continue
            spans = _spans(chunks, len(live) - sum(1 for i in live if not i.tokens))
            hidden = decoder.forward(cache, chunks, wanted=[p for span in spans for p in span])
            stats.decode_steps += 1
            rows_total += len(live)
            settings = [i.request.sampling for i, span in zip(live, spans) for _ in span]
            chosen = next_tokens(decoder.logits(hidden), settings, [i.seen for i, span in zip(live, spans) for _ in span],
                                 [i.generator for i, span in zip(live, spans) for _ in span])
            # Each row's tokens: the first choice, then each guess that equals the choice before it (greedy).
            picks, at = [], 0
            for row, span in enumerate(spans):
                mine = chosen[at:at + len(span)]
                at += len(span)
                taken = [mine[0]]
                for guess, choice in zip(chunks[row][1:len(span)], mine[1:]):
                    if taken[-1] != guess:
                        break
                    taken.append(choice)
                if len(span) > 1:
                    stats.drafted += len(span) - 1
                    stats.accepted += len(taken) - 1
                    cache.lengths[row] -= len(span) - len(taken)  # keys of rejected guesses are left to be overwritten
                picks.append(taken)
            # Accept from the last row down: a row that leaves is replaced by the last one, already handled.
            for row in range(len(live) - 1, -1, -1):
                for token in picks[row]:
                    if accept(row, token):
                        break
        stats.rows_per_step = rows_total / max(1, stats.decode_steps)
        return results  # type: ignore[return-value]  (every request finished)

    def _start(self, cache: KVCache, row: int, prompt: list[int], shared: int) -> tuple[int, int]:
        """Put the longest available prefix of `prompt` into slot `row`: (tokens now in the slot, tokens of
        them taken from kept prefixes rather than computed for this request)."""
        if shared <= 0:  # nothing shared within this run; a prefix kept from an earlier one may still serve
            kept = self.prefixes.longest(prompt[:-1]) if self.prefixes.entries else None
            if kept is None:
                cache.lengths[row] = 0
                return 0, 0
            cache.load(row, *self.prefixes.get(kept))  # type: ignore[misc]
            return len(kept), len(kept)
        key = tuple(prompt[:shared])
        entry = self.prefixes.get(key)
        if entry is not None:
            cache.load(row, *entry)
            return shared, shared
        # Build it on the longest kept prefix of it (a system prompt under a few-shot block), then keep it.
        base = self.prefixes.longest(key)
        reused = 0
        if base is not None:
            cache.load(row, *self.prefixes.entries[base])
            reused = len(base)
        else:
            cache.lengths[row] = 0
        self.decoder.prefill(cache, row, prompt[reused:shared])
        self.prefixes.put(key, *cache.prefix(row, shared))
        return shared, reused


def _spans(chunks: list[list[int]], decoding: int) -> list[list[int]]:
    """Flat positions whose next-token choice each row needs: for a decoding row with guesses, every one of
    its positions; for the others (one token, or a new row's prompt), its last."""
    spans, at = [], 0
    for row, chunk in enumerate(chunks):
        spans.append(list(range(at, at + len(chunk))) if row < decoding and len(chunk) > 1 else [at + len(chunk) - 1])
        at += len(chunk)
    return spans


def lookup_draft(prompt: list[int], answer: list[int], most: int, longest_ngram: int = 3) -> list[int]:
    """Prompt-lookup guesses: the tokens that followed the latest earlier occurrence of the answer's last
    n tokens (n = 3, then 2) in prompt + answer; empty when there is none."""
    if most <= 0:
        return []
    context = prompt + answer
    for n in range(min(longest_ngram, len(context) - 1), 1, -1):
        tail = context[-n:]
        for start in range(len(context) - n - 1, -1, -1):
            if context[start:start + n] == tail:
                return context[start + n:start + n + most]
    return []


def _stop_position(tokenizer: Any, tokens: list[int], stops: tuple[str, ...]) -> int | None:
    """Where the first stop string starts in the decoded answer, or None."""
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    found = [text.find(s) for s in stops if s and s in text]
    return min(found) if found else None
