"""Shadow evaluation: the registered version's gate tasks, asked again of the model the server serves now.

    gate evaluation   the version's attached eval runs (the registry keeps their record and scores); the latest
                      with a gate verdict, else the latest at all; its config.yaml holds the tasks as they ran
    tasks             those that generate answers (generation, classification by generation, rubric with the
                      same judge); log-likelihood tasks (multiple choice, perplexity, ...) are listed as skipped:
                      an endpoint gives no log-likelihoods; pairwise ones need a second model
    run               `honing eval` itself (the eval stage's library function), with the endpoint as its one
                      model, the registered evaluation's sampling, confidence and resamples, and no answer cache
                      (the point is what the server answers now); its run directory sits in the report's
    compare           per task and metric: registered and served scores with their intervals, the difference
                      of the means, and whether the intervals overlap
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from honing.errors import HoningError

ENDPOINT_KINDS = ("generation", "rubric")


def gate_evaluation(registry_path: str | Path | None, version: str) -> tuple[Any, dict[str, Any]]:
    """(the registered Version, the attached eval it was gated with): the latest attachment with a gate verdict,
    else the latest eval attachment. HoningError naming what is missing."""
    from honing.registry.store import Registry, default_path

    path = Path(registry_path) if registry_path else default_path()
    if not path.is_file():
        raise HoningError(f"no registry at {path}, so {version}'s gate tasks are unknown (set registry= or "
                          "HONING_REGISTRY)")
    name, _, number = version.partition("@")
    with Registry(path, create=False) as registry:
        registered = registry.get(name, int(number))
        evals = registry.attachments(name, registered.version, "eval")
    if not evals:
        raise HoningError(f"{version} has no evaluation attached in the registry {path}, so it has no gate tasks to "
                          "re-run (attach one: honing registry attach)")
    gated = [a for a in evals if (a.get("results") or {}).get("gate")]
    return registered, (gated or evals)[-1]


def shadow_tasks(attachment: dict[str, Any], max_examples: int | None) -> tuple[Any, list[Any], dict[str, str]]:
    """(the registered evaluation's config, the tasks an endpoint can answer, {skipped task: why})."""
    from honing.config import EvalConfig, load_config
    from honing.registry.run_index import RunRecord, working_dir

    run_dir = Path(attachment["run_dir"])
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise HoningError(f"the gate evaluation's config {config} is gone (the registry keeps its scores, not its "
                          "tasks), so its tasks cannot be re-run")
    registered = load_config(EvalConfig, config)
    record = RunRecord(run_dir, attachment["record"], working_dir(run_dir, attachment["record"]))
    tasks, skipped = [], {}
    for task in registered.tasks:
        why = _unanswerable(task, registered)
        if why:
            skipped[task.name] = why
            continue
        data = task.data if task.data.startswith("builtin:") else str(record.resolve(task.data))
        limit = min(filter(None, (task.max_examples, max_examples)), default=None)
        tasks.append(task.model_copy(update={"data": data, "max_examples": limit, "regression": False, "min": {}}))
    return registered, tasks, skipped


def _unanswerable(task: Any, registered: Any) -> str | None:
    from honing.config.evaluation import generates

    if task.kind == "pairwise":
        return "pairwise judging compares two models; the shadow evaluation has one"
    if not generates(task):
        return f"{task.kind} needs log-likelihoods, which an endpoint does not give"
    if task.kind == "rubric" and registered.judge is None:
        return "rubric task without a judge in the registered evaluation"
    return None


def shadow_config(registered: Any, tasks: list[Any], *, endpoint: str, endpoint_model: str, api_key_env: str,
                  run_dir: Path) -> Any:
    from honing.config import EvalConfig, EvalModelConfig
    from honing.config.output import OutputConfig

    served = EvalModelConfig(name="served", role="base", endpoint=endpoint, endpoint_model=endpoint_model,
                             api_key_env=api_key_env)
    return EvalConfig(models=[served], tasks=tasks, judge=registered.judge if any(t.kind == "rubric" for t in tasks)
                      else None, sampling=registered.sampling, batch_size=registered.batch_size,
                      resamples=registered.resamples, confidence=registered.confidence, cache=False,
                      report_examples=0, output=OutputConfig(dir=str(run_dir), tensorboard=False))


def registered_scores(registered_version: Any, attachment: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(the version's model name in its evaluation, task -> metric -> interval) as the registry recorded them."""
    from honing.registry.diff import _name_in_eval

    results = attachment.get("results") or {}
    name = _name_in_eval(results, registered_version, attachment.get("record") or {})
    return name, ((results.get("scores") or {}).get(name) or {}) if name else {}


def compare(registered: dict[str, Any], served: dict[str, Any], primary: dict[str, str]) -> list[dict[str, Any]]:
    """One row per task and metric the served run scored."""
    rows = []
    for task, metrics in served.items():
        for metric, now in metrics.items():
            before = (registered.get(task) or {}).get(metric)
            row = {"task": task, "metric": metric, "primary": primary.get(task) == metric, "served": now,
                   "registered": before, "difference": None, "verdict": "no registered score"}
            if before and before.get("mean") is not None and now.get("mean") is not None:
                row["difference"] = now["mean"] - before["mean"]
                row["verdict"] = ("served lower" if now["high"] < before["low"] else
                                  "served higher" if now["low"] > before["high"] else "intervals overlap")
            rows.append(row)
    return rows


def run_shadow(version: str, *, registry: str | None, endpoint: str, endpoint_model: str, api_key_env: str,
               output: Path, max_examples: int | None) -> dict[str, Any]:
    """The shadow section of the report for one registered version; a missing piece is reported, not raised."""
    from honing.config.stages import STAGES
    from honing.evals.tasks import primary_metric

    out: dict[str, Any] = {"version": version, "endpoint": endpoint, "endpoint_model": endpoint_model}
    try:
        registered_version, attachment = gate_evaluation(registry, version)
        registered, tasks, skipped = shadow_tasks(attachment, max_examples)
    except HoningError as err:
        return {**out, "unavailable": str(err)}
    name, before = registered_scores(registered_version, attachment)
    out.update(registered_eval=attachment["run_dir"], registered_model=name, skipped=skipped,
               confidence=registered.confidence)
    if not tasks:
        return {**out, "unavailable": "none of the gate tasks can be asked of an endpoint: " +
                "; ".join(f"{task}: {why}" for task, why in skipped.items())}
    serving = served_version(endpoint, endpoint_model, api_key_env)
    if serving is not None and serving != version:  # the scores would be another version's
        return {**out, "unavailable": f"the endpoint serves {endpoint_model} as {serving}, not {version}; the shadow "
                "evaluation compares a version with itself"}
    out["confirmed"] = serving == version
    run_dir = output / f"shadow-eval-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    cfg = shadow_config(registered, tasks, endpoint=endpoint, endpoint_model=endpoint_model, api_key_env=api_key_env,
                        run_dir=run_dir)
    try:
        result = STAGES["eval"].run(cfg)
    except HoningError as err:  # the server down or refusing: the rest of the report still stands
        return {**out, "eval_run": str(run_dir), "unavailable": f"the shadow evaluation failed: {err}"}
    served = result["scores"].get("served") or {}
    primary = {task.name: primary_metric(task, list(served.get(task.name) or {})) for task in tasks}
    return {**out, "eval_run": result["run_dir"], "tasks": [t.name for t in tasks],
            "n": {t.name: t.max_examples for t in tasks}, "rows": compare(before, served, primary)}


def served_version(endpoint: str, endpoint_model: str, api_key_env: str) -> str | None:
    """The version a honing server says it serves `endpoint_model` as (/v1/models' `version`), or None when
    the endpoint does not say (another server, or none reachable: the evaluation itself reports that)."""
    import os

    import openai

    key = os.environ.get(api_key_env)
    try:
        client = openai.OpenAI(base_url=endpoint, api_key=key or "no-key", timeout=30, max_retries=1)
        listed = client.models.list(extra_headers={} if key else {"Authorization": openai.Omit()})
    except openai.OpenAIError:
        return None
    for model in listed.data:
        if model.id == endpoint_model:
            version = (model.model_extra or {}).get("version")
            return version if isinstance(version, str) else None
    return None
