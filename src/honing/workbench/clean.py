"""`honing data clean`: normalise every text field and remove records that fail a quality rule.

The rules are honing.data.clean's (CleanConfig); each removal is counted by rule in run.json and
written, with the rule, to <run_dir>/removed.jsonl.
"""

from __future__ import annotations

from typing import Any

from honing.config.workbench import DataCleanConfig
from honing.data.clean import Cleaner, joined_text
from honing.data.formats import RecordError
from honing.workbench.io import as_line, dumps, parse_payload
from honing.workbench.runner import Outcome, stream_filter


class TokenCounter:
    """Counts tokens with a local tokenizer, loaded lazily in each worker (picklable)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._tokenizer: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_tokenizer": None}

    def __call__(self, text: str) -> int:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.path)
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])


class CleanStep:
    def __init__(self, cleaner: Cleaner) -> None:
        self.cleaner = cleaner

    def process(self, file: str, line: int, payload: Any) -> Outcome:
        try:
            record = parse_payload(payload)
        except RecordError as err:
            return Outcome("rejected", reason=str(err))
        result = self.cleaner.clean(record)
        if result.record is None:
            return Outcome("removed", reason=result.removed_by)
        out = dumps(result.record) if result.changed else as_line(payload)
        return Outcome("kept", out, length=len(joined_text(result.record)))


def run(cfg: DataCleanConfig) -> dict[str, Any]:
    """Clean cfg.input into cfg.output; see the module docstring."""
    counter = TokenCounter(cfg.tokenizer) if cfg.tokenizer else None
    step = CleanStep(Cleaner(cfg.clean, counter))
    return stream_filter("clean", cfg, step, output=cfg.output, write_removed=cfg.write_removed)
