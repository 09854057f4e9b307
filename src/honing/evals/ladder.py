"""The ladder's numbers and its report: quality per rung with bootstrap intervals, each rung's paired difference
from the best, what each rung cost, and the recommendation.

    best            the rung with the highest primary score (the lowest for a loss); ties go to the earlier rung
    vs best         rung − best over the same examples, resampled jointly (a percentile bootstrap)
    significantly worse   the whole interval of that difference is on the worse side of zero and, for a 0/1 metric,
                    an exact McNemar test on the examples where the two disagree agrees (p < 1 − confidence): the
                    bootstrap alone calls 5 wins and 0 losses in 100 significant, the exact test (p = 0.06) does not
    recommended     the earliest rung in ladder order (zero-shot, few-shot, RAG, fine-tune, fine-tune + RAG: each
                    adds work to set up and keep up) that is not significantly worse than the best

Costs: prompt tokens and answer tokens per answer (the model's tokenizer, chat template included), seconds per
answer (the rung's generation wall time over its answers, at the configured batch size, measured when the answer
was computed), answer tokens per second, retrieval milliseconds per question, and the fine-tune's training minutes
(the run's own record; "reused" when the ladder did not train it this time).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from honing.evals.charts import bar_chart, interval_chart
from honing.evals.report import Block, blocks_html, blocks_markdown, clip
from honing.evals.scoring import difference, higher_is_better, interval, mean_rows, metric_rows
from honing.evals.tasks import metric_names, primary_metric
from honing.io import write_text_atomic

LABELS = {"zero_shot": "zero-shot", "few_shot": "few-shot", "rag": "RAG", "finetune": "fine-tuned",
          "finetune_rag": "fine-tuned + RAG"}
EXAMPLES_SHOWN = 6


def _worse(diff: dict[str, float], higher: bool) -> bool:
    return diff["high"] < 0 if higher else diff["low"] > 0


def mcnemar_p(rung: list[float | None], best: list[float | None]) -> float | None:
    """Two-sided exact McNemar p-value of two 0/1 score lists over the same examples (None: not 0/1 scores)."""
    pairs = list(zip(rung, best))
    if not pairs or any(a not in (0.0, 1.0) or b not in (0.0, 1.0) for a, b in pairs):
        return None
    losses = sum(a < b for a, b in pairs)
    wins = sum(a > b for a, b in pairs)
    n = losses + wins
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(losses, wins) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def is_share(results: dict[str, Any]) -> bool:
    """The primary metric's scores all lie in [0, 1]: shown as percentages, differences as points."""
    return all(v is None or 0.0 <= v <= 1.0 for rows in results["per_example"].values()
               for v in (row.get(results["metric"]) for row in rows))


def _cost(rows: list[dict[str, Any]], retrieval_seconds: float, training: dict[str, Any] | None) -> dict[str, Any]:
    n = len(rows)
    seconds = sum(r["seconds"] for r in rows)
    new_tokens = sum(r["new_tokens"] for r in rows)
    return {"prompt_tokens": sum(r["prompt_tokens"] for r in rows) / n, "answer_tokens": new_tokens / n,
            "seconds_per_answer": seconds / n, "tokens_per_s": new_tokens / seconds if seconds > 0 else None,
            "retrieval_ms": retrieval_seconds / n * 1000 if retrieval_seconds else None,
            "training_minutes": training["minutes"] if training else None,
            "training_reused": training["reused"] if training else None,
            "training_truncated": training["truncated"] if training else None,
            "stopped_at_length": sum(r.get("finish_reason") == "length" for r in rows)}


def score_ladder(cfg: Any, examples: list[Any], answers: dict[str, Any], tuned: Any) -> dict[str, Any]:
    """results.json of `honing ladder`: per rung its scores, difference from the best, cost; the recommendation."""
    from honing.rag.metrics import groundedness

    task = cfg.task
    primary = primary_metric(task)
    higher = higher_is_better(primary)
    rows = {rung: metric_rows(task, examples, done.rows) for rung, done in answers.items()}
    means = {rung: interval(metrics[primary], cfg).mean for rung, metrics in rows.items()}
    order = list(answers)
    best = max(order, key=lambda r: (means[r] if higher else -means[r], -order.index(r)))
    training = ({"minutes": tuned.minutes, "reused": tuned.reused, "truncated": tuned.truncated}
                if tuned is not None else None)
    rungs: dict[str, Any] = {}
    for rung, metrics in rows.items():
        diff = difference(metrics[primary], rows[best][primary], cfg)
        entry = {
            "label": LABELS[rung],
            "quality": interval(metrics[primary], cfg).as_dict(),
            "vs_best": diff.as_dict() if diff is not None else None,
            "metrics": {name: interval(values, cfg).as_dict() for name, values in metrics.items()},
            "cost": _cost(answers[rung].rows, answers[rung].retrieval_seconds,
                          training if rung.startswith("finetune") else None),
            "computed": answers[rung].computed,
        }
        entry["mcnemar_p"] = mcnemar_p(metrics[primary].per_example, rows[best][primary].per_example)
        entry["significantly_worse"] = (rung != best and diff is not None and _worse(entry["vs_best"], higher)
                                        and (entry["mcnemar_p"] is None or entry["mcnemar_p"] < 1 - cfg.confidence))
        if any(r["context"] for r in answers[rung].rows):
            entry["groundedness_overlap"] = interval(mean_rows(
                [groundedness(r["answer"], r["context"]) for r in answers[rung].rows]), cfg).as_dict()
        rungs[rung] = entry
    pick = next(r for r in order if not rungs[r]["significantly_worse"])
    results = {
        "title": f"honing ladder · {task.name}", "task": task.name, "metric": primary, "higher_is_better": higher,
        "examples": len(examples), "metrics": metric_names(task), "best": best, "rungs": rungs,
        "recommendation": {"rung": pick, "why": ""},
        "bootstrap": {"resamples": cfg.resamples, "confidence": cfg.confidence},
        "model": cfg.model.path or "embedded SmolLM2-135M-Instruct", "batch_size": cfg.batch_size,
        "adapter": str(tuned.adapter) if tuned is not None else None,
        "per_example": {rung: [{name: values.per_example[i] for name, values in metrics.items()}
                               for i in range(len(examples))] for rung, metrics in rows.items()},
        "shown": _shown(examples, answers, rows, primary),
    }
    results["recommendation"]["why"] = _why(pick, best, rungs, cfg.confidence, is_share(results))
    return results


def _why(pick: str, best: str, rungs: dict[str, Any], confidence: float, share: bool) -> str:
    level = f"{confidence:.0%}"
    if pick == best:
        earlier = [LABELS[r] for r in rungs if r != best and list(rungs).index(r) < list(rungs).index(best)]
        before = f"; every earlier rung ({', '.join(earlier)}) is significantly worse at {level}" if earlier else ""
        return f"{LABELS[best]} scores best{before}"
    d = rungs[pick]["vs_best"]
    if d is None:
        return f"{LABELS[pick]} is the earliest rung; its scores do not pair with the best's, so nothing shows it worse"
    return (f"{LABELS[pick]} is the earliest rung not significantly worse than the best ({LABELS[best]}): its "
            f"difference is {difference_text(d, share)}, which is not enough to call it worse at {level} (not "
            "significantly worse is not the same as equal: a larger held-out set narrows the interval)")


def _shown(examples: list[Any], answers: dict[str, Any], rows: dict[str, Any], primary: str) -> list[dict[str, Any]]:
    """A few examples on which the rungs' scores differ, for the report."""
    from honing.data.prompts import as_messages, last_user_text

    shown = []
    for i, example in enumerate(examples):
        scores = {rung: metrics[primary].per_example[i] for rung, metrics in rows.items()}
        if len({s for s in scores.values() if s is not None}) > 1:
            question = last_user_text(as_messages(example.prompt))
            shown.append({"id": example.id, "question": question, "reference": example.record.get("reference")
                          or example.record.get("references"),
                          "answers": {rung: done.rows[i]["answer"] for rung, done in answers.items()},
                          "scores": scores})
        if len(shown) >= EXAMPLES_SHOWN:
            break
    return shown


# --------------------------------------------------------------------------- the report


def score_text(value: float | None, share: bool) -> str:
    if value is None:
        return "n/a"
    return f"{value * 100:.1f}%" if share else f"{value:.4g}"


def interval_text(interval: dict[str, float], share: bool) -> str:
    return f"{score_text(interval['mean'], share)} [{score_text(interval['low'], share)}, " \
           f"{score_text(interval['high'], share)}]"


def difference_text(d: dict[str, float] | None, share: bool) -> str:
    """A paired difference: in points for a share (+3.0 [−1.0, +7.0]), else in the metric's own units."""
    if d is None:
        return "n/a"
    scale, spec = (100, "+.1f") if share else (1, "+.4g")
    return f"{d['mean'] * scale:{spec}} [{d['low'] * scale:{spec}}, {d['high'] * scale:{spec}}]"


def _number(value: float | None, spec: str = ".1f") -> str:
    return "n/a" if value is None else format(value, spec)


def ladder_blocks(results: dict[str, Any], charts: bool) -> list[Block]:
    rungs, metric = results["rungs"], results["metric"]
    level = f"{results['bootstrap']['confidence']:.0%}"
    blocks = [Block("h1", results["title"]),
              Block("p", f"{results['examples']} held-out examples; model {results['model']}; metric {metric} "
                         f"({level} bootstrap intervals, {results['bootstrap']['resamples']} resamples; differences "
                         f"are paired over the same examples); generation at batch size {results['batch_size']}.",
                    "meta"),
              Block("h2", "Recommendation"),
              Block("p", f"{LABELS[results['recommendation']['rung']]}: {results['recommendation']['why']}.")]
    share = is_share(results)
    blocks.append(Block("h2", "Quality"))
    quality = [[row["label"], interval_text(row["quality"], share),
                "best" if rung == results["best"] else difference_text(row["vs_best"], share),
                "" if rung == results["best"] else "n/a" if row["mcnemar_p"] is None else f"{row['mcnemar_p']:.3g}",
                "yes" if row["significantly_worse"] else "no",
                score_text(row["groundedness_overlap"]["mean"], True) if "groundedness_overlap" in row else ""]
               for rung, row in rungs.items()]
    blocks.append(Block("table", (["rung", metric, f"vs best ({'points' if share else 'difference'})",
                                   "McNemar p", "significantly worse", "groundedness (overlap)"], quality)))
    cut = next((row["cost"]["training_truncated"] for row in rungs.values() if row["cost"]["training_truncated"]), 0)
    if cut:
        blocks.append(Block("p", f"{cut} training examples of the fine-tune were longer than finetune.max_length and "
                                 "were cut from the end to it (part of their answers not trained; the fine-tune's run record counts them).",
                            "fail"))
    if results.get("train_overlap"):
        blocks.append(Block("p", f"{len(results['train_overlap'])} held-out questions are also in the training data; "
                                 "the fine-tuned rungs have seen their answers.", "fail"))
    if charts:
        blocks.append(Block("html", interval_chart(
            [(row["label"], (row["quality"]["mean"], row["quality"]["low"], row["quality"]["high"]))
             for row in rungs.values()], f"{metric} per rung", plain=not share)))
    blocks.append(Block("h2", "Cost"))
    cost = [[row["label"], _number(row["cost"]["prompt_tokens"], ".0f"), _number(row["cost"]["answer_tokens"]),
             _number(row["cost"]["seconds_per_answer"], ".2f"), _number(row["cost"]["tokens_per_s"]),
             _number(row["cost"]["retrieval_ms"]) if row["cost"]["retrieval_ms"] is not None else "",
             (_number(row["cost"]["training_minutes"]) + (" (reused)" if row["cost"]["training_reused"] else ""))
             if row["cost"]["training_minutes"] is not None else ""]
            for row in rungs.values()]
    blocks.append(Block("table", (["rung", "prompt tokens / answer", "answer tokens", "s / answer", "tokens / s",
                                   "retrieval ms / question", "training minutes"], cost)))
    if charts:
        for key, label, unit in (("prompt_tokens", "prompt tokens per answer", ""),
                                 ("seconds_per_answer", "seconds per answer", " s")):
            blocks.append(Block("html", bar_chart([(row["label"], row["cost"][key]) for row in rungs.values()],
                                                  label, unit)))
    others = [m for m in results["metrics"] if m != metric]
    if others:
        blocks.append(Block("h2", "Every metric"))
        blocks.append(Block("table", (["rung", *results["metrics"]],
                                      [[row["label"], *(score_text(row["metrics"][m]["mean"], _in_unit(row, m))
                                                        for m in results["metrics"])]
                                       for row in rungs.values()])))
    blocks.append(Block("h2", "Examples where the rungs differ"))
    for example in results["shown"]:
        table = [["question", clip(example["question"]), ""], ["reference", clip(example["reference"]), ""]]
        table += [[LABELS[rung], clip(text), _number(example["scores"][rung], ".2f")]
                  for rung, text in example["answers"].items()]
        blocks.append(Block("table", ([f"example {example['id']}", "text", metric], table), "examples"))
    if not results["shown"]:
        blocks.append(Block("p", "Every rung scored the same on every example.", "meta"))
    return blocks


def _in_unit(row: dict[str, Any], metric: str) -> bool:
    interval = row["metrics"][metric]
    return all(v is None or 0.0 <= v <= 1.0 for v in (interval["mean"], interval["low"], interval["high"]))


def write_ladder_reports(results: dict[str, Any], directory: str | Path) -> dict[str, Path]:
    """report.md and report.html (one list of blocks, so the two agree), each written atomically."""
    directory = Path(directory)
    return {"markdown": write_text_atomic(directory / "report.md", blocks_markdown(ladder_blocks(results, False))),
            "html": write_text_atomic(directory / "report.html",
                                      blocks_html(ladder_blocks(results, True), results["title"]))}
