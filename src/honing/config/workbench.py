"""Configs of the `honing data <command>` family (the data workbench).

The rules themselves are configured by the data layer's own models (CleanConfig, PIIConfig,
DedupConfig), nested here as sections.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from honing.config.base import StrictModel
from honing.data.clean import CleanConfig
from honing.data.dedup import DedupConfig
from honing.data.pii import PIIConfig


ConvertTarget = Literal["instruction", "chat", "sharegpt", "preference", "text"]


class StreamingConfig(StrictModel):
    """Settings every streaming data command shares."""

    workers: int | None = Field(None, ge=1)
    """Worker processes that process chunks of records in parallel; null: one per CPU core. The output
    is the same, byte for byte, for any number of workers."""
    chunk_size: int = Field(1000, ge=1)
    """Records per chunk sent to a worker. Memory is bounded by about 2 × workers chunks in flight."""
    on_bad_record: Literal["fail", "skip"] = "fail"
    """A record that cannot be read (not JSON, not an object, not of its format): fail stops with
    file:line and writes no output; skip writes it to <run_dir>/rejects.jsonl and counts it."""
    run_dir: str | None = None
    """Run directory (run.json, removed.jsonl, rejects.jsonl); null: runs/data-<command>-<date>-<time>."""


class DataCleanConfig(StreamingConfig):
    """`honing data clean`: normalise text and remove records that fail a quality rule."""

    input: str = ""
    """Data file (.jsonl streams; .json/.csv/.parquet/.txt or a directory are read record by record)."""
    output: str = ""
    """JSONL file of the kept, cleaned records (written atomically: nothing appears if the run fails)."""
    clean: CleanConfig = CleanConfig()
    tokenizer: str | None = None
    """Local tokenizer directory, needed only by clean.min_tokens/max_tokens (loads transformers)."""
    write_removed: bool = True
    """Write each removed record, with the rule that removed it, to <run_dir>/removed.jsonl."""

    @model_validator(mode="after")
    def _check(self) -> DataCleanConfig:
        _require(self, "input", "output")
        if (self.clean.min_tokens is not None or self.clean.max_tokens is not None) and not self.tokenizer:
            raise ValueError("clean.min_tokens/max_tokens need tokenizer=<local tokenizer dir>, or use min_chars/max_chars")
        return self


class DataPIIConfig(StreamingConfig):
    """`honing data pii`: find personal data and secrets; redact, drop or report them."""

    input: str = ""
    """Data file to scrub."""
    output: str = ""
    """JSONL file of the redacted (or, with pii.action=drop, the remaining) records; with
    pii.action=report no data is written, only <run_dir>/findings.jsonl."""
    pii: PIIConfig = PIIConfig()
    write_removed: bool = True
    """With pii.action=drop, write each dropped record and its finds to <run_dir>/removed.jsonl."""

    @model_validator(mode="after")
    def _check(self) -> DataPIIConfig:
        _require(self, "input")
        if self.pii.action != "report" and not self.output:
            raise ValueError("output is required (the scrubbed file), unless pii.action=report")
        return self


class DataDedupConfig(StreamingConfig):
    """`honing data dedup`: remove exact and near-duplicate records, across splits and against evaluation files."""

    input: str | dict[str, str] = ""
    """A data file, or splits as {train: a.jsonl, validation: b.jsonl, test: c.jsonl}. With splits the
    training split is read first; a record of another split that duplicates an earlier record of a
    different split is removed from that (evaluation) side and counted as cross_split."""
    output: str = ""
    """JSONL file of the kept records; with split inputs, a directory that receives <split>.jsonl."""
    dedup: DedupConfig = DedupConfig()
    against: list[str] = []
    """Evaluation files: any input record that duplicates (exactly or nearly) one of their records is
    removed and counted as contamination (decontamination)."""
    train_split: str = "train"
    """Name of the training split when input is a mapping; it is processed first."""
    write_removed: bool = True
    """Write each removed record, what it duplicates and the estimated similarity to <run_dir>/removed.jsonl."""

    @model_validator(mode="after")
    def _check(self) -> DataDedupConfig:
        _require(self, "input", "output")
        if isinstance(self.input, dict) and not self.input:
            raise ValueError("input: give a file or at least one split, e.g. input.train=a.jsonl")
        return self


class DataConvertConfig(StreamingConfig):
    """`honing data convert`: rewrite records in another format."""

    input: str = ""
    """Data file to convert."""
    output: str = ""
    """JSONL file in the target format."""
    to: ConvertTarget = "chat"
    """Target format: instruction (Alpaca {instruction, input, output, system?}), chat (OpenAI
    {messages: [{role, content}]}), sharegpt ({conversations: [{from, value}]}), preference
    ({prompt, chosen, rejected}) or text ({text}). A record with no faithful form in the target (a
    multi-turn chat as Alpaca, a conversation as text, a preference pair as chat) is a reject. An
    Alpaca `input` is joined to the instruction (as training does), so it comes back inside `instruction`."""
    format: Literal["auto", "text", "instruction", "chat", "sharegpt", "preference"] = "auto"
    """Source format; auto recognises each record's format by its keys."""
    keep_fields: bool = True
    """Carry top-level fields that are not part of the source format (id, source, ...) to the output."""

    @model_validator(mode="after")
    def _check(self) -> DataConvertConfig:
        _require(self, "input", "output")
        return self


class DataSplitConfig(StreamingConfig):
    """`honing data split`: deterministic train/validation/test files by ratios."""

    input: str = ""
    """Data file to split."""
    output: str = ""
    """Directory that receives <split>.jsonl for every split."""
    ratios: dict[str, float] = {"train": 0.9, "validation": 0.05, "test": 0.05}
    """Share of records per split (normalised to sum 1). Exact sizes: largest remainders, per stratum."""
    seed: int = 0
    """Seed of the assignment: the same input and seed give the same files."""
    stratify_by: str | None = None
    """Top-level field whose values keep their proportions in every split (e.g. label)."""

    @model_validator(mode="after")
    def _check(self) -> DataSplitConfig:
        _require(self, "input", "output")
        if not self.ratios or any(value < 0 for value in self.ratios.values()) or sum(self.ratios.values()) <= 0:
            raise ValueError("ratios: give non-negative shares with a positive sum, e.g. {train: 0.9, test: 0.1}")
        return self


class DataMixConfig(StreamingConfig):
    """`honing data mix`: combine datasets by weights or counts, optionally decontaminated."""

    sources: dict[str, str] = {}
    """Datasets to mix, by name: {name: file}."""
    output: str = ""
    """JSONL file of the mixture (sources interleaved in a seeded random order)."""
    weights: dict[str, float] | None = None
    """Share of `total` per source (normalised). A source smaller than its share is repeated (upsampled)."""
    total: int | None = Field(None, ge=1)
    """Records in the mixture with weights; null: the sum of the source sizes."""
    counts: dict[str, int] | None = None
    """Records taken from each source (instead of weights)."""
    seed: int = 0
    """Seed of the sampling and the interleaving."""
    add_source: bool = True
    """Add `_source: <name>` to every record (provenance)."""
    against: list[str] = []
    """Evaluation files: source records that duplicate one of theirs are excluded before sampling."""
    dedup: DedupConfig = DedupConfig()
    """How duplicates of the `against` files are recognised."""

    @model_validator(mode="after")
    def _check(self) -> DataMixConfig:
        _require(self, "sources", "output")
        if (self.weights is None) == (self.counts is None):
            raise ValueError("give either weights (with an optional total) or counts, not both")
        named = self.weights if self.weights is not None else self.counts
        if set(named) != set(self.sources):
            raise ValueError(f"weights/counts must name every source exactly: sources {sorted(self.sources)}, got {sorted(named)}")
        if self.weights is not None and (any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0):
            raise ValueError("weights must be non-negative with a positive sum")
        if self.counts is not None and any(c < 0 for c in self.counts.values()):
            raise ValueError("counts must be non-negative")
        return self


class DataValidateConfig(StreamingConfig):
    """`honing data validate`: does every record parse and normalise? Exits non-zero when not."""

    input: str = ""
    """Data file or directory to validate."""
    format: Literal["auto", "text", "instruction", "chat", "sharegpt", "preference"] = "auto"
    """Expected format; auto detects it per file from its first record."""
    shown_errors: int = Field(10, ge=0)
    """How many invalid records are listed with file:line (all are counted)."""

    @model_validator(mode="after")
    def _check(self) -> DataValidateConfig:
        _require(self, "input")
        return self


class DataStatsConfig(StreamingConfig):
    """`honing data stats`: counts, length histograms, exact-duplicate share, PII and field distributions."""

    input: str = ""
    """Data file to describe."""
    field: str | None = None
    """Top-level field whose value distribution is reported (e.g. label, category, _source)."""
    tokenizer: str | None = None
    """Local tokenizer directory or model path: adds a histogram in tokens (imports transformers)."""
    pii: bool = True
    """Count PII finds by type (honing.data.pii, every type)."""
    top_values: int = Field(20, ge=1)
    """How many of the most frequent values of `field` are listed."""

    @model_validator(mode="after")
    def _check(self) -> DataStatsConfig:
        _require(self, "input")
        return self


class DataCardConfig(StrictModel):
    """`honing data card`: a Markdown data card written only from run directories."""

    runs: list[str] = []
    """Run directories of honing data commands, in the order the steps were applied."""
    output: str = ""
    """Markdown file of the card."""
    title: str = "Data card"
    """Heading of the card."""

    @model_validator(mode="after")
    def _check(self) -> DataCardConfig:
        _require(self, "runs", "output")
        return self


def _require(cfg: StrictModel, *names: str) -> None:
    missing = [name for name in names if not getattr(cfg, name)]
    if missing:
        raise ValueError(f"{', '.join(missing)} required (e.g. {missing[0]}=...)")
