"""Red-team numbers and the report (results.json, report.md, report.html).

The unit is a prompt: a probe, or one mutator's variant of it. Its attack success is the share of
its attempts that succeeded; the attack success rate (ASR) of a group is the mean of those shares,
and `any attempt` the share of prompts where at least one attempt succeeded. Intervals are
percentile bootstraps over prompts (attempts of one prompt are resampled together, since they are
not independent). Over-refusal probes are not attacks: their rate (the share of attempts the model
refused) is reported on its own and never enters the ASR. Every split (train, heldout, ...) is
also reported by itself, so a model trained on the train split's failures is judged on the rest.

Markdown and HTML come from one list of blocks rendered by honing.evals.report, like `honing eval`'s.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from honing.evals.report import Block, blocks_html, blocks_markdown, interval_chart
from honing.io import write_text_atomic
from honing.evals.stats import bootstrap_mean
from honing.redteam.probes import CATEGORIES
from honing.redteam.runner import Outcome

EXAMPLE_CHARS = 500


def _interval(values: list[float], confidence: float, resamples: int) -> dict[str, Any]:
    interval = bootstrap_mean(values, confidence=confidence, resamples=resamples, seed=0)
    return interval.as_dict() if values else {"mean": None, "low": None, "high": None, "n": 0}


def _group(outcomes: list[Outcome], confidence: float, resamples: int) -> dict[str, Any]:
    return {"asr": _interval([o.rate for o in outcomes], confidence, resamples),
            "asr_any": _interval([float(o.failures > 0) for o in outcomes], confidence, resamples),
            "prompts": len(outcomes), "attempts": sum(len(o.attempts) for o in outcomes),
            "successes": sum(o.failures for o in outcomes)}


def _ordered_categories(names: set[str]) -> list[str]:
    return [c for c in CATEGORIES if c in names] + sorted(names - set(CATEGORIES))


def summarise(outcomes: list[Outcome], *, confidence: float = 0.95, resamples: int = 2000) -> dict[str, Any]:
    """ASR overall, per category, per mutator and per split; the over-refusal rate; the category × mutator matrix."""
    attacks = [o for o in outcomes if o.probe.attack]
    refusals = [o for o in outcomes if not o.probe.attack]

    def by(key, items):
        groups: dict[str, list[Outcome]] = defaultdict(list)
        for outcome in items:
            groups[key(outcome)].append(outcome)
        return groups

    categories = by(lambda o: o.probe.category, attacks)
    mutators = by(lambda o: o.probe.mutator, attacks)
    matrix = {c: {m: sum(o.rate for o in group) / len(group)
                  for m, group in by(lambda o: o.probe.mutator, categories[c]).items()}
              for c in _ordered_categories(set(categories))}
    splits = {}
    for split, items in sorted(by(lambda o: o.probe.split, outcomes).items()):
        split_attacks = [o for o in items if o.probe.attack]
        splits[split] = {"overall": _group(split_attacks, confidence, resamples),
                         "by_category": {c: _group(g, confidence, resamples)
                                         for c, g in by(lambda o: o.probe.category, split_attacks).items()},
                         "over_refusal": _group([o for o in items if not o.probe.attack], confidence, resamples)}
    rounds = {str(r): _group(g, confidence, resamples) for r, g in sorted(by(lambda o: o.round, attacks).items())}
    return {
        "overall": _group(attacks, confidence, resamples),
        "by_category": {c: _group(categories[c], confidence, resamples) for c in _ordered_categories(set(categories))},
        "by_mutator": {m: _group(g, confidence, resamples) for m, g in mutators.items()},
        "matrix": matrix,
        "over_refusal": _group(refusals, confidence, resamples),
        "by_split": splits,
        "by_round": rounds if len(rounds) > 1 else {},
    }


def worst_examples(outcomes: list[Outcome], limit: int, *, attack: bool = True) -> list[dict[str, Any]]:
    """The prompts that failed most often (one failed attempt each), attacks or over-refusals."""
    failed = [o for o in outcomes if o.probe.attack == attack and o.failures]
    failed.sort(key=lambda o: (-o.rate, list(CATEGORIES).index(o.probe.category) if o.probe.category in CATEGORIES
                               else len(CATEGORIES), o.probe.id))
    examples = []
    for outcome in failed[:limit]:
        attempt = next(a for a in outcome.attempts if a.failed)
        examples.append({"id": outcome.probe.id, "category": outcome.probe.category, "mutator": outcome.probe.mutator,
                         "split": outcome.probe.split, "rate": outcome.rate,
                         "prompt": _conversation_text(attempt.conversation), "answer": attempt.answer,
                         "evidence": "; ".join(f"{v.detector}: {v.evidence}" for v in attempt.verdicts if v.hit)
                                     or "; ".join(f"{v.detector}: {v.evidence}" for v in attempt.verdicts)})
    return examples


def _conversation_text(conversation: list[dict[str, str]]) -> str:
    return "\n".join(f"[{m['role']}] {m['content']}" for m in conversation)


# --------------------------------------------------------------------------- rendering


def percent_interval(interval: dict[str, Any] | None) -> str:
    if not interval or interval.get("mean") is None:
        return "n/a"
    mean, low, high = interval["mean"], interval.get("low"), interval.get("high")
    return f"{mean * 100:.1f}% [{low * 100:.1f}, {high * 100:.1f}]"


def _setting(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "—"
    return "—" if value is None else str(value)


def _clip(text: Any, limit: int = EXAMPLE_CHARS) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= limit else f"{text[:limit].rstrip()}… [+{len(text) - limit} chars]"


def _rate_rows(groups: dict[str, dict[str, Any]]) -> list[list[str]]:
    return [[name, str(g["prompts"]), f"{g['successes']}/{g['attempts']}", percent_interval(g["asr"]),
             percent_interval(g["asr_any"])] for name, g in groups.items()]


def _chart(groups: dict[str, dict[str, Any]], label: str) -> Block:
    rows = [(name, (g["asr"]["mean"], g["asr"]["low"], g["asr"]["high"])) for name, g in groups.items()]
    return Block("html", interval_chart(rows, label))


def report_blocks(results: dict[str, Any], charts: bool) -> list[Block]:
    summary, settings = results["summary"], results["settings"]
    overall, refusal = summary["overall"], summary["over_refusal"]
    level = int(results["settings"]["confidence"] * 100)
    header = ["", "prompts", "successes/attempts", f"ASR [{level}% CI]", "any attempt"]
    blocks = [Block("h1", results["title"]),
              Block("p", f"created {results['created']} · run directory {results['run_dir']}", "meta"),
              Block("h2", "Setup"),
              Block("table", (["setting", "value"], [[k, _setting(v)] for k, v in settings.items()]))]
    lines = [f"Attack success rate {percent_interval(overall['asr'])} over {overall['prompts']} attack prompts × "
             f"{settings['attempts']} attempts ({overall['successes']} of {overall['attempts']} attempts succeeded); "
             f"at least one attempt succeeded on {percent_interval(overall['asr_any'])} of the prompts."]
    if refusal["prompts"]:
        lines.append(f"Over-refusal rate {percent_interval(refusal['asr'])}: the share of attempts at {refusal['prompts']} "
                     "harmless-but-risky-looking prompts that the model refused.")
    gate = results.get("gate")
    if gate:
        lines.append(f"Gate ({'passed' if gate['passed'] else 'FAILED'}): ASR {gate['asr'] * 100:.1f}% "
                     f"{'≤' if gate['passed'] else '>'} fail_above {gate['fail_above'] * 100:.1f}%.")
    blocks += [Block("h2", "Summary")] + [Block("p", line) for line in lines]
    blocks += [Block("h2", "Attack success rate by category"), Block("table", (["category", *header[1:]],
                                                                               _rate_rows(summary["by_category"])))]
    if charts and summary["by_category"]:
        blocks.append(_chart(summary["by_category"], "attack success rate by category"))
    blocks += [Block("h2", "By mutator"), Block("p", "Attack categories only; none = the probe as written.", "meta"),
               Block("table", (["mutator", *header[1:]], _rate_rows(summary["by_mutator"])))]
    if charts and summary["by_mutator"]:
        blocks.append(_chart(summary["by_mutator"], "attack success rate by mutator"))
    mutators = list(summary["by_mutator"])
    if summary["matrix"] and len(mutators) > 1:
        rows = [[c] + [f"{row[m] * 100:.0f}%" if m in row else "—" for m in mutators]
                for c, row in summary["matrix"].items()]
        blocks += [Block("h3", "Category × mutator (ASR)"), Block("table", (["category", *mutators], rows))]
    if refusal["prompts"]:
        blocks += [Block("h2", "Over-refusal"), Block("p", "Harmless requests that look risky; the rate is the share "
                                                           "of attempts the model refused (lower is better).", "meta"),
                   Block("table", (["", "prompts", "refused/attempts", "over-refusal rate", "any attempt"],
                                   _rate_rows({"over_refusal": refusal})))]
    blocks += _split_blocks(summary, header)
    if summary.get("by_round"):
        blocks += [Block("h2", "Attacker rounds"), Block("p", "Round 0 is the suite; round n the attacks the attacker "
                                                              "wrote from the successful ones of the rounds before.", "meta"),
                   Block("table", (["round", *header[1:]], _rate_rows(summary["by_round"])))]
    blocks += _example_blocks("Worst examples", results.get("worst") or [])
    blocks += _example_blocks("Over-refusals", results.get("over_refusals") or [])
    throughput = results.get("throughput") or {}
    if throughput:
        rows = [[k, str(v)] for k, v in throughput.items()]
        blocks += [Block("h2", "Throughput"), Block("table", (["measure", "value"], rows))]
    return blocks


def _split_blocks(summary: dict[str, Any], header: list[str]) -> list[Block]:
    splits = summary["by_split"]
    if not splits:
        return []
    rows = [[split, str(s["overall"]["prompts"]), f"{s['overall']['successes']}/{s['overall']['attempts']}",
             percent_interval(s["overall"]["asr"]), percent_interval(s["overall"]["asr_any"]),
             percent_interval(s["over_refusal"]["asr"])] for split, s in splits.items()]
    blocks = [Block("h2", "By split"),
              Block("p", "Probes tagged heldout are kept out of training data (honing constitute uses the train "
                         "split's failures), so their rate shows whether a fix generalises.", "meta"),
              Block("table", (["split", *header[1:], "over-refusal"], rows))]
    for split, s in splits.items():
        if len(splits) > 1 and s["by_category"]:
            blocks += [Block("h3", f"{split}: by category"),
                       Block("table", (["category", *header[1:]], _rate_rows(s["by_category"])))]
    return blocks


def _example_blocks(title: str, examples: list[dict[str, Any]]) -> list[Block]:
    if not examples:
        return []
    blocks = [Block("h2", title)]
    for example in examples:
        rows = [["prompt", _clip(example["prompt"])], ["answer", _clip(example["answer"])],
                ["evidence", _clip(example["evidence"])]]
        caption = (f"{example['id']} · {example['category']} · {example['mutator']} · {example['split']} · "
                   f"failed {example['rate'] * 100:.0f}% of attempts")
        blocks.append(Block("table", ([caption, ""], rows), "examples"))
    return blocks


def write_reports(results: dict[str, Any], directory: str | Path) -> dict[str, Path]:
    directory = Path(directory)
    return {"markdown": write_text_atomic(directory / "report.md", blocks_markdown(report_blocks(results, charts=False))),
            "html": write_text_atomic(directory / "report.html", blocks_html(report_blocks(results, charts=True),
                                                                             results["title"]))}
