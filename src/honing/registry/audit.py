"""`honing audit NAME@V`: one report of a registered version for a reviewer, built only from the records.

    gather(spec) -> facts      read the registry (the version, its copies of run.json and config.yaml, its history,
                               its attached eval and redteam runs), the training run's metrics.jsonl, the data runs'
                               run.json files and the lineage (honing.registry.lineage, re-hashed with verify)
    then honing.registry.audit_report: render_markdown(facts) → report.md, render_html(facts) → report.html
    (self-contained, every text escaped), write_audit(facts, dir) → both and audit.json, each written atomically

Nothing is recomputed or typed: every number in the facts is a value copied from a record, and each section names
the record it came from. The reports show numbers to 4 significant digits; audit.json holds them as recorded.
When run directories were moved or deleted the audit falls back to the registry's copies and lists what is missing.

Sections: the model card (registry entry, base model, method, hyperparameters, compute, final metrics, history),
the data card (honing.workbench.card over the data runs of the lineage; PII, decontamination), every attached
evaluation (scores with intervals, paired differences, the gate's checks), the latest red-team scan (the one whose
run record's `started` is latest; ASR per category and overall), the lineage (graph and every hash) and the
verification of each file (recorded hash vs the file on disk now).
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from honing.errors import HoningError
from honing.registry.diff import config_of
from honing.registry.refs import parse_spec
from honing.registry.run_index import parse_time, read_run
from honing.registry.store import Registry, Version, default_path

FORMAT = "honing-audit"
HYPERPARAMETERS = {
    "train": ("lr", "schedule", "min_lr_ratio", "warmup_steps", "weight_decay", "betas", "max_steps", "epochs",
              "micro_batch_size", "grad_accum", "max_grad_norm", "precision", "seed"),
    "data": ("max_length", "packing", "train_on", "validation_split", "split_seed", "format"),
}
"""The config keys the model card lists as hyperparameters (every other key is in config.yaml, shown whole)."""
COMPUTE_METRICS = ("steps", "train_seconds", "tokens_seen", "target_tokens_seen", "tokens_per_s", "skipped_steps")
ADAPTER_KEYS = ("method", "rank", "alpha", "dropout", "target_modules")
_EPOCH = _dt.datetime.min.replace(tzinfo=_dt.timezone.utc)


# --------------------------------------------------------------------------- the facts


def default_output(name: str, version: int) -> Path:
    return Path("runs") / f"audit-{name}-v{version}"


def gather(spec: str, *, search: list[str] | tuple[str, ...] = (), verify: bool = True) -> dict[str, Any]:
    """Every fact of the audit of `spec` (NAME@VERSION or NAME@ALIAS), as JSON-ready data read from the records;
    a one-line HoningError for an unknown registry, name, version or alias."""
    name, which = parse_spec(spec)
    if which is None:
        raise HoningError(f"{spec!r}: say which version to audit (NAME@VERSION or NAME@ALIAS, e.g. {name}@1)")
    path = default_path()
    if not path.exists():
        raise HoningError(f"no registry at {path}; register a run first (honing registry register RUN_DIR --name "
                          f"{name}), or set HONING_REGISTRY")
    with Registry(path, create=False) as registry:
        version = registry.get(name, which)
        history = [e for e in registry.history(name) if e["version"] == version.version
                   or e.get("from_version") == version.version]
        evaluations = registry.attachments(name, version.version, "eval")
        redteams = registry.attachments(name, version.version, "redteam")
    from honing.registry.lineage import build_lineage

    graph = build_lineage(version.ref, search=search, verify=verify)
    lineage = graph.to_dict()
    lineage.pop("summary")  # counts of the graph's nodes, not a recorded number: the tree's last line says them
    facts: dict[str, Any] = {
        "format": FORMAT,
        "target": spec,
        "ref": version.ref,
        "registry": str(path),
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": _model_card(version, history),
        "training_log": _training_log(version),
        "data": _data_card(graph),
        "evaluations": [_evaluation(a) for a in evaluations],
        "redteam": _redteam(_latest(redteams), len(redteams)) if redteams else None,
        "lineage": lineage,
        "lineage_tree": _tree(graph),
        "verification": _verification(version, lineage),
    }
    facts["missing"] = _missing(version, facts)
    return facts


def _model_card(version: Version, history: list[dict[str, Any]]) -> dict[str, Any]:
    record = version.record
    config = config_of(version)  # flat: "train.lr" → value
    inputs = [i for i in record.get("inputs") or [] if isinstance(i, dict)]
    base = next((i for i in inputs if i.get("role") == "base_model"), None)
    method = {key: config[f"adapter.{key}"] for key in ADAPTER_KEYS if f"adapter.{key}" in config}
    if not method or method.get("method") == "full":
        method = {"method": method.get("method")}
    metrics = record.get("metrics") if isinstance(record.get("metrics"), dict) else {}
    return {
        "source": "the registry's copies of run.json and config.yaml (as registered)",
        "registry": {"name": version.name, "version": version.version, "status": version.status,
                     "aliases": version.aliases, "created": version.created, "created_by": version.created_by,
                     "kind": version.kind, "model_path": version.model_path, "weights_sha256": version.weights_sha256,
                     "run_dir": version.run_dir, "run_id": version.run_id, "stage": version.stage},
        "run": {key: record.get(key) for key in ("run_id", "stage", "status", "started", "finished", "command")},
        "base_model": base,
        "inputs": inputs,
        "saved": config.get("output.save"),
        "method": method,
        "hyperparameters": {f"{section}.{key}": config[f"{section}.{key}"] for section, keys in HYPERPARAMETERS.items()
                            for key in keys if f"{section}.{key}" in config},
        "seeds": record.get("seeds"),
        "compute": {"metrics": {key: metrics[key] for key in COMPUTE_METRICS if key in metrics},
                    "plan": record.get("plan"), "host": record.get("host"), "code": record.get("code"),
                    "libraries": record.get("libraries")},
        "metrics": metrics,
        "training_data": record.get("data"),
        "config_text": version.config,
        "history": [{key: event.get(key) for key in ("at", "action", "who", "alias", "from_version", "reason")}
                    for event in history],
    }


def _training_log(version: Version) -> dict[str, Any]:
    """The training run's metrics.jsonl (its last records): the run directory's file, or missing."""
    from honing.evals.report import load_curves

    path = Path(version.run_dir) / "metrics.jsonl"
    if not path.is_file():
        return {"path": str(path), "present": False, "records": None, "last_train": None, "last_validation": None}
    records = load_curves(version.run_dir)
    train = [r for r in records if "loss" in r]
    validation = [r for r in records if "val_loss" in r]
    return {"path": str(path), "present": True, "records": len(records),
            "last_train": train[-1] if train else None, "last_validation": validation[-1] if validation else None,
            "curve": records}


def _data_card(graph) -> dict[str, Any]:
    """The data runs of the lineage, oldest first, read from their run.json (a run whose directory is gone is named
    in `missing`), and the Markdown of honing.workbench.card over them."""
    from honing.workbench.card import sections

    depth = _depths(graph)
    nodes = [n for n in graph.nodes.values() if n.kind == "run" and str(n.stage or "").startswith("data-")]
    nodes.sort(key=lambda n: (-depth.get(n.id, 0), str(n.details.get("started") or "")))
    runs, missing = [], []
    for node in nodes:
        try:
            record = read_run(Path(node.path)).record if node.path else None
        except HoningError as err:
            missing.append({"run_id": node.run_id, "stage": node.stage, "dir": node.path, "why": str(err)})
            continue
        if record is None or record.get("status") != "completed":
            missing.append({"run_id": node.run_id, "stage": node.stage, "dir": node.path,
                            "why": f"status {None if record is None else record.get('status')!r}"})
            continue
        runs.append({**record, "dir": node.path})
    card = "\n".join(sections(runs)) if runs else ""
    return {"source": "run.json of each data run of the lineage (honing data ...)", "runs": runs, "missing": missing,
            "card_markdown": card, "pii": _pii(runs), "decontamination": _decontamination(runs)}


def _depths(graph) -> dict[str, int]:
    """Each node's distance upstream from the target (farther: earlier in the chain)."""
    depth, frontier = {graph.root: 0}, [graph.root]
    while frontier:
        nxt = []
        for node_id in frontier:
            for _, node in graph.upstream(node_id):
                if node.id not in depth:
                    depth[node.id] = depth[node_id] + 1
                    nxt.append(node.id)
        frontier = nxt
    return depth


def _pii(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for run in runs:
        counts = run.get("counts") or {}
        if "found" in counts or run.get("stage") == "data-pii":
            found.append({"run_id": run.get("run_id"), "action": ((run.get("parameters") or {}).get("pii") or {})
                          .get("action"), "found": counts.get("found"), "records_with_finds":
                          counts.get("records_with_finds"), "removed_by": counts.get("removed_by")})
    return found


def _decontamination(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each dedup or mix run, with the evaluation files it checked against (none: not decontaminated)."""
    found = []
    for run in runs:
        if run.get("stage") not in ("data-dedup", "data-mix"):
            continue
        against = [i for i in run.get("inputs") or [] if str(i.get("role", "")).startswith("against")]
        removed_by = (run.get("counts") or {}).get("removed_by") or {}
        found.append({"run_id": run.get("run_id"), "stage": run.get("stage"), "against": against,
                      "removed_by": removed_by})
    return found


def _evaluation(attached: dict[str, Any]) -> dict[str, Any]:
    record = attached.get("record") or {}
    return {"source": "the registry's copy of the eval run's run.json and results.json (as attached)",
            "run_id": attached.get("run_id"), "run_dir": attached.get("run_dir"), "attached": attached.get("created"),
            "present": Path(attached.get("run_dir") or "").is_dir(),
            "record": {key: record.get(key) for key in ("stage", "status", "started", "finished", "code", "inputs")},
            "results": attached.get("results") or {}}


def _latest(scans: list[dict[str, Any]]) -> dict[str, Any]:
    """The scan that ran last, by its run record's `started` (attachment order breaks ties and stands in for
    records with no time)."""
    def key(item: tuple[int, dict[str, Any]]) -> tuple[bool, _dt.datetime, int]:
        started = parse_time((item[1].get("record") or {}).get("started"))
        return started is not None, started or _EPOCH, item[0]

    return max(enumerate(scans), key=key)[1]


def _redteam(attached: dict[str, Any], count: int) -> dict[str, Any]:
    scan = _evaluation(attached)
    scan["source"] = "the registry's copy of the redteam run's run.json and results.json (as attached)"
    scan["attached_scans"] = count
    return scan


def _tree(graph) -> str:
    from honing.registry.lineage_render import render

    return render(graph, "tree")


def _verification(version: Version, lineage: dict[str, Any]) -> dict[str, Any]:
    """Per file and model of the lineage: the recorded hash and the state on disk now; and the training run's
    run.json on disk against the registry's copy."""
    files = [{key: node.get(key) for key in ("id", "kind", "label", "path", "sha256", "actual_sha256", "status",
                                             "hashed_as")} for node in lineage["nodes"] if node["kind"] in ("file", "model")]
    record_path = Path(version.run_dir) / "run.json"
    if not record_path.is_file():
        record_state = "missing"
    else:
        try:
            record_state = "ok" if json.loads(record_path.read_text(encoding="utf-8")) == version.record else "changed"
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            record_state = "changed"
    return {"verified": lineage["verified"], "passed": lineage["passed"], "files": files,
            "run_record": {"path": str(record_path), "status": record_state}}


def _missing(version: Version, facts: dict[str, Any]) -> list[str]:
    gone = [f"{what} (the registry's copies answer for it)" for what in version.missing()]
    gone += [f"{node['kind']} {node['path'] or node['label']} ({node['status']})" for node in facts["lineage"]["nodes"]
             if node["status"] in ("missing", "damaged", "changed") and node["kind"] != "external"]
    gone += [f"data run {run['run_id'] or run['dir']}: {run['why']}" for run in facts["data"]["missing"]]
    if not facts["training_log"]["present"]:
        gone.append(f"training log {facts['training_log']['path']}")
    for scan in [*facts["evaluations"], *([facts["redteam"]] if facts["redteam"] else [])]:
        if not scan["present"]:
            gone.append(f"{scan['record'].get('stage')} run directory {scan['run_dir']} (the registry's copy answers)")
    if facts["verification"]["run_record"]["status"] == "changed":
        gone.append(f"{facts['verification']['run_record']['path']} differs from the registry's copy")
    return list(dict.fromkeys(gone))
