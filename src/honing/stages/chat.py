"""`honing chat`: a conversation with a model in the terminal, answers streamed as they come.

Commands: /reset (start over), /system <text> (set the system prompt and start over),
/exit or Ctrl-D (leave).
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from honing.config import ChatConfig

HELP = "commands: /reset starts over, /system <text> sets the system prompt, /exit leaves"


def _streamer(tokenizer: Any, out: TextIO):
    from transformers import TextStreamer

    class _ToStream(TextStreamer):
        """transformers' TextStreamer, writing to `out` instead of print()."""

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            out.write(text + ("\n" if stream_end else ""))
            out.flush()

    return _ToStream(tokenizer, skip_prompt=True, skip_special_tokens=True)


def chat_loop(model: Any, tokenizer: Any, cfg: ChatConfig, stdin: TextIO, stdout: TextIO) -> list[dict[str, str]]:
    """Read user lines from `stdin`, stream answers to `stdout`; returns the last conversation."""
    from honing.generate import generate

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
        answer = generate(model, tokenizer, [conversation], cfg.sampling, batch_size=1, system_prompt=system,
                          progress=False, streamer=_streamer(tokenizer, stdout))[0]
        conversation.append({"role": "assistant", "content": answer})


def chat(cfg: ChatConfig, stdin: TextIO | None = None, stdout: TextIO | None = None) -> dict[str, Any]:
    from honing.stages.generate import load_for_inference

    loaded = load_for_inference(cfg.model, cfg.adapter)
    conversation = chat_loop(loaded.model, loaded.tokenizer, cfg, stdin or sys.stdin, stdout or sys.stdout)
    return {"turns": len(conversation) // 2}


run = chat
