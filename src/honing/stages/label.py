"""`honing label`: collect human preferences in the terminal.

    items: prompts × two sources of answers (files, or generated once and kept next to the output)
    ─▶ drop those already decided (the decisions log and the preference file say which)
    ─▶ for each: show the prompt and the two answers as A and B (which source is A is drawn per item)
    ─▶ read a key ─▶ append the pair and the decision, flushed to disk ─▶ summary

Files, all beside `output`:
- `<output>`: one {prompt, chosen, rejected} line per A/B decision (the format `honing dpo` and
  `honing reward` read), plus source_chosen, source_rejected, labeller, labelled_at and item;
- `<output>.decisions.jsonl`: every decision (a, b, tie, skip, and identical for the items whose two
  answers are the same, which are not shown), with which source was shown as A;
- `<output>.responses.json`: generated answers, keyed by the settings that made them, so a rerun
  does not generate again.

An item is known by a hash of its prompt and its two answers, so a rerun skips exactly what was
decided, whatever the order of the prompts file. Each line is written, flushed and fsynced before
the next item is shown: Ctrl-C or a crash loses nothing already decided.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import random
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from honing.config import LabelConfig, LabelSourceConfig
from honing.errors import DataError
from honing.io import append_jsonl, truncate, write_json_atomic
from honing.data.prompts import prompt_of, read_prompts

Prompt = str | list[dict[str, Any]]
KEYS = {"a": "a", "b": "b", "t": "tie", "s": "skip", "u": "undo", "q": "quit"}
HELP = "a: A is better · b: B is better · t: tie · s: skip · u: undo the last decision · q: quit (a rerun resumes)"
SIDES = ("first", "second")


@dataclass(frozen=True)
class Item:
    """One prompt with an answer from each source."""

    key: str
    """sha256 (16 hex digits) of the prompt and both answers: what the logs remember."""
    index: int
    """Position in the prompts (0-based)."""
    prompt: Prompt
    """As written to the preference file (with the system prompt, when one is configured)."""
    answers: tuple[str, str]
    """(first source's answer, second source's answer)."""

    def shown_swapped(self, seed: int) -> bool:
        """Whether the second source is shown as A: a fair coin per item, the same on every rerun."""
        return random.Random(f"{seed}:{self.key}").random() < 0.5


# --------------------------------------------------------------------------- items


def item_key(prompt: Prompt, first: str, second: str) -> str:
    text = json.dumps([prompt, first, second], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def source_names(cfg: LabelConfig) -> tuple[str, str]:
    """The names written as source_chosen / source_rejected."""
    sides = [getattr(cfg, side) for side in SIDES]
    names = [side.name or side.responses or _model_name(side) for side in sides]
    if names[0] == names[1]:  # one model sampled twice, or one file given twice
        if all(not side.responses for side in sides):
            names = [f"{name}#seed{seed}" for name, seed in zip(names, side_seeds(cfg))]
        else:
            names = [f"{side}:{name}" for side, name in zip(SIDES, names)]
    return names[0], names[1]


def _model_name(side: LabelSourceConfig) -> str:
    if side.model.endpoint:
        return f"{side.model.endpoint_model}@{side.model.endpoint}"
    name = side.model.path or "embedded"
    return f"{name}+{side.model.adapter}" if side.model.adapter else name


def side_seeds(cfg: LabelConfig) -> tuple[int, int]:
    first = cfg.first.seed if cfg.first.seed is not None else cfg.sampling.seed
    second = cfg.second.seed if cfg.second.seed is not None else cfg.sampling.seed + 1
    return first, second


def build_items(cfg: LabelConfig) -> list[Item]:
    """Every prompt with its two answers, read from the responses files or generated (once)."""
    from honing.data.prompts import as_messages

    prompts = [prompt for _, prompt in read_prompts(cfg.prompts)] if cfg.prompts else None
    answers: dict[str, list[str]] = {}
    for side in SIDES:
        source = getattr(cfg, side)
        if source.responses:
            file_prompts, answers[side] = read_responses(source.responses, prompts)
            prompts = prompts if prompts is not None else file_prompts
    assert prompts is not None  # the config requires prompts unless both sides are files
    missing = [side for side in SIDES if side not in answers]
    if missing:
        answers.update(generate_answers(cfg, prompts, missing))
    items = []
    for index, (prompt, first, second) in enumerate(zip(prompts, answers["first"], answers["second"])):
        written = as_messages(prompt, cfg.system_prompt) if cfg.system_prompt else prompt
        items.append(Item(item_key(written, first, second), index, written, (first, second)))
    return items


def read_responses(path: str, prompts: list[Prompt] | None) -> tuple[list[Prompt], list[str]]:
    """(prompts, answers) of a `honing generate` output. With `prompts` given, line i must answer
    prompt i: a record that names its prompt is checked against it."""
    from honing.data.loading import read_records

    file_prompts, answers = [], []
    for file, line, record in read_records(path):
        where = f"{file}:{line}"
        answer = record.get("response") if isinstance(record, dict) else None
        if not isinstance(answer, str):
            raise DataError(f"{where}: no `response` string (give the output of `honing generate`)")
        try:
            prompt = prompt_of(record, where)
        except DataError:
            if prompts is None:
                raise
            prompt = None
        if prompts is not None and prompt is not None and len(answers) < len(prompts) and prompt != prompts[len(answers)]:
            raise DataError(f"{where}: answers a different prompt than prompt {len(answers) + 1} of the prompts file; "
                            "the responses must be in the prompts' order, one per prompt")
        file_prompts.append(prompt)
        answers.append(answer)
    expected = len(prompts) if prompts is not None else None
    if expected is not None and len(answers) != expected:
        raise DataError(f"{path} has {len(answers)} responses for {expected} prompts: give one response per prompt, in order")
    return file_prompts, answers


# --------------------------------------------------------------------------- generation, cached


def generate_answers(cfg: LabelConfig, prompts: list[Prompt], sides: list[str]) -> dict[str, list[str]]:
    """Answers of the model sides, from <output>.responses.json when the same settings made them
    before, else generated now (each side saved as soon as it is done)."""
    from honing.models.chat import ChatModel
    from honing.ui import console

    cache_path = Path(f"{cfg.output}.responses.json")
    cache = json.loads(cache_path.read_text(encoding="utf-8")) if cache_path.is_file() else {}
    prompts_sha = hashlib.sha256(json.dumps(prompts, ensure_ascii=False, sort_keys=True).encode()).hexdigest()
    seeds = dict(zip(SIDES, side_seeds(cfg)))
    out: dict[str, list[str]] = {}
    model, loaded_for = None, None
    for side in sides:
        source = getattr(cfg, side)
        sampling = cfg.sampling.model_copy(update={"seed": seeds[side]})
        spec = {"model": source.model.model_dump(mode="json"), "sampling": sampling.model_dump(mode="json"),
                "system_prompt": cfg.system_prompt, "chat_template": cfg.chat_template, "batch_size": cfg.batch_size,
                "prompts_sha256": prompts_sha}
        saved = cache.get(side)
        if saved and saved.get("spec") == spec and len(saved.get("responses", [])) == len(prompts):
            console.print(f"{side}: {len(prompts)} answers reused from {cache_path}")
            out[side] = saved["responses"]
            continue
        which = json.dumps(spec["model"], sort_keys=True)
        if loaded_for != which:
            model = None  # let the previous model go before loading the next
            model = ChatModel.load(source.model, role=f"{side} model", batch_size=cfg.batch_size, progress=True)
            loaded_for = which
        console.print(f"{side}: generating {len(prompts)} answers (seed {seeds[side]})")
        assert model is not None
        out[side] = model.texts(prompts, sampling, chat_template=cfg.chat_template, system_prompt=cfg.system_prompt)
        cache[side] = {"spec": spec, "responses": out[side]}
        write_json_atomic(cache_path, cache, indent=1, ensure_ascii=False, newline=False)
    return out


# --------------------------------------------------------------------------- the files


class PreferenceLog:
    """The preference file and the decisions log: what was decided before, appending with fsync,
    and undoing this session's last decision (both files are cut back to where they were)."""

    def __init__(self, output: str | Path):
        self.output = Path(output)
        self.decisions = Path(f"{output}.decisions.jsonl")
        self.seen: set[str] = set()
        self.counts: Counter[str] = Counter()
        self._undo: list[tuple[str, str, int, int]] = []  # (item key, decision, output size, decisions size)
        for path in (self.output, self.decisions):
            for record in _read_log(path):
                if isinstance(record, dict) and isinstance(record.get("item"), str):
                    self.seen.add(record["item"])
                    if path == self.decisions:
                        self.counts[record.get("decision", "?")] += 1

    def append(self, item: Item, decision: str, names: tuple[str, str], swapped: bool, labeller: str) -> None:
        """Write one decision: for a or b the preference pair first, then the decisions line (a crash
        between the two still leaves the item marked as done, by the pair's `item`)."""
        shown = (names[1], names[0]) if swapped else names
        answers = (item.answers[1], item.answers[0]) if swapped else item.answers
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        sizes = (_size(self.output), _size(self.decisions))
        preferred = None
        if decision in ("a", "b"):
            win = 0 if decision == "a" else 1
            preferred = shown[win]
            append_jsonl(self.output, [{"prompt": item.prompt, "chosen": answers[win], "rejected": answers[1 - win],
                                        "source_chosen": shown[win], "source_rejected": shown[1 - win],
                                        "labeller": labeller, "labelled_at": now, "item": item.key}])
        append_jsonl(self.decisions, [{"item": item.key, "index": item.index, "decision": decision,
                                       "shown_as_a": shown[0], "shown_as_b": shown[1], "preferred": preferred,
                                       "labeller": labeller, "labelled_at": now}])
        self.seen.add(item.key)
        self.counts[decision] += 1
        if decision != "identical":
            self._undo.append((item.key, decision, *sizes))

    def undo(self) -> str | None:
        """Take back this session's last decision; returns its item key (None when there is none)."""
        if not self._undo:
            return None
        key, decision, output_size, decisions_size = self._undo.pop()
        truncate(self.output, output_size)
        truncate(self.decisions, decisions_size)
        self.seen.discard(key)
        self.counts[decision] -= 1
        return key


def _read_log(path: Path) -> Iterator[Any]:
    """The records of an existing JSONL log; a last line without its newline is completed if it is
    whole JSON and refused if not (an interrupted write), never silently dropped."""
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not valid JSON ({err.msg}); fix or remove that line and run again") from None
        yield record
    if text and not text.endswith("\n"):
        with path.open("a", encoding="utf-8") as handle:
            handle.write("\n")


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


# --------------------------------------------------------------------------- the terminal


def terminal_keys() -> Iterator[str]:
    """Single key presses from a terminal (no Enter needed); from a pipe or without termios, the
    first character of each line."""
    if not sys.stdin.isatty():
        for line in sys.stdin:
            yield line.strip()[:1]
        return
    try:
        import termios
        import tty
    except ImportError:  # not a POSIX terminal
        for line in sys.stdin:
            yield line.strip()[:1]
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)  # keys arrive one by one; Ctrl-C still interrupts
        while True:
            key = os.read(fd, 1).decode("utf-8", errors="ignore")
            if key in ("", "\x04"):  # end of input, Ctrl-D
                return
            yield key
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _prompt_text(prompt: Prompt) -> Any:
    from rich.text import Text

    if isinstance(prompt, str):
        return Text(prompt)
    text = Text()
    for i, message in enumerate(prompt):
        text.append(("\n\n" if i else "") + f"{message['role']}: ", style="bold")
        text.append(str(message["content"]))
    return text


def show(console: Any, item: Item, swapped: bool, position: int, total: int, counts: Counter[str]) -> None:
    """The prompt, then the answers as A and B (side by side on a wide terminal), then the keys."""
    from rich.panel import Panel
    from rich.rule import Rule
    from rich.table import Table
    from rich.text import Text

    answers = (item.answers[1], item.answers[0]) if swapped else item.answers
    pairs = counts["a"] + counts["b"]
    console.print(Rule(f"item {position} of {total} · {pairs} pairs, {counts['tie']} ties, {counts['skip']} skipped"))
    console.print(Panel(_prompt_text(item.prompt), title="prompt", title_align="left"))
    panels = [Panel(Text(answer or "(empty answer)"), title=name, title_align="left") for name, answer in zip("AB", answers)]
    if console.width >= 100:
        grid = Table.grid(expand=True, padding=(0, 1))
        grid.add_column(ratio=1)
        grid.add_column(ratio=1)
        grid.add_row(*panels)
        console.print(grid)
    else:
        for panel in panels:
            console.print(panel)
    console.print(f"[dim]{HELP}[/]")


# --------------------------------------------------------------------------- the session


def label(cfg: LabelConfig, *, keys: Iterable[str] | None = None, console: Any = None) -> dict[str, Any]:
    """Show every undecided item and record the labeller's keys. `keys` replaces the terminal (tests,
    scripts): each element's first character is one key press. Returns a summary."""
    if console is None:
        from honing.ui import console
    items = build_items(cfg)
    names = source_names(cfg)
    labeller = cfg.labeller or _login_name()
    log = PreferenceLog(cfg.output)
    identical = [item for item in items if item.key not in log.seen and item.answers[0] == item.answers[1]]
    for item in identical:
        log.append(item, "identical", names, item.shown_swapped(cfg.seed), labeller)
    if identical:
        console.print(f"[yellow]{len(identical)} items have two identical answers: logged as identical, not shown[/]")
    pending = [item for item in items if item.key not in log.seen]
    all_keys = {item.key for item in items}  # an item repeated word for word is one item
    already = len(items) - len(pending)
    console.print(f"{len(items)} items, {already} decided before, {len(pending)} to label → {cfg.output}")
    stream = iter(keys) if keys is not None else terminal_keys()
    session: Counter[str] = Counter()
    status, position = "completed", 0
    try:
        while position < len(pending):
            item = pending[position]
            if item.key in log.seen:
                position += 1
                continue
            swapped = item.shown_swapped(cfg.seed)
            show(console, item, swapped, len(log.seen & all_keys) + 1, len(all_keys), log.counts)
            key = _next_key(stream, console)
            if key == "quit":
                status = "stopped"
                break
            if key == "undo":
                undone = log.undo()
                if undone is None:
                    console.print("[yellow]nothing to undo in this session[/]")
                else:
                    position = next(i for i, candidate in enumerate(pending) if candidate.key == undone)
                    session["undone"] += 1
                    console.print("[yellow]undone: that item again[/]")
                continue
            log.append(item, key, names, swapped, labeller)
            session[key] += 1
            position += 1
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    remaining = sum(1 for item in items if item.key not in log.seen)
    summary = {"status": status, "output": str(cfg.output), "decisions": str(log.decisions), "items": len(items),
               "remaining": remaining, "pairs": log.counts["a"] + log.counts["b"], "ties": log.counts["tie"],
               "skipped": log.counts["skip"], "identical": log.counts["identical"],
               "this_session": {k: session[k] for k in ("a", "b", "tie", "skip", "undone")}}
    console.print(f"{cfg.output}: {summary['pairs']} preference pairs; {summary['ties']} ties and {summary['skipped']} "
                  f"skipped in the decisions log; {remaining} of {len(all_keys)} items left"
                  + (" (run the same command again to go on)" if remaining else ""))
    return summary


def _next_key(stream: Iterator[str], console: Any) -> str:
    """The next meaningful key: a, b, tie, skip, undo or quit (end of input quits)."""
    for raw in stream:
        key = KEYS.get(raw[:1].lower()) if raw else None
        if key is not None:
            return key
        if raw and raw[:1] not in ("\n", "\r", " "):
            console.print(f"[yellow]unknown key {raw[:1]!r}[/] — {HELP}")
    return "quit"


def _login_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


run = label
