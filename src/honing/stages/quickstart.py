"""`honing quickstart`: the whole loop on the embedded model in a few minutes on a laptop CPU.

    load SmolLM2-135M-Instruct ─▶ score it on held-out support tickets and the general-capability suite (before)
    ─▶ LoRA fine-tune on the bundled training tickets (the sft stage's own code)
    ─▶ score both again (after) ─▶ before/after table, the suite's paired changes, one example, where everything went
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from honing.config import EvalTaskConfig, QuickstartConfig, SamplingConfig
from honing.evals.tasks import Example, data_path
from honing.stages.common import train_and_save
from honing.stages.sft import setup_parts
from honing.train.distributed import setup, teardown
from honing.ui import console

BUNDLED = "<bundled>"


def _score(model, tokenizer, prompts: list[list[dict]], labels: list[dict], cfg: QuickstartConfig, what: str) -> tuple[dict, list[str]]:
    from honing.models.chat import ChatModel
    from honing.quickstart.task import score

    started = time.perf_counter()
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=0.0)
    answers = ChatModel.wrap(model, tokenizer, role=what, batch_size=cfg.batch_size, progress=True).texts(prompts, sampling)
    scores = score(answers, labels)
    console.print(f"scored {what} on {len(prompts)} held-out tickets in {time.perf_counter() - started:.0f} s")
    return scores, answers


def _held_out(cfg: QuickstartConfig) -> tuple[list[list[dict]], list[dict], str]:
    from honing.quickstart import task

    records = task.load_split("test")[: cfg.eval_examples]
    labels = task.load_test_labels()[: cfg.eval_examples]
    prompts = [[m for m in r["messages"] if m["role"] != "assistant"] for r in records]
    return prompts, labels, str(task.DATA_DIR / "test.jsonl")


def _general_suite(cfg: QuickstartConfig) -> list[tuple[EvalTaskConfig, list[Example]]]:
    """The general-capability tasks and their examples, read before any scoring (a bad file stops the run now)."""
    from honing.evals.tasks import load_examples

    if cfg.general_examples == 0:
        return []
    tasks = [t.model_copy(update={"max_examples": cfg.general_examples}) if cfg.general_examples else t
             for t in cfg.general_tasks]
    return [(task, load_examples(task)) for task in tasks]


def _general(model, tokenizer, cfg: QuickstartConfig, suite: list[tuple[EvalTaskConfig, list[Example]]],
             what: str) -> dict[str, list[float]]:
    """Per-example scores (each task's primary metric) on the general-capability suite, computed and scored by
    the eval's own code, so the numbers are those `honing eval` gives the same weights."""
    from honing.config import EvalConfig
    from honing.evals.runner import compute_outputs
    from honing.evals.scoring import metric_rows
    from honing.evals.tasks import primary_metric
    from honing.models.chat import ChatModel

    eval_cfg = EvalConfig(tasks=[task for task, _ in suite], batch_size=cfg.batch_size)
    chat = ChatModel.wrap(model, tokenizer, role=what, batch_size=cfg.batch_size, progress=True)
    scores = {}
    for task, examples in suite:
        started = time.perf_counter()
        rows = metric_rows(task, examples, compute_outputs(chat, task, examples, eval_cfg))
        scores[task.name] = [float(s) for s in rows[primary_metric(task)].per_example]
        console.print(f"scored {what} on {task.name} ({len(examples)} {task.kind} examples) "
                      f"in {time.perf_counter() - started:.0f} s")
    return scores


def _general_summary(suite: list[tuple[EvalTaskConfig, list[Example]]], before: dict[str, list[float]],
                     after: dict[str, list[float]]) -> dict[str, Any]:
    """Per task: before, after and the paired change (95% bootstrap intervals), overall and per category."""
    from honing.evals.stats import bootstrap_mean, bootstrap_paired_difference
    from honing.evals.tasks import primary_metric

    summary = {}
    for task, examples in suite:
        old, new = before[task.name], after[task.name]
        change = bootstrap_paired_difference(new, old)
        categories: dict[str, Any] = {}
        for name in sorted({str(e.record["category"]) for e in examples if e.record.get("category") is not None}):
            rows = [i for i, e in enumerate(examples) if str(e.record.get("category")) == name]
            categories[name] = {"examples": len(rows), "before": sum(old[i] for i in rows) / len(rows),
                                "after": sum(new[i] for i in rows) / len(rows),
                                "change": bootstrap_paired_difference([new[i] for i in rows], [old[i] for i in rows]).as_dict()}
        summary[task.name] = {"examples": len(old), "metric": primary_metric(task), "before": bootstrap_mean(old).as_dict(),
                              "after": bootstrap_mean(new).as_dict(), "change": change.as_dict(),
                              "regressed": change.high < 0, "categories": categories}
    return summary


def _general_line(name: str, general: dict[str, Any]) -> str:
    b, a, c = general["before"], general["after"], general["change"]
    if general["regressed"]:
        verdict = "[red]worse: the whole interval of the change is below zero[/]"
    elif c["low"] > 0:
        verdict = "[green]better: the whole interval of the change is above zero[/]"
    else:
        verdict = "no significant change (the interval of the change contains zero)"
    return (f"general-capability {name} ({general['examples']} examples, {general['metric']}, 95% intervals): before "
            f"{b['mean']:.1%} [{b['low']:.1%}, {b['high']:.1%}], after {a['mean']:.1%} [{a['low']:.1%}, {a['high']:.1%}], "
            f"change {c['mean'] * 100:+.1f} points [{c['low'] * 100:+.1f}, {c['high'] * 100:+.1f}]: {verdict}")


def _table(before: dict[str, Any], after: dict[str, Any]) -> Table:
    table = Table(title=f"{before['examples']} held-out support tickets: before and after fine-tuning")
    for column in ("metric", "before", "after", "change"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    rows = [(key, before[key], after[key]) for key in ("format_valid", "parsed", "field_accuracy", "exact_match")]
    rows += [(f"  {field} accuracy", value, after["per_field"][field]) for field, value in before["per_field"].items()]
    for name, old, new in rows:
        change = new - old
        table.add_row(name, f"{old:.1%}", f"{new:.1%}", f"[{'green' if change >= 0 else 'red'}]{change:+.1%}[/]")
    return table


def quickstart(cfg: QuickstartConfig) -> dict[str, Any]:
    """Fine-tune the embedded model on the bundled task; returns the before/after scores."""
    from honing.models.load import load_model
    from honing.quickstart import task

    ctx = setup()
    try:
        sft_cfg = cfg.sft
        if sft_cfg.data.train == BUNDLED:
            sft_cfg = sft_cfg.model_copy(update={"data": sft_cfg.data.model_copy(update={"train": str(task.DATA_DIR / "train.jsonl")})})
        started = time.perf_counter()
        console.print("loading the base model (the first run converts the embedded GGUF once; later runs use a cache)")
        loaded = load_model(sft_cfg.model, device=ctx.device, adapter=sft_cfg.adapter)
        prompts, labels, test_path = _held_out(cfg)
        suite = _general_suite(cfg)
        before, before_answers = _score(loaded.model, loaded.tokenizer, prompts, labels, cfg, "the base model")
        general_before = _general(loaded.model, loaded.tokenizer, cfg, suite, "the base model") if suite else None

        parts = setup_parts(sft_cfg, ctx, loaded=loaded)
        run, result = train_and_save("quickstart", cfg, parts, sft_cfg.train, sft_cfg.output, ctx, resume=None,
                                model_path=sft_cfg.model.path, split_seed=sft_cfg.data.split_seed)
        after, after_answers = _score(parts.model, parts.tokenizer, prompts, labels, cfg, "the fine-tuned model")
        general = None
        if general_before is not None:
            general_after = _general(parts.model, parts.tokenizer, cfg, suite, "the fine-tuned model")
            general = _general_summary(suite, general_before, general_after)

        run_dir = Path(result["run_dir"])
        report = {"held_out": test_path, "examples": len(prompts), "before": before, "after": after,
                  "samples": [{"prompt": p[-1]["content"], "before": b, "after": a, "reference": task.render_label(l)}
                              for p, b, a, l in zip(prompts, before_answers, after_answers, labels)],
                  "general_capability": general}
        (run_dir / "quickstart_eval.json").write_text(json.dumps(report, indent=2) + "\n")
        run.add_input("data_held_out", test_path)
        for general_task, _ in suite:  # not `task`: that name is the quickstart's task module here
            run.add_input(f"data_general_{general_task.name}", data_path(general_task))
        run.add_output("evaluation", run_dir / "quickstart_eval.json")
        run.finish(status=result["status"], metrics={"held_out_before": before, "held_out_after": after,
                                                     "general_capability": general})

        console.print(_table(before, after))
        for name, summary in (general or {}).items():
            console.print(_general_line(name, summary))
        pick = next((i for i, (b, a) in enumerate(zip(before_answers, after_answers)) if b != a), 0)
        console.print(f"[bold]ticket:[/] {prompts[pick][-1]['content']}")
        console.print(f"[bold]before:[/] {before_answers[pick]}")
        console.print(f"[bold]after:[/]  {after_answers[pick]}")
        console.print(f"[bold]wanted:[/] {task.render_label(labels[pick])}")
        outputs = result.get("outputs", {})
        console.print(
            f"\nadapter: {outputs.get('adapter', outputs)}\nrun record: {run_dir / 'run.json'}\n"
            f"metrics: {run_dir / 'metrics.jsonl'}\nheld-out answers: {run_dir / 'quickstart_eval.json'}\n"
            f"total time: {time.perf_counter() - started:.0f} s\n"
            f"try it: honing chat model.adapter={outputs.get('adapter', run_dir / 'adapter')}"
        )
        return {"run_dir": str(run_dir), "before": before, "after": after, **{k: v for k, v in result.items() if k != "outputs"}}
    finally:
        teardown(ctx)


run = quickstart
