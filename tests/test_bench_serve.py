"""The serving benchmark without a model: its arguments, the server commands it builds, the load generator and
process handling against a small real OpenAI-style HTTP server run as a child process (streamed and whole
replies, usage, a failing request), the figures, the comparison and the tables."""

from __future__ import annotations

import io
import json
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import serve as bench_serve  # noqa: E402
from bench.serve_load import (LoadRun, Reply, cpu_ticks, free_port, health, others_share, run_load,  # noqa: E402
                              serving)

# Answers each prompt's last message reversed, a word per chunk, after `delay` s; "fail" in it: HTTP 500.
SERVER = textwrap.dedent('''
    import json, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = {"/health": {"status": "ok"}, "/v1/models": {"object": "list", "data": [{"id": "tiny"}]}}
            self._json(200, body[self.path]) if self.path in body else self._json(404, {})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompt = body["messages"][-1]["content"]
            if "fail" in prompt:
                return self._json(500, {"error": {"message": "asked to fail"}})
            words = prompt.split()[::-1][: body["max_tokens"]]
            usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(words),
                     "total_tokens": len(prompt.split()) + len(words)}
            base = {"id": "x", "created": 0, "model": body["model"]}
            if not body.get("stream"):
                time.sleep(0.02)
                return self._json(200, {**base, "object": "chat.completion", "usage": usage, "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": " ".join(words)},
                     "finish_reason": "stop"}]})
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            chunk = lambda delta, finish=None, **extra: self._event({**base, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})
            chunk({"role": "assistant"})  # before any content, as both real servers do
            for i, word in enumerate(words):
                time.sleep(0.01)
                chunk({"content": word if i == 0 else " " + word})
            chunk({}, "stop", usage=usage)
            self.wfile.write(b"data: [DONE]\\n\\n")
            self.wfile.flush()
            self.close_connection = True

        def _event(self, payload):
            self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\\n\\n")
            self.wfile.flush()

        def _json(self, status, payload):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
''')

TICKETS = [[{"role": "system", "content": "be brief"}, {"role": "user", "content": f"ticket {i} says hello there"}]
           for i in range(6)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, its process id) of the small server, started and stopped by bench.serve_load.serving."""
    workdir = tmp_path_factory.mktemp("serve")
    script = workdir / "server.py"
    script.write_text(SERVER)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with serving([sys.executable, str(script), str(port)], base_url, workdir / "server.log",
                 startup_timeout_s=30) as info:
        assert info["ready_s"] > 0 and health(base_url) == 200
        yield base_url, info["pid"]
    assert health(base_url) is None  # stopped


def test_arguments_and_leg_choices():
    args = bench_serve.parse_args(["--concurrency", "1, 8", "--requests", "5", "--legs", "honing,transformers"])
    assert args.concurrency == [1, 8] and args.requests == 5 and args.max_tokens == 64 and args.stream
    assert args.legs == ["honing", "transformers"]
    assert bench_serve.parse_args(["--vllm", "--legs", "honing"]).legs == ["honing", "honing-vllm", "vllm"]
    assert not bench_serve.parse_args(["--no-stream"]).stream
    for bad in (["--legs", "honing,tgi"], ["--concurrency", "0"], ["--requests", "0"]):
        with pytest.raises(SystemExit):
            bench_serve.parse_args(bad)


def test_server_commands_share_model_dtype_and_sizing(tmp_path):
    model = tmp_path / "SmolLM2-135M-Instruct.Q4_1-abc"
    args = bench_serve.parse_args(["--concurrency", "1,8,32", "--max-tokens", "64"])
    encoded = [[1] * 150, [1] * 172]
    honing, facts = bench_serve.server_command("honing", model, "float32", "cpu", 9000, args, encoded, tmp_path)
    assert honing[1:4] == ["-m", "honing.cli", "serve"] and honing[-2:] == ["--port", "9000"]
    config = json.loads(Path(honing[4]).read_text())
    assert config == facts["config"]
    assert config["models"] == {model.name: {"path": str(model), "dtype": "float32"}}  # served under the dir name
    assert config["generation"] == {"max_batch": 32} and config["limits"]["concurrency"] > 32
    assert str(tmp_path) in config["log"]["path"]  # the request log stays out of the repository
    vllm_backend, _ = bench_serve.server_command("honing-vllm", model, "bfloat16", "cuda", 9000, args, encoded,
                                                 tmp_path)
    assert json.loads(Path(vllm_backend[4]).read_text())["generation"]["backend"] == "vllm"

    plain, _ = bench_serve.server_command("transformers", model, "float32", "cpu", 9001, args, encoded, tmp_path)
    assert plain[3:5] == ["serve", str(model)] and "--continuous-batching" not in plain
    assert plain[plain.index("--dtype") + 1] == "float32" and plain[plain.index("--device") + 1] == "cpu"
    batched, facts = bench_serve.server_command("transformers-cb", model, "float32", "cpu", 9001, args, encoded,
                                                tmp_path)
    # 32 requests of the longest prompt + 64 new tokens in 256-token pages: 1 page each, + 1
    assert facts["cb_sizing"]["num_blocks"] == 33
    assert batched[batched.index("--cb-num-blocks") + 1] == "33"
    vllm, _ = bench_serve.server_command("vllm", model, "bfloat16", "cuda", 9002, args, encoded, tmp_path)
    assert vllm[1:3] == ["serve", str(model)] and vllm[vllm.index("--max-num-seqs") + 1] == "32"


def test_vllm_legs_skip_with_a_reason_without_cuda():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: the vLLM legs may run")
    assert bench_serve.skip_reason("vllm") and bench_serve.skip_reason("honing-vllm")
    assert bench_serve.skip_reason("honing") is None


def test_streamed_load_counts_usage_first_tokens_and_errors(server):
    base_url, pid = server
    tickets = TICKETS + [[{"role": "user", "content": "please fail now"}]]
    before = cpu_ticks(pid)
    run = run_load(base_url, "tiny", tickets, concurrency=3, requests=7, max_tokens=3, stream=True, duration_s=60)
    cpu = others_share(before, cpu_ticks(pid))
    if before is not None:  # Linux: the server's and this process's CPU time, and what was left for the others
        assert cpu["server_cpu_s"] >= 0 and cpu["client_cpu_s"] > 0 and 0 <= cpu["others_cpu_share"] <= 1
    assert run.stopped_by == "count" and len(run.replies) == 7
    assert sorted(r.prompt for r in run.replies) == list(range(7))
    failed = [r for r in run.replies if r.error]
    assert [r.prompt for r in failed] == [6] and "500" in failed[0].error
    for reply in (r for r in run.replies if not r.error):
        assert reply.completion_tokens == 3 and reply.text == "there hello says"
        assert 0 < reply.first_token_s < reply.latency_s and reply.finish_reason == "stop"
    result = bench_serve.summarise(run)
    assert result["errors"] == 1 and result["requests_ok"] == 6 and result["completion_tokens"] == 18
    assert result["tokens_per_s"] == pytest.approx(18 / run.wall_s)
    assert result["requests_per_s"] == pytest.approx(6 / run.wall_s)
    assert result["latency_s"]["p50"] <= result["latency_s"]["p95"] <= run.wall_s
    assert result["first_token_s"]["p95"] < result["latency_s"]["p95"]


def test_whole_replies_and_the_time_bound(server):
    base_url, _ = server
    run = run_load(base_url, "tiny", TICKETS, concurrency=2, requests=4, max_tokens=2, stream=False, duration_s=60)
    assert all(r.error is None and r.first_token_s is None and r.completion_tokens == 2 for r in run.replies)
    bounded = run_load(base_url, "tiny", TICKETS, concurrency=2, requests=1000, max_tokens=1, stream=False,
                       duration_s=0.3)
    assert bounded.stopped_by == "time" and 2 <= len(bounded.replies) < 1000


def _result(leg: str, concurrency: int, tokens_per_s: float, p95: float, texts: list[str]) -> dict:
    run = LoadRun(concurrency, [Reply(i, 0.0, p95 * (i + 1) / len(texts), p95 / 4, 10, 100, text, "stop")
                                for i, text in enumerate(texts)], wall_s=10 * len(texts) / tokens_per_s,
                  stopped_by="count")
    return {**bench_serve.summarise(run), "leg": leg, "machine_busy_before": None}


def test_percentiles_comparison_target_and_tables():
    results = [_result("honing", 8, 40.0, 2.0, ["a", "b", "c", "d"]),
               _result("transformers", 8, 10.0, 8.0, ["a", "b", "x", "d"]),
               _result("transformers-cb", 8, 25.0, 1.0, ["a", "b", "c", "d"]),
               {"status": "skipped", "leg": "vllm", "concurrency": 8, "reason": "no CUDA"}]
    honing = results[0]["latency_s"]
    # latencies 0.5, 1.0, 1.5, 2.0: linear interpolation between order statistics
    assert honing["p50"] == pytest.approx(1.25) and honing["p95"] == pytest.approx(1.925)
    rows = {row["versus"]: row for row in bench_serve.comparison(results)}
    assert set(rows) == {"transformers", "transformers-cb"}
    assert rows["transformers"]["tokens_per_s_ratio"] == pytest.approx(4.0)
    assert rows["transformers"]["same_answers"] == 3 and rows["transformers"]["answers_compared"] == 4
    assert rows["transformers"]["target"]["met"]  # ≥ 2× and a lower p95
    assert not rows["transformers-cb"]["target"]["met"]  # 1.6×, and its p95 is lower than honing's

    from rich.console import Console

    report = {"model": {"name": "embedded", "dtype": "float32"}, "device": "cpu",
              "prompts": {"count": 4, "mean_tokens": 146.0},
              "load": {"requests": 4, "max_tokens": 64, "stream": True}, "results": results,
              "comparison": bench_serve.comparison(results)}
    console = Console(file=io.StringIO(), width=220)
    bench_serve.render(report, console)
    text = console.file.getvalue()
    assert "4.00×" in text and "3/4" in text and "skipped: no CUDA" in text and "transformers serve (CB)" in text
    results[1]["cpu"] = {"others_cpu_share": 0.4, "server_cpu_s": 1.0, "client_cpu_s": 0.1}
    assert bench_serve._status(results[1]) == "others used 40% CPU" and bench_serve._status(results[0]) == "ok"
