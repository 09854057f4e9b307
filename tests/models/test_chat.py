"""ChatModel: the scripted, in-memory and local kinds answer as honing's batched generation does, with
token ids and finish reasons; the endpoint kind, against a real HTTP server on 127.0.0.1 through the
official openai client, retries 429 and 5xx, honours its timeout, keeps to its concurrency limit,
passes seeds, and never records the key."""

from __future__ import annotations

import json
import time

import pytest
import torch

from honing.config import ChatModelConfig, SamplingConfig
from honing.errors import HoningError
from honing.generate import generate, stop_token_ids
from honing.models.chat import ChatModel, Completion
from tests.fake_openai import serve

GREEDY = SamplingConfig(max_new_tokens=8, temperature=0.0)
PROMPTS = ["Hi", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}],
           "Tell me a long story about a fox, please."]


@pytest.fixture()
def lively_model(tiny_model):
    """Larger random weights, so greedy answers depend on the prompt."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in tiny_model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return tiny_model


# ----------------------------------------------------------------------- scripted, in memory, local


def test_scripted_model_answers_each_conversation_with_the_seed():
    model = ChatModel.scripted(lambda conversation, seed: f"{conversation[-1]['content']}:{seed}", name="echo")
    assert model.identity == {"kind": "scripted", "name": "echo"}
    assert model.texts(["a", [{"role": "user", "content": "b"}]], seed=4) == ["a:4", "b:4"]
    assert model.complete([]) == [] and model.calls == 1
    assert model.greedy() is model
    (completion,) = model.complete(["x"], system_prompt="sys")
    assert completion == Completion("x:None") and completion.token_ids == []
    with pytest.raises(HoningError, match="plain-text completion"):
        model.complete(["x"], chat_template=False)


def test_wrapped_model_matches_generate_and_returns_token_ids(lively_model, tokenizer):
    chat = ChatModel.wrap(lively_model, tokenizer, GREEDY, batch_size=2)
    completions = chat.complete(PROMPTS)
    assert [c.text for c in completions] == generate(lively_model, tokenizer, PROMPTS, GREEDY, batch_size=2,
                                                     progress=False)
    stops = set(stop_token_ids(tokenizer, lively_model))
    for completion in completions:
        assert 0 < completion.completion_tokens == len(completion.token_ids) <= GREEDY.max_new_tokens
        assert completion.prompt_tokens > 0
        assert tokenizer.decode(completion.token_ids, skip_special_tokens=True).strip() == completion.text
        stopped = completion.token_ids[-1] in stops
        assert completion.finish_reason == ("stop" if stopped else "length")
        assert stopped or len(completion.token_ids) == GREEDY.max_new_tokens
    # A shorter limit: every answer that did not stop ran into it.
    short = chat.complete(PROMPTS, GREEDY.model_copy(update={"max_new_tokens": 2}))
    assert all(c.finish_reason == "length" and len(c.token_ids) == 2 for c in short if c.token_ids[-1] not in stops)


def test_seed_and_greedy_clone(lively_model, tokenizer):
    chat = ChatModel.wrap(lively_model, tokenizer, SamplingConfig(max_new_tokens=8, temperature=1.0), batch_size=3)
    assert chat.texts(PROMPTS, seed=3) == chat.texts(PROMPTS, seed=3)
    greedy = chat.greedy()
    assert greedy.model is chat.model and greedy.sampling.temperature == 0.0 and chat.sampling.temperature == 1.0
    assert greedy.texts(PROMPTS) == generate(lively_model, tokenizer, PROMPTS, GREEDY.model_copy(update={"seed": 0}),
                                             batch_size=3, progress=False)


def test_sample_gives_groups_of_token_ids(lively_model, tokenizer):
    from honing.data.prompts import encode_prompts
    from honing.generate import sample_tokens

    chat = ChatModel.wrap(lively_model, tokenizer, SamplingConfig(max_new_tokens=6, temperature=1.0), batch_size=4)
    ids = encode_prompts(tokenizer, PROMPTS[:2])
    groups = chat.sample(ids, samples=2, seed=11)
    expected = sample_tokens(lively_model, tokenizer, ids, chat.sampling, samples=2, batch_size=4, seed=11)
    assert [[c.token_ids for c in group] for group in groups] == expected
    assert all(c.prompt_tokens == len(ids[i]) for i, group in enumerate(groups) for c in group)
    with pytest.raises(HoningError, match="needs a local model"):
        ChatModel.scripted(lambda c, s: "").sample(ids)


def test_load_local_model_records_identity(tiny_model_dir):
    chat = ChatModel.load(ChatModelConfig(path=str(tiny_model_dir)), GREEDY, role="target", batch_size=2)
    assert chat.kind == "local" and chat.identity["path"] == str(tiny_model_dir) and chat.identity["adapter"] is None
    assert set(chat.identity) == {"kind", "path", "adapter", "sha256", "adapter_sha256"}
    assert len(chat.identity["sha256"]) == 64
    assert chat.texts(PROMPTS) == generate(chat.model, chat.tokenizer, PROMPTS, GREEDY, batch_size=2, progress=False)


# ----------------------------------------------------------------------- endpoint


@pytest.fixture()
def server():
    with serve() as (handler, base):
        yield handler, base + "/v1"


def endpoint(url: str, **fields) -> ChatModelConfig:
    return ChatModelConfig(endpoint=url, endpoint_model="served", api_key_env="HONING_TEST_CHAT_KEY", **fields)


def test_endpoint_completions_seeds_usage_and_key(server, monkeypatch):
    handler, url = server
    monkeypatch.setenv("HONING_TEST_CHAT_KEY", "secret-key")
    chat = ChatModel.load(endpoint(url), SamplingConfig(max_new_tokens=7, temperature=0.5, top_p=0.8), role="teacher")
    assert chat.identity == {"kind": "endpoint", "endpoint": url, "model": "served"}
    assert "secret-key" not in json.dumps(chat.identity)
    completions = chat.complete(["a", "a long one", [{"role": "user", "content": "c"}]], seed=10)
    assert [c.text for c in completions] == ["a seed=10", "a long one seed=11", "c seed=12"]  # seed + i, in order
    assert [c.finish_reason for c in completions] == ["stop", "length", "stop"]
    assert all(c.token_ids == [] and (c.prompt_tokens, c.completion_tokens) == (5, 3) for c in completions)
    body = next(r["body"] for r in handler.requests if r["body"]["messages"][-1]["content"] == "a")
    assert body == {"model": "served", "messages": [{"role": "user", "content": "a"}], "temperature": 0.5,
                    "top_p": 0.8, "max_tokens": 7, "seed": 10}
    assert {r["path"] for r in handler.requests} == {"/v1/chat/completions"}
    assert {r["authorization"] for r in handler.requests} == {"Bearer secret-key"}
    # A conversation ending with the assistant's turn is continued (vLLM's continue_final_message).
    chat.complete([[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "I can't"}]])
    assert handler.requests[-1]["body"]["continue_final_message"] is True
    assert handler.requests[-1]["body"]["seed"] == 0  # sampled, no seed given: the sampling seed
    greedy = ChatModel.load(endpoint(url), SamplingConfig(max_new_tokens=7, temperature=0.0), role="judge")
    greedy.complete(["g"])
    assert "seed" not in handler.requests[-1]["body"]  # greedy and no seed asked for: none sent


def test_endpoint_retries_429_and_5xx_then_succeeds(server, monkeypatch):
    handler, url = server
    monkeypatch.delenv("HONING_TEST_CHAT_KEY", raising=False)
    handler.failures = [429, 500, 503]
    chat = ChatModel.load(endpoint(url, max_retries=3), role="judge")
    assert chat.texts(["x"]) == ["x seed=None"]
    assert len(handler.requests) == 4 and handler.requests[0]["authorization"] is None
    # One failure more than the retries allow: a one-line error naming the role and the URL.
    handler.failures = [500, 500, 500]
    with pytest.raises(HoningError, match=r"^attacker endpoint http://127\.0\.0\.1:\d+/v1/chat/completions answered "
                                          r"HTTP 500: .*busy"):
        ChatModel.load(endpoint(url, max_retries=2), role="attacker").texts(["y"])


def test_endpoint_timeout_is_honoured(server):
    handler, url = server
    handler.delay = 1.5
    chat = ChatModel.load(endpoint(url, timeout_s=0.2, max_retries=1), role="target")
    started = time.perf_counter()
    with pytest.raises(HoningError, match=r"^target endpoint .* gave no answer within timeout_s=0\.2 s"):
        chat.texts(["slow"])
    assert time.perf_counter() - started < 1.4  # did not wait for the server's answer
    assert len(handler.requests) == 2  # the timed-out request was tried again once


def test_endpoint_keeps_to_its_concurrency_limit(server):
    handler, url = server
    handler.delay = 0.2
    prompts = [f"p{i}" for i in range(9)]
    limited = ChatModel.load(endpoint(url, concurrency=3), role="teacher")
    assert limited.texts(prompts) == [f"p{i} seed=None" for i in range(9)]
    assert handler.most_active == 3
    handler.most_active = 0
    ChatModel.load(endpoint(url, concurrency=1), role="teacher").texts(prompts[:3])
    assert handler.most_active == 1


def test_endpoint_config_is_one_shape():
    with pytest.raises(ValueError, match="endpoint_model"):
        ChatModelConfig(endpoint="http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="either endpoint or path/adapter"):
        ChatModelConfig(endpoint="http://127.0.0.1:1/v1", endpoint_model="m", adapter="runs/x")


def test_an_answer_the_client_cannot_read_is_one_line(monkeypatch):
    from tests.fake_openai import FakeOpenAI

    class Broken(FakeOpenAI):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self._send(200, b"[1, 2, 3]")

    import threading
    from http.server import ThreadingHTTPServer

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        chat = ChatModel.load(endpoint(f"http://127.0.0.1:{httpd.server_address[1]}/v1", max_retries=0),
                              SamplingConfig(temperature=0.0), role="judge")
        with pytest.raises(HoningError, match=r"^judge endpoint .* (gave an answer|returned no)"):
            chat.texts(["q"])
    finally:
        httpd.shutdown()
        httpd.server_close()
