"""`honing serve` as a client sees it: the official openai client over a real socket on 127.0.0.1.

A 2-layer random llama answers (its words are noise; what is checked is the protocol, the limits, the log and
what survives a kill -9). The registry tests serve two LoRA runs over that one base.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import openai
import pytest

from honing.config import SFTConfig, load_config
from honing.registry import actions
from honing.registry.store import Registry
from tests.serve.conftest import HONING, serving, wait_exit

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "data"
HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def lora_runs(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """Two LoRA runs over the tiny model (different seeds: different answers)."""
    from honing.stages.sft import sft

    root = tmp_path_factory.mktemp("serve-runs")
    made = {}
    for name, seed in (("a", 1), ("b", 2)):
        sft(load_config(SFTConfig, None, [
            f"model.path={tiny_model_dir}", f"data.train={DATA / 'chat.jsonl'}", f"output.dir={root / name}",
            "data.max_length=64", "train.max_steps=3", "train.micro_batch_size=4", f"train.seed={seed}",
            "train.lr=0.05", "adapter.rank=4", "output.tensorboard=false"]))
        made[name] = root / name
    return made


@pytest.fixture(scope="module")
def tiny_server(tiny_model_dir, tmp_path_factory):
    """One server of the tiny model with the default settings, shared by the tests that need nothing else."""
    with serving(tmp_path_factory.mktemp("shared-server"), f"model={tiny_model_dir}") as server:
        yield server


def _http(method: str, url: str, body: bytes | dict | None = None, headers: dict | None = None) -> tuple[int, Any]:
    """(status, decoded JSON or text) of one plain HTTP request: what a client library would never send."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def _rows(log: Path) -> list[dict]:
    conn = sqlite3.connect(log)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY created")]
    finally:
        conn.close()


# --------------------------------------------------------------------------- the API


def test_chat_streaming_models_and_errors_through_the_official_client(tiny_server, tiny_model_dir):
    with nullcontext(tiny_server) as server:
        client = server.client()
        name = tiny_model_dir.name
        listed = client.models.list()
        assert [m.id for m in listed.data] == [name]

        reply = client.chat.completions.create(model=name, messages=HELLO, max_tokens=8, temperature=0, seed=1)
        assert reply.id.startswith("chatcmpl-") and reply.object == "chat.completion"
        assert reply.choices[0].message.role == "assistant" and reply.choices[0].finish_reason in ("stop", "length")
        assert reply.usage.prompt_tokens > 0 and 0 < reply.usage.completion_tokens <= 8

        # Greedy is deterministic, and streaming gives the same text piece by piece.
        again = client.chat.completions.create(model=name, messages=HELLO, max_tokens=8, temperature=0)
        assert again.choices[0].message.content == reply.choices[0].message.content
        chunks = list(client.chat.completions.create(model=name, messages=HELLO, max_tokens=8, temperature=0,
                                                     stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == reply.choices[0].message.content
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == reply.choices[0].finish_reason
        assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens

        # n answers, each with its own seed; the same seed gives the same answers.
        sampled = client.chat.completions.create(model=name, messages=HELLO, max_tokens=6, n=2, temperature=1.0,
                                                 seed=7)
        resampled = client.chat.completions.create(model=name, messages=HELLO, max_tokens=6, n=2, temperature=1.0,
                                                   seed=7)
        assert [c.index for c in sampled.choices] == [0, 1]
        assert [c.message.content for c in sampled.choices] == [c.message.content for c in resampled.choices]

        # A stop string ends the answer before it, streamed or not (none of it is ever streamed). A seeded sample
        # is the same answer every time, so the stopped one is the same answer cut short.
        seeded = {"model": name, "messages": HELLO, "max_tokens": 8, "temperature": 1.0, "seed": 3}
        full = client.chat.completions.create(**seeded).choices[0].message.content
        assert len(full.strip()) >= 4, full
        for cut in (full.strip()[1:4], full.strip()[2]):
            stopped = client.chat.completions.create(**seeded, stop=[cut])
            assert stopped.choices[0].message.content == full.split(cut)[0]
            assert stopped.choices[0].finish_reason == "stop"
            streamed = client.chat.completions.create(**seeded, stop=[cut], stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == \
                stopped.choices[0].message.content

        completion = client.completions.create(model=name, prompt="Once upon a time", max_tokens=5, temperature=0)
        assert completion.object == "text_completion" and completion.usage.completion_tokens <= 5

        # Extremes that must not break the batch they join: a vanishing temperature is greedy, a huge seed wraps.
        tiny_t = client.chat.completions.create(model=name, messages=HELLO, max_tokens=8, temperature=1e-40)
        assert tiny_t.choices[0].message.content == reply.choices[0].message.content
        assert client.chat.completions.create(model=name, messages=HELLO, max_tokens=2, seed=2**64 + 5).choices

        with pytest.raises(openai.NotFoundError) as err:
            client.chat.completions.create(model="nope", messages=HELLO)
        assert err.value.body["code"] == "model_not_found"
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model=name, messages=HELLO, temperature="hot")  # type: ignore[arg-type]
        assert err.value.body["param"] == "temperature" and err.value.body["type"] == "invalid_request_error"
        with pytest.raises(openai.BadRequestError, match="max_tokens"):
            client.chat.completions.create(model=name, messages=HELLO, max_tokens=10**6)
        with pytest.raises(openai.BadRequestError, match="messages"):
            client.chat.completions.create(model=name, messages=[])
        with pytest.raises(openai.BadRequestError) as err:  # over the model's 512 positions
            client.chat.completions.create(model=name, messages=[{"role": "user", "content": "word " * 600}])
        assert err.value.body["code"] == "context_length_exceeded"
        for refused in ({"logprobs": True}, {"tools": [{"type": "function", "function": {"name": "f"}}]},
                        {"response_format": {"type": "json_object"}}, {"presence_penalty": 1.0}):
            with pytest.raises(openai.BadRequestError) as err:
                client.chat.completions.create(model=name, messages=HELLO, **refused)
            assert err.value.body["param"] == next(iter(refused))

        # What no client library sends: broken JSON, a non-object, a huge body, an unknown route.
        root = server.url.removesuffix("/v1")
        for body in (b"{not json", b"[1, 2]", b"\xff\xfe\x00", b'{"model": 3, "messages": "x"}'):
            status, answer = _http("POST", server.url + "/chat/completions", body)
            assert status == 400 and set(answer["error"]) == {"message", "type", "param", "code"}
        # Bodies that broke the JSON reader's own limits: refused, and no caller's slot is kept (the limit is 32).
        for body in (b"[" * 100_000, b'{"model": ' + b"9" * 5000 + b"}") * 20:
            status, answer = _http("POST", server.url + "/chat/completions", body)
            assert status == 400, answer
        status, answer = _http("POST", server.url + "/chat/completions", b"x" * (2 * 1024 * 1024))
        assert status == 413 and answer["error"]["code"] == "body_too_large"
        assert _http("GET", server.url + "/nowhere")[0] == 404
        assert _http("GET", root + "/health")[1]["status"] == "ok"
        metrics = _http("GET", root + "/metrics")[1]
        assert 'honing_requests_total{endpoint="chat.completions",model="' + name + '",status="200"}' in metrics
        assert "honing_time_to_first_token_seconds_bucket" in metrics
        assert 'model="nope"' not in metrics  # a made-up name is not a series of its own

        # Still answering after all of that.
        assert client.chat.completions.create(model=name, messages=HELLO, max_tokens=2, temperature=0).choices

    rows = _rows(server.log)
    assert {r["status"] for r in rows} >= {200, 400, 404, 413}
    ok = [r for r in rows if r["status"] == 200]
    assert all(r["latency_s"] > 0 and r["prompt_tokens"] > 0 and r["model_version"] for r in ok)


def test_keys_are_required_hashed_and_limited(serve, tiny_model_dir, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("# team keys\nfile-key#1\n")  # '#' inside a key is part of it
    env = {"HONING_API_KEYS": "env-key-1, env-key-2"}
    with serve(f"model={tiny_model_dir}", f"api_keys_file={keys}", "limits.rate_per_minute=3",
               "limits.concurrency=1", env=env) as server:
        name = tiny_model_dir.name
        with pytest.raises(openai.AuthenticationError) as err:
            server.client("wrong").models.list()
        assert err.value.body["code"] == "invalid_api_key"
        status, bare = _http("POST", server.url + "/chat/completions", {"model": name, "messages": HELLO})
        assert status == 401 and "Authorization: Bearer" in bare["error"]["message"]
        with pytest.raises(openai.AuthenticationError):
            server.client("file-key").models.list()
        for key in ("env-key-1", "env-key-2", "file-key#1"):
            assert server.client(key).models.list().data[0].id == name
        client = server.client("env-key-1")
        for _ in range(3):
            client.chat.completions.create(model=name, messages=HELLO, max_tokens=1)
        with pytest.raises(openai.RateLimitError, match="rate limit of 3 requests per minute"):
            client.chat.completions.create(model=name, messages=HELLO, max_tokens=1)
        # Another key has its own bucket.
        other = server.client("env-key-2")
        other.chat.completions.create(model=name, messages=HELLO, max_tokens=1)
        # Its concurrency limit of 1: a second request while a long one streams is refused.
        stream = other.chat.completions.create(model=name, messages=HELLO, max_tokens=200, stream=True,
                                               temperature=0)
        next(iter(stream))
        with pytest.raises(openai.RateLimitError, match="in flight"):
            other.chat.completions.create(model=name, messages=HELLO, max_tokens=1)
        stream.close()
    rows = _rows(server.log)
    key_ids = {r["key_id"] for r in rows if r["status"] == 200}
    assert len(key_ids) == 2 and all(k and len(k) == 12 for k in key_ids)
    assert not any("env-key" in json.dumps(r) for r in rows)  # keys are never logged, only their ids
    assert {401, 429} <= {r["status"] for r in rows}


def test_other_addresses_need_keys_and_bad_settings_are_one_line(tmp_path, tiny_model_dir):
    env = {**os.environ, "COLUMNS": "400", "HONING_API_KEYS": ""}
    for args, message in (
        (["--host", "0.0.0.0"], "without API keys"),
        (["api_keys_file=" + str(tmp_path / "missing.txt")], "does not exist"),
        (["model=" + str(tmp_path / "nowhere")], "does not exist"),
        (["limits.max_tokens=0"], "limits.max_tokens"),
    ):
        done = subprocess.run([*HONING, "serve", f"model={tiny_model_dir}", *args, "--port", "0"],
                              capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
        assert done.returncode == 1, done.stderr
        assert message in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_timeout_is_a_408_and_the_server_goes_on(serve, tiny_model_dir):
    # 400 steps cannot fit in 50 ms (each is a forward pass); the answer is stopped, not left running.
    with serve(f"model={tiny_model_dir}", "limits.request_timeout_s=0.05", "generation.draft_tokens=0") as server:
        client = server.client()
        name = tiny_model_dir.name
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model=name, messages=HELLO, max_tokens=400, temperature=0)
        assert err.value.status_code == 408 and err.value.body["code"] == "request_timeout"
        assert client.models.list().data[0].id == name
    [row] = _rows(server.log)
    assert row["status"] == 408 and row["error"] == "timeout_error" and row["completion_tokens"] < 400


# --------------------------------------------------------------------------- load


def test_64_requests_from_16_clients_all_answer(tiny_server, tiny_model_dir):
    with nullcontext(tiny_server) as server:  # generation.max_batch: 16 by default
        client = server.client()
        name = tiny_model_dir.name
        prompts = [[{"role": "user", "content": f"Question {i}: what is {i} plus {i}?"}] for i in range(64)]

        def ask(messages):
            started = time.perf_counter()
            reply = client.chat.completions.create(model=name, messages=messages, max_tokens=16, temperature=0)
            return time.perf_counter() - started, reply.usage.completion_tokens, reply.id

        started = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(ask, prompts))
        wall = time.perf_counter() - started
    latencies = sorted(r[0] for r in results)
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    tokens = sum(r[1] for r in results)
    print(f"\n64 requests, 16 clients: {wall:.1f} s, {tokens / wall:.1f} tok/s, p50 "
          f"{statistics.median(latencies):.2f} s, p95 {p95:.2f} s")
    assert len(results) == 64 and tokens > 0
    logged = {r["id"] for r in _rows(server.log) if r["status"] == 200}
    assert {r[2] for r in results} <= logged


# --------------------------------------------------------------------------- crashes


def test_kill_9_loses_no_answered_request(serve, tiny_model_dir):
    answered: list[str] = []
    with serve(f"model={tiny_model_dir}") as server:
        client = server.client()
        name = tiny_model_dir.name
        stop = threading.Event()

        def keep_asking():
            while not stop.is_set():
                try:
                    reply = client.chat.completions.create(model=name, messages=HELLO, max_tokens=4)
                except (openai.APIConnectionError, openai.APIStatusError):
                    return
                answered.append(reply.id)

        threads = [threading.Thread(target=keep_asking) for _ in range(4)]
        for thread in threads:
            thread.start()
        while len(answered) < 12:
            time.sleep(0.05)
        os.kill(server.process.pid, signal.SIGKILL)
        stop.set()
        for thread in threads:
            thread.join(60)
        assert wait_exit(server.process) == -signal.SIGKILL
    logged = {r["id"] for r in _rows(server.log)}
    assert len(answered) >= 12 and set(answered) <= logged


# --------------------------------------------------------------------------- adapters and the registry


def test_adapters_share_one_base_and_answer_as_their_merged_models(lora_runs, tiny_model_dir, tmp_path):
    import asyncio

    from honing.config import ChatModelConfig, SamplingConfig
    from honing.config.serve import ServeConfig
    from honing.models.chat import ChatModel
    from honing.serve.pool import Pool

    cfg = ServeConfig(models={"base": {"path": str(tiny_model_dir)},
                              "a": {"path": str(tiny_model_dir), "adapter": str(lora_runs["a"])},
                              "b": {"adapter": str(lora_runs["b"]), "path": str(tiny_model_dir)}},
                      generation={"max_batch": 2})  # two slots: queues build up and the adapters take turns
    pool = Pool(cfg)
    pool.load_all()
    try:
        assert len(pool.workers) == 1  # one base in memory for three names
        worker = next(iter(pool.workers.values()))
        assert sorted(worker.model.peft_config) == sorted({pool.targets["a"].adapter, pool.targets["b"].adapter})

        from honing.data.prompts import encode_prompts
        from honing.engine import Request, Sampling

        async def answer(name: str, max_new_tokens: int = 8) -> list[int]:
            target = await pool.target(name)
            done: asyncio.Future = asyncio.get_running_loop().create_future()
            loop = asyncio.get_running_loop()
            ids = encode_prompts(target.tokenizer, [HELLO])[0]
            request = Request(ids, max_new_tokens, Sampling(0.0), 0, (), target.stop_ids,
                              on_finish=lambda r: loop.call_soon_threadsafe(done.set_result, r))
            from honing.serve.pool import Job

            target.worker.submit(target.adapter, Job(request, lambda e: loop.call_soon_threadsafe(done.set_exception,
                                                                                                  e)))
            result = await done
            target.release()
            return result.token_ids

        async def all_at_once():
            return await asyncio.gather(*(answer(n) for n in ("base", "a", "b", "a", "base", "b")))

        served = asyncio.run(all_at_once())
        greedy = SamplingConfig(temperature=0.0, max_new_tokens=8)
        expected = {}
        for name, adapter in (("base", None), ("a", lora_runs["a"]), ("b", lora_runs["b"])):
            chat = ChatModel.load(ChatModelConfig(path=str(tiny_model_dir), adapter=str(adapter) if adapter else None),
                                  greedy, role="reference")
            expected[name] = chat.complete([HELLO])[0].token_ids
        assert served == [expected[n] for n in ("base", "a", "b", "a", "base", "b")]
        assert len({tuple(v) for v in expected.values()}) == 3  # the adapters really differ

        # Mixed traffic where every queue's oldest request has waited longer than the switch time: every
        # adapter still gets its turn and every request ends (a wrong switch rule serves nothing, forever).
        async def mixed():
            return await asyncio.wait_for(asyncio.gather(*(answer(n, 40) for n in ["a", "b", "base"] * 12)), 120)

        assert len(asyncio.run(mixed())) == 36
    finally:
        pool.close()


def test_a_rollback_is_served_without_a_restart(serve, lora_runs, tmp_path, monkeypatch):
    registry_path = tmp_path / "reg" / "registry.sqlite"
    monkeypatch.setenv("HONING_REGISTRY", str(registry_path))
    with Registry(registry_path) as registry:
        actions.register(registry, lora_runs["a"], "bot")
        actions.register(registry, lora_runs["b"], "bot")
        actions.promote(registry, "bot", 1, gate=None, reason="first")
        actions.promote(registry, "bot", 2, gate=None, reason="second")
    env = {"HONING_REGISTRY": str(registry_path)}
    with serve("model=registry:bot@production", "reload_check_s=0", env=env) as server:
        client = server.client()
        first = client.chat.completions.create(model="bot", messages=HELLO, max_tokens=8, temperature=0)
        assert first.system_fingerprint == "bot@2"
        # A long answer streams on v2 while production rolls back to v1.
        stream = client.chat.completions.create(model="bot", messages=HELLO, max_tokens=120, temperature=0,
                                                stream=True)
        pieces = iter(stream)
        opening = next(pieces)
        assert opening.system_fingerprint == "bot@2"
        with Registry(registry_path) as registry:
            actions.rollback(registry, "bot", reason="v2 misbehaves")
        after = client.chat.completions.create(model="bot", messages=HELLO, max_tokens=8, temperature=0)
        assert after.system_fingerprint == "bot@1"
        rest = list(pieces)
        assert rest and all(c.system_fingerprint == "bot@2" for c in rest)  # the one in flight finished on v2
        assert rest[-1].choices[0].finish_reason in ("stop", "length")
        assert client.models.list().data[0].model_dump()["version"] == "bot@1"
        from honing.serve.shadow import served_version  # what `honing monitor shadow=true` checks first

        assert served_version(server.url, "bot", "NO_SUCH_KEY_ENV") == "bot@1"
        assert served_version(server.url, "other", "NO_SUCH_KEY_ENV") is None
    versions = {r["id"]: r["model_version"] for r in _rows(server.log) if r["status"] == 200}
    assert versions[first.id] == "bot@2" and versions[after.id] == "bot@1"


def test_feedback_is_stored_against_the_answer_it_is_about(tiny_server, tiny_model_dir):
    with nullcontext(tiny_server) as server:  # log.redact_pii: true by default
        client = server.client()
        name = tiny_model_dir.name
        asked = [{"role": "user", "content": "Mail me at jane.doe@example.com please."}]
        reply = client.chat.completions.create(model=name, messages=asked, max_tokens=4, n=2, temperature=1, seed=3)
        url = server.url + "/feedback"
        ok = [_http("POST", url, {"id": reply.id, "choice": 1}),
              _http("POST", url, {"id": reply.id, "rating": "down", "index": 0,
                                  "correction": "Sure, I will write to jane.doe@example.com."})]
        assert [status for status, _ in ok] == [200, 200]
        bad = [_http("POST", url, {"id": "chatcmpl-nope", "rating": "up"}),
               _http("POST", url, {"id": reply.id, "choice": 5}),
               _http("POST", url, {"id": reply.id}),
               _http("POST", url, {"id": reply.id, "rating": "meh"})]
        assert [status for status, _ in bad] == [404, 400, 400, 400]
    conn = sqlite3.connect(server.log)
    request = conn.execute("SELECT request FROM requests WHERE id = ?", (reply.id,)).fetchone()[0]
    feedback = conn.execute("SELECT choice, rating, correction FROM feedback WHERE request_id = ? ORDER BY id",
                            (reply.id,)).fetchall()
    conn.close()
    assert "jane.doe@example.com" not in request and "<EMAIL>" in request
    assert feedback == [(1, None, None), (None, "down", "Sure, I will write to <EMAIL>.")]



def test_feedback_from_the_live_server_becomes_pairs_dpo_reads_and_a_monitor_report(tiny_server, tiny_model_dir,
                                                                                      tokenizer, tmp_path):
    from honing.config import DPOConfig
    from honing.stages.dpo import load_pairs

    with nullcontext(tiny_server) as server:
        client = server.client()
        name = tiny_model_dir.name
        url = server.url + "/feedback"
        given = []
        for i in range(3):
            reply = client.chat.completions.create(model=name, messages=[{"role": "user", "content": f"Tell me {i}"}],
                                                   max_tokens=6, n=2, temperature=1.0, seed=i)
            assert _http("POST", url, {"id": reply.id, "choice": i % 2})[0] == 200
            given.append(reply)
        corrected = client.chat.completions.create(model=name, messages=HELLO, max_tokens=6, temperature=1.0, seed=11)
        assert _http("POST", url, {"id": corrected.id, "rating": "down", "correction": "Hello! How can I help?"})[0] \
            == 200
    out = tmp_path / "feedback"
    done = subprocess.run([*HONING, "monitor", "export", f"log={server.log}", "-o", str(out)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    pairs = [json.loads(line) for line in (out / "preferences.jsonl").read_text().splitlines()]
    # (the log is shared: other tests' feedback is exported too)
    by_request = {p["provenance"]["request_ids"][0]: p for p in pairs}
    for i, reply in enumerate(given):  # chosen: the picked answer; rejected: the other, as the client saw them
        assert by_request[reply.id]["chosen"] == reply.choices[i % 2].message.content
        assert by_request[reply.id]["rejected"] == reply.choices[1 - i % 2].message.content
        assert by_request[reply.id]["provenance"]["model_version"] == str(tiny_model_dir)
    assert by_request[corrected.id]["chosen"] == "Hello! How can I help?"
    assert by_request[corrected.id]["rejected"] == corrected.choices[0].message.content
    dpo = load_config(DPOConfig, None, [f"data.train={out / 'preferences.jsonl'}", "data.validation_split=0"])
    loaded = load_pairs(dpo, tokenizer)
    assert len(loaded.train) == len(pairs) >= 4 and not loaded.rejects

    report = tmp_path / "report"
    done = subprocess.run([*HONING, "monitor", f"log={server.log}", "-o", str(report)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((report / "monitor.json").read_text())
    assert str(tiny_model_dir) in json.dumps(summary) and (report / "report.html").is_file()
