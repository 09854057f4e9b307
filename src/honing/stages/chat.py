"""`honing chat`: a conversation with a model in the terminal, answers streamed as they come.

Commands: /reset (start over), /system <text> (set the system prompt and start over),
/exit or Ctrl-D (leave).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

from honing.config import ChatConfig

if TYPE_CHECKING:
    from honing.models.chat import ChatModel

HELP = "commands: /reset starts over, /system <text> sets the system prompt, /exit leaves"


def _streamer(tokenizer: Any, out: TextIO):
    from transformers import TextStreamer

    class _ToStream(TextStreamer):
        """transformers' TextStreamer, writing to `out` instead of print()."""

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            out.write(text + ("\n" if stream_end else ""))
            out.flush()

    return _ToStream(tokenizer, skip_prompt=True, skip_special_tokens=True)


def chat_loop(model: ChatModel, cfg: ChatConfig, stdin: TextIO, stdout: TextIO) -> list[dict[str, str]]:
    """Read user lines from `stdin`, stream answers to `stdout` (an endpoint's whole answer at once); returns the
    last conversation."""
    system = cfg.system_prompt
    conversation: list[dict[str, str]] = []
    stdout.write(f"{HELP}\n")
    while True:
        stdout.write("you> ")
        stdout.flush()
        line = stdin.readline()
        if not line:  # Ctrl-D
            stdout.write("\n")
            return conversation
        text = line.strip()
        if not text:
            continue
        if text == "/exit":
            return conversation
        if text == "/reset":
            conversation = []
            stdout.write("(conversation cleared)\n")
            continue
        if text.startswith("/system"):
            system = text.removeprefix("/system").strip() or None
            conversation = []
            stdout.write(f"(system prompt {'set' if system else 'removed'}; conversation cleared)\n")
            continue
        if text.startswith("/"):
            stdout.write(f"unknown command {text.split()[0]}; {HELP}\n")
            continue
        conversation.append({"role": "user", "content": text})
        stdout.write("model> ")
        streamer = _streamer(model.tokenizer, stdout) if model.tokenizer is not None else None
        answer = model.complete([conversation], cfg.sampling, system_prompt=system, streamer=streamer)[0].text
        if streamer is None:
            stdout.write(answer + "\n")
        conversation.append({"role": "assistant", "content": answer})


def chat(cfg: ChatConfig, stdin: TextIO | None = None, stdout: TextIO | None = None) -> dict[str, Any]:
    from honing.models.chat import ChatModel

    model = ChatModel.load(cfg.model, cfg.sampling, role="model", batch_size=1)
    conversation = chat_loop(model, cfg, stdin or sys.stdin, stdout or sys.stdout)
    return {"turns": len(conversation) // 2}


run = chat
