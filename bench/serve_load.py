"""The serving benchmark's pieces that talk to a server: its process, and the load generator.

    serving(command, base_url, log)  a context manager: start the server as a child process, wait for its
                                     /health to answer 200, yield, then stop it (SIGTERM, then SIGKILL)
    run_load(...)                    C clients (asyncio tasks over one AsyncOpenAI client, no retries, loopback
                                     only) each sending chat completions back to back until `requests` have
                                     been sent or `duration_s` has passed; a LoadRun of one Reply per request

A request's clock starts just before the client sends it. Streaming: its first token is the first chunk whose
delta has content (both servers send a role-only chunk before generating); its latency ends with the stream.
Its completion tokens are the server's own count (`usage`, asked for with stream_options.include_usage);
a reply without usage counts as an error, as does any exception, HTTP status or empty choice list.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator


@dataclass
class Reply:
    prompt: int                     # index into the conversations
    sent_s: float                   # seconds from the run's start to the request being sent
    latency_s: float                # from sent to the last byte of the reply
    first_token_s: float | None     # from sent to the first content (streaming only)
    completion_tokens: int | None   # the server's usage count
    prompt_tokens: int | None
    text: str
    finish_reason: str | None
    error: str | None = None


@dataclass
class LoadRun:
    concurrency: int
    replies: list[Reply]
    wall_s: float                   # from the first request sent to the last reply done
    stopped_by: str                 # "count": every request was sent; "time": duration_s ran out first
    settings: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- server processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _direct_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


def get_json(url: str, timeout: float = 5.0) -> Any:
    import json

    with _direct_opener().open(url, timeout=timeout) as response:
        return json.loads(response.read())


def health(base_url: str) -> int | None:
    """The HTTP status of GET /health, None while nothing answers."""
    try:
        with _direct_opener().open(f"{base_url}/health", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except (OSError, urllib.error.URLError):
        return None


def log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "".join(log.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return ""


def stop(process: subprocess.Popen, grace_s: float = 20.0) -> int | None:
    """SIGTERM, up to `grace_s` to exit, then SIGKILL; the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.returncode


@contextmanager
def serving(command: list[str], base_url: str, log: Path, env: dict[str, str] | None = None,
            cwd: Path | None = None, startup_timeout_s: float = 600.0) -> Iterator[dict[str, Any]]:
    """Start `command`, wait until base_url/health answers 200, yield what the start-up took, stop it."""
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **(env or {})}, cwd=cwd)
    info = {"pid": process.pid, "log": str(log)}
    try:
        while (status := health(base_url)) != 200:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode} before it was ready; "
                                   f"its log ({log}) ends:\n{log_tail(log)}")
            if time.perf_counter() - started > startup_timeout_s:
                raise TimeoutError(f"the server was not ready after {startup_timeout_s:.0f} s (last /health: "
                                   f"{status}); its log ({log}) ends:\n{log_tail(log)}")
            time.sleep(0.5)
        info["ready_s"] = time.perf_counter() - started
        yield info
    finally:
        info["exit_status"] = stop(process)


def cpu_ticks(server_pid: int) -> dict[str, int] | None:
    """The machine's busy and total CPU ticks, the server's (its threads and the children it waited for) and this
    process's, from /proc (Linux; None elsewhere). Two readings give `others_share` of a run."""
    def own(pid: int | str) -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime

    try:
        machine = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = machine[3] + machine[4]
        return {"busy": sum(machine) - idle, "total": sum(machine), "server": own(server_pid), "client": own("self")}
    except (OSError, ValueError, IndexError):
        return None


def others_share(before: dict[str, int] | None, after: dict[str, int] | None) -> dict[str, float] | None:
    """Between two cpu_ticks readings: the share of the machine's CPU that neither the server nor the load
    generator used (other processes: a run with much of it is not clean), and both of their CPU seconds."""
    if before is None or after is None or after["total"] <= before["total"]:
        return None
    delta = {key: after[key] - before[key] for key in before}
    hz = os.sysconf("SC_CLK_TCK")
    return {"others_cpu_share": max(0.0, (delta["busy"] - delta["server"] - delta["client"]) / delta["total"]),
            "server_cpu_s": delta["server"] / hz, "client_cpu_s": delta["client"] / hz}


# --------------------------------------------------------------------------- load


def _client(base_url: str, timeout_s: float, concurrency: int):
    import openai

    if hasattr(openai, "DefaultAsyncHttpx2Client"):  # openai >= 3 builds on httpx2, older releases on httpx
        import httpx2 as http

        factory = openai.DefaultAsyncHttpx2Client
    else:
        import httpx as http

        factory = openai.DefaultAsyncHttpxClient
    limits = http.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    return openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="bench", max_retries=0, timeout=timeout_s,
                              http_client=factory(trust_env=False, limits=limits))  # loopback: never a proxy


async def _one(client, model: str, conversation: list[dict[str, str]], prompt: int, max_tokens: int,
               stream: bool, started: float) -> Reply:
    sent = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    usage = finish = error = None
    try:
        if stream:
            response = await client.chat.completions.create(
                model=model, messages=conversation, max_tokens=max_tokens, temperature=0.0, stream=True,
                stream_options={"include_usage": True})
            async for chunk in response:
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        if first is None:
                            first = time.perf_counter()
                        parts.append(choice.delta.content)
                    finish = choice.finish_reason or finish
        else:
            response = await client.chat.completions.create(
                model=model, messages=conversation, max_tokens=max_tokens, temperature=0.0)
            usage = response.usage
            if not response.choices:
                error = "no choices in the reply"
            else:
                parts.append(response.choices[0].message.content or "")
                finish = response.choices[0].finish_reason
        if usage is None and error is None:
            error = "no usage in the reply"
    except Exception as err:  # counted, reported, and the client goes on with its next request
        error = f"{type(err).__name__}: {err}"
    done = time.perf_counter()
    return Reply(prompt=prompt, sent_s=sent - started, latency_s=done - sent,
                 first_token_s=None if first is None else first - sent,
                 completion_tokens=getattr(usage, "completion_tokens", None),
                 prompt_tokens=getattr(usage, "prompt_tokens", None), text="".join(parts), finish_reason=finish,
                 error=error)


async def _drive(base_url: str, model: str, conversations: list[list[dict[str, str]]], concurrency: int,
                 requests: int, max_tokens: int, stream: bool, duration_s: float, timeout_s: float) -> LoadRun:
    client = _client(base_url, timeout_s, concurrency)
    replies: list[Reply] = []
    sent = 0
    stopped_by = "count"
    started = time.perf_counter()
    deadline = started + duration_s

    async def client_loop() -> None:
        nonlocal sent, stopped_by
        while sent < requests:
            if time.perf_counter() >= deadline:
                stopped_by = "time"
                return
            index = sent
            sent += 1
            replies.append(await _one(client, model, conversations[index % len(conversations)],
                                      index % len(conversations), max_tokens, stream, started))

    try:
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    finally:
        await client.close()
    wall = max((r.sent_s + r.latency_s for r in replies), default=0.0)
    replies.sort(key=lambda r: r.sent_s)
    return LoadRun(concurrency, replies, wall, stopped_by,
                   {"requests": requests, "max_tokens": max_tokens, "stream": stream, "duration_s": duration_s,
                    "timeout_s": timeout_s, "model": model})


def run_load(base_url: str, model: str, conversations: list[list[dict[str, str]]], concurrency: int,
             requests: int, max_tokens: int, stream: bool = True, duration_s: float = 900.0,
             timeout_s: float = 600.0) -> LoadRun:
    """`concurrency` clients, back to back, over the first `requests` conversations (cycled), greedy."""
    if concurrency < 1 or requests < 1:
        raise ValueError("run_load needs at least one client and one request")
    return asyncio.run(_drive(base_url, model, conversations, concurrency, requests, max_tokens, stream,
                              duration_s, timeout_s))
