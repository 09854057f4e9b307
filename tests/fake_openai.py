"""A real OpenAI-compatible chat-completions server on 127.0.0.1 for tests (no mock of the client).

The handler class carries its knobs: `reply(body) -> str` writes the answer; `failures` is a queue of HTTP
statuses answered first (429, 5xx, 400...) with `error_body`; `delay` seconds are slept per request; every
request is kept in `requests` and the most requests in flight at once in `most_active`."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def echo(body: dict[str, Any]) -> str:
    """The last message and the request's seed."""
    return f"{body['messages'][-1]['content']} seed={body.get('seed')}"


class FakeOpenAI(BaseHTTPRequestHandler):
    reply: Callable[[dict[str, Any]], str]
    failures: list[int]
    error_body: bytes
    delay: float
    requests: list[dict[str, Any]]
    lock: threading.Lock
    active = 0
    most_active = 0

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls = type(self)
        with cls.lock:
            cls.requests.append({"path": self.path, "body": body, "authorization": self.headers.get("Authorization")})
            status = cls.failures.pop(0) if cls.failures else 200
            cls.active += 1
            cls.most_active = max(cls.most_active, cls.active)
        try:
            time.sleep(cls.delay)
            if status != 200:
                self._send(status, cls.error_body, {"retry-after-ms": "10"})
                return
            text = cls.reply(body)
            payload = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "length" if "long" in text else "stop"}],
                       "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}
            self._send(200, json.dumps(payload).encode())
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            pass
        finally:
            with cls.lock:
                cls.active -= 1

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(reply: Callable[[dict[str, Any]], str] = echo,
          error_body: bytes = b'{"error": {"message": "busy"}}') -> Iterator[tuple[type[FakeOpenAI], str]]:
    """(handler class, http://127.0.0.1:PORT) of a server that runs until the block ends."""
    handler = type("Handler", (FakeOpenAI,), {"reply": staticmethod(reply), "failures": [], "error_body": error_body,
                                               "delay": 0.0, "requests": [], "lock": threading.Lock()})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
