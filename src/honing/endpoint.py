"""One request to an OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp server, TGI, a
hosted API), shared by the evaluation judge and the synthetic-data teacher. Only the URL the
user configured is contacted; the API key comes from an environment variable and is never written."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from honing.errors import HoningError


class ChatEndpoint:
    def __init__(self, base_url: str, model: str, *, api_key_env: str, timeout_s: float, role: str):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout = timeout_s
        self.api_key = os.environ.get(api_key_env)
        self.role = role  # "judge", "teacher": named in errors

    def complete(self, messages: list[dict[str, str]], **params: Any) -> str:
        """The reply's text; `params` are request fields (temperature, top_p, max_tokens, seed)."""
        body = {"model": self.model, "messages": messages, **params}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as err:
            raise HoningError(f"{self.role} endpoint {self.url} answered HTTP {err.code}: {err.read()[:200]!r}") from None
        except (urllib.error.URLError, TimeoutError) as err:
            raise HoningError(f"{self.role} endpoint {self.url} cannot be reached: {getattr(err, 'reason', err)}") from None
        try:
            return payload["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise HoningError(f"{self.role} endpoint {self.url} returned no choices[0].message.content") from None
