"""Engine.serve, the server's way in: requests fed between steps answer exactly as a batch run does, a
cancelled one stops at the next step, and a cache that was never written holds nothing attention can see."""

from __future__ import annotations

import math

import torch

from honing.engine import Engine, Request, Sampling
from tests.engine.test_engine import _prompts, _reference, _requests


def _feeder(requests, arrivals):
    """feed(free) handing requests over in the given groups, one group per call (an empty group: none yet)."""
    groups = [list(group) for group in arrivals]

    def feed(free):
        if not groups:
            return []
        group = groups[0]
        taken, groups[0] = group[:free], group[free:]
        if not groups[0]:
            groups.pop(0)
        return [requests[i] for i in taken]
    return feed


def test_requests_fed_while_others_run_answer_as_a_batch_does(tiny_model, tokenizer):
    prompts = _prompts(tokenizer)
    expected = _reference(tiny_model, tokenizer, prompts, 20)
    requests = _requests(tokenizer, tiny_model, prompts, 20)
    finished = {}
    for i, request in enumerate(requests):
        request.on_finish = lambda result, i=i: finished.setdefault(i, result)
    engine = Engine(tiny_model, tokenizer, max_batch=3)
    # Two at first, then none for a step, then the rest as slots free up.
    engine.serve(_feeder(requests, [[0, 1], [], [2, 3, 4], [5], [6, 7]]), capacity=256)
    assert sorted(finished) == list(range(len(prompts)))
    assert [finished[i].token_ids for i in range(len(prompts))] == expected


def test_a_cancelled_request_stops_and_the_others_finish(tiny_model, tokenizer):
    prompts = _prompts(tokenizer, 3)
    requests = _requests(tokenizer, tiny_model, prompts, 60)
    seen, finished = [], {}

    def on_token(token):
        seen.append(token)
        if len(seen) == 5:
            requests[1].cancelled = True
    requests[1].on_token = on_token
    for i, request in enumerate(requests):
        request.on_finish = lambda result, i=i: finished.setdefault(i, result)
    requests[2].cancelled = True  # before it ever runs
    Engine(tiny_model, tokenizer, max_batch=4).serve(_feeder(requests, [[0, 1, 2]]), capacity=256)
    assert finished[1].finish_reason == "cancelled" and len(finished[1].token_ids) <= 6
    assert finished[2].finish_reason == "cancelled" and finished[2].token_ids == []
    assert finished[0].token_ids == _reference(tiny_model, tokenizer, prompts[:1], 60)[0]


def test_an_unwritten_cache_is_never_read(tiny_model, tokenizer):
    """The KV cache is allocated, not cleared; fill it with NaN as recycled memory might be, and the answers
    are still exact: positions are zeroed before any row's attention reaches them."""
    prompts = _prompts(tokenizer)
    expected = _reference(tiny_model, tokenizer, prompts, 16)
    engine = Engine(tiny_model, tokenizer, max_batch=8, prefix_cache_mb=0)
    cache = engine.decoder.new_cache(8, 300)
    for tensor in cache.keys + cache.values:
        tensor.fill_(math.nan)
    requests = _requests(tokenizer, tiny_model, prompts, 16)
    finished = {}
    for i, request in enumerate(requests):
        request.on_finish = lambda result, i=i: finished.setdefault(i, result)
    engine.serve(_feeder(requests, [[0, 1, 2, 3], [4, 5, 6, 7]]), capacity=300, cache=cache)
    assert [finished[i].token_ids for i in range(len(prompts))] == expected
    assert 0 < cache.zeroed < 300  # only as far as sequences reached
    assert not torch.isnan(cache.keys[0][:, :, :cache.zeroed]).any()


def test_sampled_answers_do_not_depend_on_when_they_arrive(tiny_model, tokenizer):
    prompts = _prompts(tokenizer, 4)
    sampling = Sampling(temperature=1.0, top_p=0.9)
    alone = [Engine(tiny_model, tokenizer).run([r])[0].token_ids
             for r in _requests(tokenizer, tiny_model, prompts, 12, sampling, seeds=[7, 8, 9, 10])]
    requests = _requests(tokenizer, tiny_model, prompts, 12, sampling, seeds=[7, 8, 9, 10])
    finished = {}
    for i, request in enumerate(requests):
        request.on_finish = lambda result, i=i: finished.setdefault(i, result)
    Engine(tiny_model, tokenizer, max_batch=2).serve(_feeder(requests, [[3], [], [0, 1], [2]]), capacity=128)
    assert [finished[i].token_ids for i in range(4)] == alone


def test_an_empty_prompt_answers_empty_instead_of_hanging(tiny_model, tokenizer):
    finished = []
    empty = Request([], 5, on_finish=finished.append)
    Engine(tiny_model, tokenizer).serve(_feeder([empty], [[0]]), capacity=64)
    assert len(finished) == 1 and finished[0].token_ids == []


def test_a_prefix_shared_with_an_earlier_request_is_kept_and_reused(tiny_model, tokenizer):
    """Requests arriving one at a time (as a server sees them) still share their system prompt: the second
    builds and keeps it, the later ones start from it; the answers are unchanged."""
    prompts = _prompts(tokenizer, 4)
    expected = _reference(tiny_model, tokenizer, prompts, 8)
    requests = _requests(tokenizer, tiny_model, prompts, 8)
    finished = {}
    for i, request in enumerate(requests):
        request.on_finish = lambda result, i=i: finished.setdefault(i, result)
    engine = Engine(tiny_model, tokenizer, max_batch=1)
    for i in range(4):  # one serve() per request: nothing arrives together
        engine.serve(_feeder(requests, [[i]]), capacity=256)
    assert [finished[i].token_ids for i in range(4)] == expected
    assert finished[0].cached_tokens == 0 and finished[1].cached_tokens == 0
    assert finished[2].cached_tokens > 16 and finished[3].cached_tokens == finished[2].cached_tokens
