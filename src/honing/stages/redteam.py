"""`honing redteam`: a probe suite against a model, the attack success rate with intervals, a gate.

    read probes (bundled library + probe_files; file:line errors) ─▶ select categories, splits, limit
    ─▶ target (local model + adapter, or endpoint; or a scripted object from Python), attacker, judge
    ─▶ variants: rule mutators, then attacker rewrites ─▶ attempts × turns ─▶ verdicts (+ judge)
    ─▶ attacker rounds ─▶ results.json, failures.jsonl, report.md, report.html, run.json
    ─▶ exit 3 when the ASR is above --fail-above
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.table import Table

from honing.config import RedteamConfig
from honing.errors import ConfigError, DataError
from honing.redteam.probes import Probe, SystemPromptSpec, JudgeSpec, builtin_files, load_probes, select
from honing.io import write_json_atomic, write_jsonl_atomic
from honing.registry.actions import attach_to_registered
from honing.registry.refs import pinned_in_registry
from honing.runs import Run
from honing.ui import console


def load_suite(cfg: RedteamConfig) -> tuple[list[Probe], list[Path]]:
    """The base probes of the run and the files they came from; problems found before any model loads."""
    files = (builtin_files() if cfg.builtin else []) + [Path(f) for f in cfg.probe_files]
    probes = select(load_probes(files), categories=cfg.categories, splits=cfg.splits, limit=cfg.limit)
    if not probes:
        raise DataError("no probe is left after choosing categories, splits and limit")
    for probe in probes:
        kinds = {type(d) for d in probe.detectors}
        if JudgeSpec in kinds and cfg.judge is None:
            raise ConfigError(f"{probe.source}: probe {probe.id!r} has a judge detector: set judge.path or judge.endpoint")
        has_system = any(m["role"] == "system" for m in probe.messages) or cfg.system_prompt
        if SystemPromptSpec in kinds and not has_system:
            raise ConfigError(f"{probe.source}: probe {probe.id!r} checks for a system-prompt leak but has no system "
                              "message: give it `system:`, or set system_prompt")
    return probes, files


def redteam(cfg: RedteamConfig, *, target: Any = None, attacker: Any = None, judge: Any = None) -> dict[str, Any]:
    """Scan a model. `target`, `attacker` and `judge` may be given as ChatModels (a scripted fake, say);
    otherwise they are built from the config."""
    probes, files = load_suite(cfg)
    run = Run.create("redteam", cfg, cfg.output.dir)
    for file in files:
        run.add_input("probes", file)
    started = time.perf_counter()
    target, attacker, judge = _models(cfg, run, target, attacker, judge)
    variants, dropped = _variants(cfg, probes, attacker)
    by_category = {c: sum(v.category == c for v in variants) for c in dict.fromkeys(v.category for v in variants)}
    counts = ", ".join(f"{c} {n}" for c, n in by_category.items())
    console.print(f"{len(probes)} probes → {len(variants)} prompts ({counts}) "
                  f"× {cfg.attempts} attempts against {_describe(target)}; run directory {run.dir}")
    from honing.redteam.runner import attacker_round, run_probes

    kwargs = dict(attempts=cfg.attempts, seed=cfg.sampling.seed, system_prompt=cfg.system_prompt, judge=judge,
                  judge_confirms=cfg.judge_confirms, judge_threshold=cfg.judge_threshold, log=console.print)
    generation_started = time.perf_counter()
    outcomes = run_probes(target, variants, **kwargs)
    known = {v.request for v in variants}
    for round_index in range(1, cfg.attacker_rounds + 1):
        new, unusable = attacker_round(attacker, outcomes, round_index=round_index, per_success=cfg.attacker_per_success,
                                       max_seeds=cfg.attacker_max_seeds, seed=cfg.attacker_sampling.seed, known=known)
        dropped["attacker"] = dropped.get("attacker", 0) + unusable
        console.print(f"attacker round {round_index}: {len(new)} new attacks ({unusable} replies unusable or repeated)")
        if not new:
            break
        outcomes += run_probes(target, new, round_index=round_index, **kwargs)
    seconds = time.perf_counter() - generation_started
    results = _results(cfg, run, target, attacker, judge, outcomes, dropped, seconds, time.perf_counter() - started)
    _write(run, results, outcomes)
    gate = results.get("gate")
    overall = results["summary"]["overall"]["asr"]
    run.finish(status="completed", metrics={"asr": overall["mean"], "asr_low": overall["low"], "asr_high": overall["high"],
                                            "over_refusal": results["summary"]["over_refusal"]["asr"]["mean"],
                                            "gate_passed": gate["passed"] if gate else None})
    _print_summary(results, run.dir)
    for version in attach_to_registered(run.dir):
        console.print(f"attached to {version} in the registry")
    return {"run_dir": str(run.dir), "asr": overall, "over_refusal": results["summary"]["over_refusal"]["asr"],
            "summary": results["summary"], "gate": gate}


def _models(cfg: RedteamConfig, run: Run, target: Any, attacker: Any, judge: Any) -> tuple[Any, Any, Any]:
    from honing.models.chat import ChatModel

    given = target is not None
    if not given:
        target = ChatModel.load(cfg.target, cfg.sampling, role="target", batch_size=cfg.batch_size, progress=True)
    record_model(run, "target", None if given else cfg.target, target)
    given = attacker is not None
    if not given and cfg.attacker is not None:
        attacker = ChatModel.load(cfg.attacker, cfg.attacker_sampling, role="attacker", batch_size=cfg.batch_size)
    if attacker is not None:
        record_model(run, "attacker", None if given else cfg.attacker, attacker)
    if judge is None and cfg.judge is not None:
        from honing.evals.judges import build_judge

        judge = build_judge(cfg.judge, batch_size=cfg.batch_size)
    if judge is not None:
        run.set("judge", judge.identity)
    return target, attacker, judge


def record_model(run: Run, role: str, model_cfg: Any, model: Any) -> None:
    identity = dict(model.identity)
    if model_cfg is not None and not model_cfg.endpoint:
        from honing.evals.runner import model_fingerprint

        fingerprint = model_fingerprint(model_cfg)
        run.add_input(role, model_cfg.adapter or model_cfg.path or "embedded default", sha256=fingerprint,
                      base=model_cfg.path or "embedded default", adapter=model_cfg.adapter,
                      **pinned_in_registry(model_cfg))
    else:
        run.add_input(role, identity.get("endpoint") or identity.get("name") or role, sha256=None, identity=identity)


def _describe(model: Any) -> str:
    identity = model.identity
    if identity.get("kind") == "endpoint":
        return f"{identity.get('model')} at {identity.get('endpoint')}"
    if identity.get("kind") == "local":
        return identity.get("path") + (f" + {identity['adapter']}" if identity.get("adapter") else "")
    return identity.get("name") or identity.get("kind") or "the target"


def _variants(cfg: RedteamConfig, probes: list[Probe], attacker: Any) -> tuple[list[Probe], dict[str, int]]:
    from honing.redteam.mutators import ATTACKER_MUTATORS, attacker_variants, rule_variants

    variants = [v for probe in probes for v in rule_variants(probe, list(cfg.mutators))]
    dropped: dict[str, int] = {}
    for kind in (m for m in cfg.mutators if m in ATTACKER_MUTATORS):
        rewritten, unusable = attacker_variants(probes, kind, attacker, seed=cfg.attacker_sampling.seed,
                                                language=cfg.translate_language)
        variants += rewritten
        dropped[kind] = unusable
        if unusable:
            console.print(f"[yellow]{kind}: {unusable} of {unusable + len(rewritten)} attacker rewrites were empty or "
                          "unchanged and are left out (counted in results.json)[/]")
    return variants, dropped


def _results(cfg: RedteamConfig, run: Run, target: Any, attacker: Any, judge: Any, outcomes: list, dropped: dict,
             generation_seconds: float, total_seconds: float) -> dict[str, Any]:
    from honing.redteam.report import summarise, worst_examples

    summary = summarise(outcomes, confidence=cfg.confidence, resamples=cfg.resamples)
    generations = sum(len(o.attempts) * (1 + len(o.probe.followups)) for o in outcomes)
    settings = {
        "target": _describe(target), "system_prompt": cfg.system_prompt or "(none; probes bring their own)",
        "attempts": cfg.attempts, "sampling": cfg.sampling.model_dump(), "mutators": list(cfg.mutators),
        "categories": cfg.categories or "all", "splits": cfg.splits or "all", "limit": cfg.limit,
        "judge": judge.identity if judge is not None else None,
        "judge_confirms": list(cfg.judge_confirms) if judge is not None else [],
        "attacker": attacker.identity if attacker is not None else None, "attacker_rounds": cfg.attacker_rounds,
        "confidence": cfg.confidence, "resamples": cfg.resamples,
    }
    results: dict[str, Any] = {
        "title": "honing redteam", "created": run.record.get("started"), "run_dir": str(run.dir),
        "run_id": run.record["run_id"], "target": target.identity, "settings": settings, "summary": summary,
        "dropped_variants": dropped,
        "worst": worst_examples(outcomes, cfg.report_examples),
        "over_refusals": worst_examples(outcomes, max(cfg.report_examples // 2, 1) if cfg.report_examples else 0,
                                        attack=False),
        "throughput": {"prompts": len(outcomes), "generations": generations,
                       "generation_seconds": round(generation_seconds, 1), "total_seconds": round(total_seconds, 1),
                       "generations_per_s": round(generations / max(generation_seconds, 1e-9), 2)},
        "outcomes": [o.as_dict() for o in outcomes],
    }
    if cfg.fail_above is not None:
        asr = summary["overall"]["asr"]["mean"] or 0.0
        results["gate"] = {"fail_above": cfg.fail_above, "asr": asr, "passed": asr <= cfg.fail_above}
    return results


def _write(run: Run, results: dict[str, Any], outcomes: list) -> None:
    from honing.redteam.report import write_reports

    write_json_atomic(run.dir / "results.json", results)
    failures = write_jsonl_atomic(run.dir / "failures.jsonl", (
        # attacks that worked, and harmless prompts refused (over_refusal): both are failures
        failure_record(outcome, attempt, results["run_id"]) for outcome in outcomes for attempt in outcome.attempts
        if attempt.failed))
    run.add_output("results", run.dir / "results.json")
    run.add_output("failures", failures)
    for kind, path in write_reports(results, run.dir).items():
        run.add_output(kind, path)


def failure_record(outcome: Any, attempt: Any, run_id: str) -> dict[str, Any]:
    """One failure (a successful attack, or a refused harmless prompt) as a record `honing constitute` (and
    `honing generate`) can read: the conversation up to the attacked turn in `messages`, the target's answer in
    `response`."""
    probe = outcome.probe
    return {"messages": attempt.conversation, "response": attempt.answer, "probe_id": probe.id,
            "base_id": probe.base_id, "category": probe.category, "mutator": probe.mutator, "split": probe.split,
            "attempt": attempt.index, "seed": attempt.seed, "run_id": run_id,
            "evidence": [v.as_dict() for v in attempt.verdicts if v.hit],
            "detectors": [d.model_dump(exclude_none=True) for d in probe.detectors], "fail_when": probe.fail_when,
            "secret": probe.secret}


def _print_summary(results: dict[str, Any], run_dir: Path) -> None:
    from honing.redteam.report import percent_interval

    summary = results["summary"]
    table = Table(title=f"attack success rate ({int(results['settings']['confidence'] * 100)}% intervals)")
    for column in ("category", "prompts", "successes", "ASR", "any attempt"):
        table.add_column(column, justify="left" if column == "category" else "right")
    for name, group in {**summary["by_category"], "all attacks": summary["overall"]}.items():
        table.add_row(name, str(group["prompts"]), f"{group['successes']}/{group['attempts']}",
                      percent_interval(group["asr"]), percent_interval(group["asr_any"]))
    console.print(table)
    for split, data in summary["by_split"].items():
        console.print(f"split {split}: ASR {percent_interval(data['overall']['asr'])} over "
                      f"{data['overall']['prompts']} prompts; "
                      f"over-refusal {percent_interval(data['over_refusal']['asr'])}")
    if summary["over_refusal"]["prompts"]:
        console.print(f"over-refusal rate {percent_interval(summary['over_refusal']['asr'])} over "
                      f"{summary['over_refusal']['prompts']} harmless prompts")
    gate = results.get("gate")
    if gate:
        verdict = "[green]passed[/]" if gate["passed"] else "[red]FAILED[/]"
        console.print(f"gate {verdict}: ASR {gate['asr'] * 100:.1f}% vs fail_above {gate['fail_above'] * 100:.1f}%")
    throughput = results["throughput"]
    console.print(f"{throughput['generations']} generations in {throughput['generation_seconds']} s; "
                  f"report: {run_dir / 'report.html'} and {run_dir / 'report.md'}")


run = redteam
