"""`honing inspect`: what a data file holds and what training would see.

Loads the tokenizer only (no model weights), reads and validates every record (bad records
are listed, never fatal here: inspecting is how one finds them), tokenises with the same
code as training, and prints the format, counts, a token-length histogram, the share of
tokens trained, and one example with its trained tokens marked.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from honing.config import InspectConfig
from honing.data.loading import Sourced, load_sourced
from honing.data.templating import tokenize_conversation, tokenize_text
from honing.data.types import IGNORE_INDEX, Reject, TokenizedExample
from honing.errors import DataError

HISTOGRAM_BINS = 10
BAR_WIDTH = 40
SHOWN_REJECTS = 10
TRAINED_OPEN, TRAINED_CLOSE = "⟦", "⟧"


def run(cfg: InspectConfig) -> dict[str, Any]:
    """Load the tokenizer named by cfg.model and inspect cfg.data.train."""
    from honing.models.load import load_tokenizer

    return inspect_data(cfg, load_tokenizer(cfg.model))


def inspect_data(cfg: InspectConfig, tokenizer: Any, *, console: Console | None = None) -> dict[str, Any]:
    """Inspect cfg.data.train with `tokenizer`, print the report, and return its numbers."""
    console = console or Console()
    items, fmt, rejects = _load(cfg)
    examples = _tokenize(items, fmt, tokenizer, cfg, rejects)
    stats = _stats(cfg, fmt, items, examples, rejects)
    stats["example_text"] = _example(cfg, examples, tokenizer, console, stats)
    _report(stats, rejects, console)
    return stats


# --------------------------------------------------------------------------- phases


def _load(cfg: InspectConfig) -> tuple[list[Sourced], str, list[Reject]]:
    data = cfg.data
    return load_sourced(
        data.train, data.format, on_bad_record="skip", text_field=data.text_field, system_prompt=data.system_prompt
    )


def _tokenize(items: list[Sourced], fmt: str, tokenizer: Any, cfg: InspectConfig, rejects: list[Reject]) -> list[TokenizedExample]:
    examples: list[TokenizedExample] = []
    for item in items:
        record = item.record
        try:
            if fmt == "text":
                examples += tokenize_text(tokenizer, record["text"], cfg.data.max_length)
            else:
                # Preference data is shown as the prompt followed by the chosen answer.
                messages = record["messages"] if "messages" in record else record["prompt"] + record["chosen"]
                examples.append(tokenize_conversation(tokenizer, messages, train_on=cfg.data.train_on, max_length=cfg.data.max_length))
        except ValueError as err:
            rejects.append(Reject(item.file, item.line, str(err), record))
    return examples


def _stats(cfg: InspectConfig, fmt: str, items: list[Sourced], examples: list[TokenizedExample], rejects: list[Reject]) -> dict[str, Any]:
    lengths = [len(e.input_ids) for e in examples]
    tokens = sum(lengths)
    # Every label that is not IGNORE_INDEX, the first token included: what the mask covers.
    trained = sum(1 for e in examples for label in e.labels if label != IGNORE_INDEX)
    return {
        "path": str(cfg.data.train),
        "format": fmt,
        "records": len(items),
        "rejected": len(rejects),
        "rejects": [{"where": r.where(), "reason": r.reason} for r in rejects],
        "examples": len(examples),
        "truncated": sum(e.truncated for e in examples),
        "tokens": tokens,
        "trained_tokens": trained,
        "trained_share": round(trained / tokens, 4) if tokens else 0.0,
        "masked_share": round(1 - trained / tokens, 4) if tokens else 0.0,
        "max_length": cfg.data.max_length,
        "length_min": min(lengths, default=0),
        "length_max": max(lengths, default=0),
        "length_mean": round(tokens / len(lengths), 1) if lengths else 0.0,
        "histogram": histogram(lengths),
    }


def histogram(lengths: list[int], bins: int = HISTOGRAM_BINS) -> list[dict[str, int]]:
    """Equal-width bins [low, high] over the observed lengths, with counts."""
    if not lengths:
        return []
    low, high = min(lengths), max(lengths)
    width = max(1, -(-(high - low + 1) // bins))  # ceil, so `bins` bins cover every length
    counts: dict[int, int] = {}
    for length in lengths:
        index = (length - low) // width
        counts[index] = counts.get(index, 0) + 1
    last = (high - low) // width
    return [{"low": low + i * width, "high": low + (i + 1) * width - 1, "count": counts.get(i, 0)} for i in range(last + 1)]


def _example(cfg: InspectConfig, examples: list[TokenizedExample], tokenizer: Any, console: Console, stats: dict[str, Any]) -> str:
    """The chosen example with trained spans marked ⟦like this⟧; prints it styled on a terminal."""
    if not examples:
        return ""
    if cfg.example >= len(examples):
        raise DataError(f"example={cfg.example} does not exist: {cfg.data.train} has {len(examples)} examples (0 to {len(examples) - 1})")
    segments = _segments(examples[cfg.example], tokenizer)
    stats["example_segments"] = [{"trained": trained, "text": text} for trained, text in segments]
    return "".join(f"{TRAINED_OPEN}{text}{TRAINED_CLOSE}" if trained else text for trained, text in segments)


def _segments(example: TokenizedExample, tokenizer: Any) -> list[tuple[bool, str]]:
    """Runs of consecutive tokens with the same trained/masked state, decoded."""
    runs: list[tuple[bool, list[int]]] = []
    for token, label in zip(example.input_ids, example.labels):
        trained = label != IGNORE_INDEX
        if runs and runs[-1][0] == trained:
            runs[-1][1].append(token)
        else:
            runs.append((trained, [token]))
    return [(trained, tokenizer.decode(ids, skip_special_tokens=False)) for trained, ids in runs]


# --------------------------------------------------------------------------- printing


def _report(stats: dict[str, Any], rejects: list[Reject], console: Console) -> None:
    table = Table(show_header=False, box=None)
    for label, value in (
        ("path", stats["path"]),
        ("format", stats["format"]),
        ("records", stats["records"]),
        ("rejected", stats["rejected"]),
        ("examples", stats["examples"]),
        ("truncated", f"{stats['truncated']} (longer than max_length={stats['max_length']})"),
        ("tokens", stats["tokens"]),
        ("trained", f"{stats['trained_tokens']} tokens ({100 * stats['trained_share']:.1f}%), masked {100 * stats['masked_share']:.1f}%"),
        ("length", f"min {stats['length_min']}, mean {stats['length_mean']}, max {stats['length_max']}"),
    ):
        table.add_row(Text(label, style="bold"), Text(str(value)))
    console.print(table)
    for reject in rejects[:SHOWN_REJECTS]:
        console.print(Text(f"  rejected {reject.where()}: {reject.reason}", style="yellow"))
    if len(rejects) > SHOWN_REJECTS:
        console.print(Text(f"  … and {len(rejects) - SHOWN_REJECTS} more"))
    _print_histogram(stats["histogram"], console)
    _print_example(stats, console)


def _print_histogram(bins: list[dict[str, int]], console: Console) -> None:
    if not bins:
        return
    console.print(Text("\ntokens per example", style="bold"))
    top = max(b["count"] for b in bins) or 1
    span = len(str(bins[-1]["high"]))
    for b in bins:
        bar = "█" * round(BAR_WIDTH * b["count"] / top)
        console.print(Text(f"  {b['low']:>{span}}–{b['high']:<{span}} {bar} {b['count']}"))


def _print_example(stats: dict[str, Any], console: Console) -> None:
    segments = stats.get("example_segments")
    if not segments:
        return
    console.print(Text("\nexample (trained tokens marked)", style="bold"))
    if not console.is_terminal:
        console.print(Text(stats["example_text"]))
        return
    text = Text()
    for segment in segments:
        text.append(segment["text"], style="bold green" if segment["trained"] else "dim")
    console.print(text)
