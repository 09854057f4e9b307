"""`honing eval`: every model on every task, scores with bootstrap intervals, one report, a gate.

    read tasks (file:line errors; metrics checked before any model loads)
    ─▶ for each model: load once ─▶ each task's raw outputs (cached per model, task, example)
    ─▶ judge tasks (pairwise twice with the order swapped; rubric grades)
    ─▶ scores + intervals, paired differences against the base, gate checks, disagreements
    ─▶ results.json, report.md, report.html, run.json ─▶ exit 3 under --gate when a check fails
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.table import Table

from honing.config import EvalConfig, EvalTaskConfig
from honing.errors import ConfigError
from honing.evals import metrics as M
from honing.evals.cache import AnswerCache, key_of
from honing.evals.runner import ModelUnderTest, TaskOutputs, run_task
from honing.evals.scoring import (difference, disagreements, gate_checks, higher_is_better, interval, metric_rows,
                                  predicted_labels, prompt_text)
from honing.evals.stats import bootstrap_mean, bootstrap_paired_difference
from honing.evals.tasks import Example, data_path, label_set, load_examples, metric_names, primary_metric
from honing.io import write_json_atomic
from honing.registry.actions import attach_to_registered
from honing.registry.refs import pinned_in_registry
from honing.runs import Run, file_sha256
from honing.ui import console


def baseline_name(cfg: EvalConfig) -> str:
    return next((m.name for m in cfg.models if m.role == "base"), cfg.models[0].name)


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    tasks = _load_tasks(cfg)
    run = Run.create("eval", cfg, cfg.output.dir)
    for task in cfg.tasks:
        if task.kind == "lm_eval":
            run.add_input(f"task_{task.name}", task.include_path or f"lm-eval:{task.lm_eval_task}", lm_eval_task=task.lm_eval_task)
        else:
            run.add_input(f"task_{task.name}", data_path(task))
    cache = AnswerCache(enabled=cfg.cache)
    try:
        models = [ModelUnderTest(m, batch_size=cfg.batch_size) for m in cfg.models]
        outputs = _run_models(models, cfg, tasks, cache, run)
        judged, judge_identity = _run_judges(cfg, tasks, outputs, cache)
    finally:
        cache.close()
    results = _results(cfg, tasks, models, outputs, judged, judge_identity, run)
    results = _json_safe(results)
    write_json_atomic(run.dir / "results.json", results)
    from honing.evals.report import write_reports

    paths = write_reports(results, run.dir)
    for role, path in [("results", run.dir / "results.json"), *paths.items()]:
        run.add_output(role, path)
    gate = results.get("gate")
    run.finish(status="completed", metrics={"scores": results["scores"], "gate_passed": gate["passed"] if gate else None})
    _print_summary(cfg, results, paths)
    for version in attach_to_registered(run.dir):
        console.print(f"attached to {version} in the registry")
    return {"run_dir": str(run.dir), "scores": results["scores"], "gate": gate if cfg.gate.enabled else None}


def _load_tasks(cfg: EvalConfig) -> dict[str, list[Example]]:
    tasks = {}
    for task in cfg.tasks:
        if task.kind == "lm_eval":
            from honing.evals.harness import available

            ok, why = available()
            if not ok:
                raise ConfigError(f"task {task.name}: {why}")
            tasks[task.name] = []
            continue
        for name in metric_names(task):
            if task.kind == "generation":
                M.load_metric(name)  # an unknown metric fails now, not after an hour of generation
        primary_metric(task)
        tasks[task.name] = load_examples(task)
        console.print(f"task {task.name}: {len(tasks[task.name])} examples ({task.kind}) from {data_path(task)}")
    return tasks


def _run_models(models: list[ModelUnderTest], cfg: EvalConfig, tasks: dict[str, list[Example]], cache: AnswerCache,
                run: Run) -> dict[str, dict[str, TaskOutputs]]:
    outputs: dict[str, dict[str, TaskOutputs]] = {}
    for model in models:
        outputs[model.name] = {}
        pinned = pinned_in_registry(model.cfg)  # the version a registry alias names now, before it loads
        for task in cfg.tasks:
            result = run_task(model, task, tasks[task.name], cfg, cache)
            outputs[model.name][task.name] = result
            if task.kind == "lm_eval" and not tasks[task.name]:
                tasks[task.name] = [Example(str(r["doc_id"]), f"lm-eval {task.lm_eval_task} doc {r['doc_id']}", {},
                                            prompt=f"{task.lm_eval_task} document {r['doc_id']}") for r in result.raw]
            where = f"{result.cached} cached" if result.cached else "computed"
            console.print(f"{model.name} · {task.name}: {len(result.raw)} examples ({where}) in {result.seconds:.1f} s")
            if result.truncated:
                console.print(f"[yellow]{model.name} · {task.name}: {result.truncated} examples longer than "
                              f"max_length={task.max_length} were truncated (counted in results.json throughput)[/]")
        if model.cfg.endpoint:  # no weights to hash: the endpoint and the model it serves
            run.add_input(f"model_{model.name}", model.cfg.endpoint, sha256=None, endpoint_model=model.cfg.endpoint_model,
                          role_in_eval=model.cfg.role)
        else:
            run.add_input(f"model_{model.name}", model.cfg.adapter or model.cfg.path or "embedded default",
                          sha256=model.fingerprint, base=model.cfg.path or "embedded default", adapter=model.cfg.adapter,
                          role_in_eval=model.cfg.role, **pinned)
        if model.cfg.rag is not None:  # the index the answers were grounded in (its run.json lists the documents)
            record = Path(model.cfg.rag.index) / "run.json"
            run.add_input(f"rag_index_{model.name}", model.cfg.rag.index,
                          sha256=file_sha256(record) if record.is_file() else None, k=model.cfg.rag.k,
                          mode=model.cfg.rag.mode)
        model.release()
    return outputs


def _run_judges(cfg: EvalConfig, tasks: dict[str, list[Example]], outputs: dict[str, dict[str, TaskOutputs]],
                cache: AnswerCache) -> tuple[dict[tuple[str, str], list[dict[str, Any]]], dict[str, Any] | None]:
    judge_tasks = [t for t in cfg.tasks if t.kind in ("pairwise", "rubric")]
    if not judge_tasks:
        return {}, None
    from honing.evals.judges import build_judge, judge_pairwise, judge_rubric

    judge = build_judge(cfg.judge, batch_size=cfg.batch_size)
    judge_key = key_of(**{k: v for k, v in judge.identity.items() if k != "path"}, path=judge.identity.get("path"))
    base = baseline_name(cfg)
    judged: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for task in judge_tasks:
        examples = tasks[task.name]
        questions = [prompt_text(e) for e in examples]
        references = [e.record.get("reference") for e in examples]
        for model in cfg.models:
            if task.kind == "pairwise" and model.name == base:
                continue
            answers = [r["answer"] for r in outputs[model.name][task.name].raw]
            if task.kind == "pairwise":
                base_answers = [r["answer"] for r in outputs[base][task.name].raw]
                keys = [key_of(q=q, a=a, b=b, r=r) for q, a, b, r in zip(questions, answers, base_answers, references)]
            else:
                keys = [key_of(q=q, a=a, r=r) for q, a, r in zip(questions, answers, references)]
            task_key = key_of(kind=task.kind, rubric=task.rubric, version=1)
            found = cache.get_many(judge_key, task_key, keys)
            todo = [i for i, k in enumerate(keys) if k not in found]
            if todo:
                if task.kind == "pairwise":
                    verdicts = judge_pairwise(judge, [questions[i] for i in todo], [answers[i] for i in todo],
                                              [base_answers[i] for i in todo], [references[i] for i in todo])
                    new = {keys[i]: {"score": v.score, "outcome": v.outcome, "verdicts": list(v.verdicts),
                                     "consistent": v.consistent} for i, v in zip(todo, verdicts)}
                else:
                    grades = judge_rubric(judge, [questions[i] for i in todo], [answers[i] for i in todo], task.rubric,
                                          [references[i] for i in todo])
                    new = {keys[i]: {"score": score, "reply": reply} for i, (score, reply) in zip(todo, grades)}
                    unreadable = sum(score is None for score, _ in grades)
                    if unreadable:
                        console.print(f"[yellow]{unreadable} of {len(grades)} rubric replies for {model.name} · {task.name} "
                                      "held no grade from 1 to 10; they are left out of rubric_score (its n shows how many count)[/]")
                cache.put_many(judge_key, task_key, new)
                found.update(new)
            judged[(model.name, task.name)] = [found[k] for k in keys]
            console.print(f"judged {model.name} · {task.name}: {len(keys)} ({len(keys) - len(todo)} cached)")
    return judged, judge.identity


def _results(cfg: EvalConfig, tasks: dict[str, list[Example]], models: list[ModelUnderTest],
             outputs: dict[str, dict[str, TaskOutputs]], judged: dict, judge_identity: dict | None, run: Run) -> dict[str, Any]:
    from honing.evals.report import load_curves

    base = baseline_name(cfg)
    scores: dict[str, dict[str, dict[str, dict]]] = {m.name: {} for m in cfg.models}
    differences, examples, confusion, extra, categories = [], {}, {}, {}, {}
    for task in cfg.tasks:
        items = tasks[task.name]
        per_model = {}
        for model in cfg.models:
            raw = outputs[model.name][task.name].raw
            rows = metric_rows(task, items, raw, judged.get((model.name, task.name)))
            if not rows:
                continue
            per_model[model.name] = {"rows": rows, "raw": raw, "options": _options(task, items)}
            scores[model.name][task.name] = {name: interval(r, cfg).as_dict() for name, r in rows.items()}
            if task.kind == "classification":
                predictions = predicted_labels(task, items, raw)
                confusion.setdefault(model.name, {})[task.name] = M.classification_summary(
                    predictions, [e.label for e in items], label_set(task, items))["confusion"]
            if task.kind == "pairwise":
                verdicts = judged[(model.name, task.name)]
                extra.setdefault(task.name, {})[model.name] = {
                    outcome: sum(v["outcome"] == outcome for v in verdicts) for outcome in ("win", "tie", "loss")
                } | {"inconsistent": sum(not v["consistent"] for v in verdicts)}
        if base in per_model:
            for name, data in per_model.items():
                if name == base:
                    continue
                for metric, rows in data["rows"].items():
                    if metric not in per_model[base]["rows"]:
                        continue
                    diff = difference(rows, per_model[base]["rows"][metric], cfg)
                    if diff is not None:
                        differences.append({"model": name, "baseline": base, "task": task.name, "metric": metric,
                                            "diff": diff.mean, "low": diff.low, "high": diff.high,
                                            "higher_is_better": higher_is_better(metric)})
        examples[task.name] = disagreements(task, items, per_model, cfg.report_examples) if len(per_model) > 1 else []
        by_category = _by_category(cfg, task, items, per_model, base)
        if by_category:
            categories[task.name] = by_category
    checks = gate_checks(cfg, scores, differences, base)
    curves = {m.name: load_curves(m.run_dir()) for m in models if m.run_dir() is not None}
    results = {
        "title": "honing eval", "created": run.record.get("started"), "run_dir": str(run.dir),
        "models": [{"name": m.name, "role": "base" if m.name == base else "candidate",
                    "source": m.cfg.endpoint or m.cfg.path or "embedded SmolLM2-135M-Instruct", "adapter": m.cfg.adapter,
                    "run_dir": str(m.run_dir()) if m.run_dir() else None, "fingerprint": m.fingerprint} for m in models],
        "tasks": [_task_entry(t, tasks[t.name], list(next(iter(scores.values()), {}).get(t.name, {})))
                  for t in cfg.tasks],
        "scores": scores, "differences": differences, "examples": examples,
        "throughput": {m: {t: o.throughput() for t, o in per.items()} for m, per in outputs.items()},
        "judge": judge_identity, "confusion": confusion, "curves": curves, "pairwise_outcomes": extra,
        "bootstrap": {"resamples": cfg.resamples, "confidence": cfg.confidence}, "categories": categories,
    }
    if checks:
        results["gate"] = {"enabled": cfg.gate.enabled, "passed": all(c["passed"] for c in checks), "checks": checks}
    return results


def _by_category(cfg: EvalConfig, task: EvalTaskConfig, items: list[Example], per_model: dict[str, dict],
                 base: str) -> dict[str, Any] | None:
    """The primary metric per `category` of the examples (when they have one): each model's score and each
    candidate's paired difference from the base, with intervals. Only for metrics that are means of per-example
    scores; examples without a category are left out of this breakdown (not of the task's score)."""
    labels = [e.record.get("category") for e in items]
    if not per_model or not any(isinstance(label, str) for label in labels):
        return None
    metric = primary_metric(task, list(next(iter(per_model.values()))["rows"]))
    if not all(metric in data["rows"] and data["rows"][metric].is_mean for data in per_model.values()):
        return None
    names = sorted({label for label in labels if isinstance(label, str)})
    rows = {model: {name: [s for s, label in zip(data["rows"][metric].per_example, labels) if label == name]
                    for name in names} for model, data in per_model.items()}
    out: dict[str, Any] = {"metric": metric, "n": {name: labels.count(name) for name in names}, "scores": {},
                           "differences": {}}
    for model, by_name in rows.items():
        out["scores"][model] = {name: bootstrap_mean([s for s in v if s is not None], confidence=cfg.confidence,
                                                     resamples=cfg.resamples).as_dict() for name, v in by_name.items()}
        if model != base and base in rows:
            out["differences"][model] = {
                name: bootstrap_paired_difference(v, rows[base][name], confidence=cfg.confidence,
                                                  resamples=cfg.resamples).as_dict()
                for name, v in by_name.items() if None not in v and None not in rows[base][name]}
    return out


def _json_safe(value: Any) -> Any:
    """NaN (e.g. a rubric task with no readable grade) as null: results.json stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _options(task: EvalTaskConfig, items: list[Example]) -> list[list[str]]:
    if task.kind == "multiple_choice":
        return [e.choices for e in items]
    if task.kind == "classification":
        return [label_set(task, items)] * len(items)
    return [[] for _ in items]


def _task_entry(task: EvalTaskConfig, items: list[Example], reported: list[str]) -> dict[str, Any]:
    return {"name": task.name, "kind": task.kind, "metrics": metric_names(task, reported),
            "primary": primary_metric(task, reported), "regression": task.regression, "n": len(items),
            "data": task.data or task.lm_eval_task,
            "description": f"{task.kind} on {task.data or task.lm_eval_task}" + (" (regression check)" if task.regression else "")}


def _print_summary(cfg: EvalConfig, results: dict[str, Any], paths: dict[str, Path]) -> None:
    for task in results["tasks"]:
        table = Table(title=f"{task['name']} ({task['n']} examples, {int(cfg.confidence * 100)}% intervals)")
        table.add_column("model")
        for metric in task["metrics"]:
            table.add_column(metric.split(":")[-1], justify="right")
        for model in cfg.models:
            cells = results["scores"].get(model.name, {}).get(task["name"])
            if not cells:
                continue
            table.add_row(model.name, *[_cell(cells.get(metric)) for metric in task["metrics"]])
        console.print(table)
    gate = results.get("gate")
    if gate:
        for check in gate["checks"]:
            mark = "[green]pass[/]" if check["passed"] else "[red]FAIL[/]"
            console.print(f"{mark} {check['kind']} {check['model']} · {check['task']} · {check['metric']}: {check['message']}")
        verdict = "[green]passed[/]" if gate["passed"] else "[red]failed[/]"
        console.print(f"gate {verdict}" + ("" if cfg.gate.enabled else " (report only; --gate makes it the exit code)"))
    console.print(f"report: {paths['html']} and {paths['markdown']}")


def _cell(value: dict[str, Any] | None) -> str:
    if not value or value.get("mean") is None or math.isnan(value["mean"]):
        return "n/a"
    mean, low, high = value["mean"], value["low"], value["high"]
    if 0.0 <= low and high <= 1.0:
        return f"{mean:.1%} [{low:.1%}, {high:.1%}]"
    return f"{mean:.4g} [{low:.4g}, {high:.4g}]"


run = evaluate
