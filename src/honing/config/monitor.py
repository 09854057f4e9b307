"""Configs of `honing monitor` (a report of the request log) and `honing monitor export` (feedback as training data)."""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from honing.config.base import StrictModel

DEFAULT_LOG = ".honing/requests.sqlite"
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: float) -> float:
    """The epoch second a `since` window starts: a duration back from `now` (30m, 24h, 7d, 2w) or an ISO date or
    date-time (UTC unless it names its offset). ValueError saying what is accepted otherwise."""
    match = DURATION.match(text)
    if match:
        return now - float(match[1]) * SECONDS[match[2]]
    try:
        when = _dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"since={text!r}: give a duration back from now (30m, 24h, 7d, 2w) or an ISO date or "
                         "date-time (2025-05-01, 2025-05-01T09:00, UTC unless it has an offset)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return when.timestamp()


def _since_text(value: Any) -> Any:
    # YAML (and key=value overrides) read 2025-05-01 as a date: keep it as the ISO text it was.
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.isoformat()
    return value


class LogWindowConfig(StrictModel):
    """Which part of the request log is read: the file, a time window and a model."""

    log: str = DEFAULT_LOG
    """The request log `honing serve` writes (its log.path): one SQLite file."""
    since: str | None = None
    """Only what happened since then: a duration back from now (30m, 24h, 7d, 2w) or an ISO date or date-time
    (2025-05-01, 2025-05-01T09:00; UTC unless it has an offset); null: the whole log."""
    model: str | None = None
    """Only this model: a served name (support-bot: every version served under it) or one version as the log
    names it (support-bot@3 for a registry-served model, else its path); null: every model."""

    @field_validator("since", mode="before")
    @classmethod
    def _date_as_text(cls, value: Any) -> Any:
        return _since_text(value)

    @field_validator("since")
    @classmethod
    def _readable(cls, value: str | None) -> str | None:
        if value is not None:
            parse_since(value, 0.0)
        return value


class MonitorConfig(LogWindowConfig):
    """`honing monitor`: one Markdown + HTML report of the served traffic per model version (latency, errors,
    refusals, feedback), the drift of its prompts from the training data, and on demand a shadow evaluation."""

    output: str | None = None
    """Directory of report.md, report.html and monitor.json (every number of the report); null:
    runs/monitor-<date>-<time>. Written atomically; a rerun into the same directory replaces the report."""
    registry: str | None = None
    """The registry database that NAME@V versions are looked up in (lineage, gate tasks); null: HONING_REGISTRY,
    else .honing/registry.sqlite."""
    training_data: list[str] = []
    """Training data files to compare the served prompts with, instead of the ones the version's run record
    names (for a model that is not a registered or honing-trained one)."""
    top_ngrams: int = Field(15, ge=1)
    """Word n-grams listed as most over-represented in served prompts compared with the training prompts."""
    min_ngram_count: int = Field(3, ge=1)
    """Served occurrences an n-gram needs before it is listed as over-represented (rarer ones are noise)."""
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    """Confidence level of the refusal and error rates' bootstrap intervals (the shadow evaluation keeps the
    registered evaluation's level, so its scores compare like for like)."""
    shadow: bool = False
    """Re-run the registered version's gate tasks (its attached gate evaluation's generation tasks) against the
    served model through `endpoint`, and report served against registered scores with their intervals."""
    endpoint: str | None = None
    """shadow: the server's OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1."""
    endpoint_model: str | None = None
    """shadow: the model name to ask the endpoint for; null: the name the log records for the version."""
    api_key_env: str = "OPENAI_API_KEY"
    """shadow: environment variable holding the server's API key (read at run time, never written); unset: no key
    is sent."""
    shadow_examples: int | None = Field(None, ge=1)
    """shadow: evaluate only the first N examples of each task (the registered scores still cover all of them)."""

    @model_validator(mode="after")
    def _shadow_needs_endpoint(self) -> MonitorConfig:
        if self.shadow and not self.endpoint:
            raise ValueError("shadow=true needs endpoint: the server's base URL (e.g. endpoint=http://127.0.0.1:8000/v1)")
        return self


class MonitorExportConfig(LogWindowConfig):
    """`honing monitor export`: the feedback in the request log as training data: sft.jsonl (one conversation per
    corrected answer) and preferences.jsonl (prompt/chosen/rejected pairs), each record with its provenance.
    `since` selects feedback given since then; `model` the requests it was given on."""

    run_dir: str | None = None
    """The export's run directory: sft.jsonl, preferences.jsonl, skipped.jsonl (every feedback row that gave
    nothing, and why) and run.json; null: runs/monitor-export-<date>-<time>."""
