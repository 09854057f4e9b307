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
    from honing.generate import generate
    from honing.quickstart.task import score

    started = time.perf_counter()
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=0.0)
    answers = generate(model, tokenizer, prompts, sampling, batch_size=cfg.batch_size)
    scores = score(answers, labels)
    console.print(f"scored {what} on {len(prompts)} held-out tickets in {time.perf_counter() - started:.0f} s")
    return scores, answers


def _held_out(cfg: QuickstartConfig) -> tuple[list[list[dict]], list[dict], str]:
    from honing.quickstart import task

    records = task.load_split("test")[: cfg.eval_examples]
    labels = task.load_test_labels()[: cfg.eval_examples]
    prompts = [[m for m in r["messages"] if m["role"] != "assistant"] for r in records]
    return prompts, labels, str(task.DATA_DIR / "test.jsonl")


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

        parts = setup_parts(sft_cfg, ctx, loaded=loaded)
        run, result = train_and_save("quickstart", cfg, parts, sft_cfg.train, sft_cfg.output, ctx, resume=None,
                                model_path=sft_cfg.model.path, split_seed=sft_cfg.data.split_seed)
        after, after_answers = _score(parts.model, parts.tokenizer, prompts, labels, cfg, "the fine-tuned model")

        run_dir = Path(result["run_dir"])
        report = {"held_out": test_path, "examples": len(prompts), "before": before, "after": after,
                  "samples": [{"prompt": p[-1]["content"], "before": b, "after": a, "reference": task.render_label(l)}
                              for p, b, a, l in zip(prompts, before_answers, after_answers, labels)]}
        (run_dir / "quickstart_eval.json").write_text(json.dumps(report, indent=2) + "\n")
        run.add_input("data_held_out", test_path)
        run.add_output("evaluation", run_dir / "quickstart_eval.json")
        run.finish(status=result["status"], metrics={"held_out_before": before, "held_out_after": after})

        console.print(_table(before, after))
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
            f"try it: honing chat adapter={outputs.get('adapter', run_dir / 'adapter')}"
        )
        return {"run_dir": str(run_dir), "before": before, "after": after, **{k: v for k, v in result.items() if k != "outputs"}}
    finally:
        teardown(ctx)


run = quickstart
