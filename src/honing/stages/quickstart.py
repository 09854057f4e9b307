"""`honing quickstart`: the whole loop on the embedded model in a few minutes on a laptop CPU.

    load SmolLM2-135M-Instruct ─▶ score it on held-out support tickets (before)
    ─▶ LoRA fine-tune on the bundled training tickets (the sft stage's own code)
    ─▶ score again (after) ─▶ before/after table, one example, where everything went
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from honing.config import QuickstartConfig, SamplingConfig
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


def _general(model, tokenizer, cfg: QuickstartConfig, what: str) -> list[float]:
    """Per-prompt scores (regex match) on the bundled general-capability set."""
    from honing.config import EvalTaskConfig
    from honing.evals.metrics import regex_match
    from honing.evals.tasks import load_examples
    from honing.models.chat import ChatModel

    started = time.perf_counter()
    task = EvalTaskConfig(name="general", data="builtin:general", metrics=["regex_match"], max_examples=cfg.general_examples)
    examples = load_examples(task)
    sampling = SamplingConfig(max_new_tokens=96, temperature=0.0)
    chat = ChatModel.wrap(model, tokenizer, role=what, batch_size=cfg.batch_size, progress=True)
    answers = chat.texts([e.prompt for e in examples], sampling)
    console.print(f"scored {what} on {len(examples)} general-capability prompts in {time.perf_counter() - started:.0f} s")
    return [regex_match(answer, e.record) for answer, e in zip(answers, examples)]


def _general_summary(before: list[float], after: list[float]) -> dict[str, Any]:
    from honing.evals.stats import bootstrap_mean, bootstrap_paired_difference

    change = bootstrap_paired_difference(after, before)
    return {"examples": len(before), "before": bootstrap_mean(before).as_dict(), "after": bootstrap_mean(after).as_dict(),
            "change": change.as_dict(), "regressed": change.high < 0}


def _general_line(general: dict[str, Any]) -> str:
    b, a, c = general["before"], general["after"], general["change"]
    if general["regressed"]:
        verdict = "[red]worse: the whole interval of the change is below zero[/]"
    elif c["low"] > 0:
        verdict = "[green]better: the whole interval of the change is above zero[/]"
    else:
        verdict = "no significant change (the interval of the change contains zero)"
    return (f"general-capability set ({general['examples']} prompts, 95% intervals): before {b['mean']:.1%} "
            f"[{b['low']:.1%}, {b['high']:.1%}], after {a['mean']:.1%} [{a['low']:.1%}, {a['high']:.1%}], "
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
        before, before_answers = _score(loaded.model, loaded.tokenizer, prompts, labels, cfg, "the base model")
        general_before = _general(loaded.model, loaded.tokenizer, cfg, "the base model") if cfg.general_examples else None

        parts = setup_parts(sft_cfg, ctx, loaded=loaded)
        run, result = train_and_save("quickstart", cfg, parts, sft_cfg.train, sft_cfg.output, ctx, resume=None,
                                model_path=sft_cfg.model.path, split_seed=sft_cfg.data.split_seed)
        after, after_answers = _score(parts.model, parts.tokenizer, prompts, labels, cfg, "the fine-tuned model")
        general = None
        if general_before is not None:
            general = _general_summary(general_before, _general(parts.model, parts.tokenizer, cfg, "the fine-tuned model"))

        run_dir = Path(result["run_dir"])
        report = {"held_out": test_path, "examples": len(prompts), "before": before, "after": after,
                  "samples": [{"prompt": p[-1]["content"], "before": b, "after": a, "reference": task.render_label(l)}
                              for p, b, a, l in zip(prompts, before_answers, after_answers, labels)],
                  "general_capability": general}
        (run_dir / "quickstart_eval.json").write_text(json.dumps(report, indent=2) + "\n")
        run.add_input("data_held_out", test_path)
        run.add_output("evaluation", run_dir / "quickstart_eval.json")
        run.finish(status=result["status"], metrics={"held_out_before": before, "held_out_after": after,
                                                     "general_capability": general})

        console.print(_table(before, after))
        if general is not None:
            console.print(_general_line(general))
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
