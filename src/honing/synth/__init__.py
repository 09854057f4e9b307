"""`honing data synth`: synthetic data from a teacher model, with provenance and resume.

    validate inputs ─▶ teacher (+ judge) ─▶ run directory (new, or resumed) ─▶ batches
    (self-instruct rounds or distillation batches), each appended to <run_dir>/synth.jsonl with
    state.json ─▶ output written atomically ─▶ run.json: inputs with hashes, parameters, counts
    kept and dropped by rule, output with its hash

Ctrl-C stops after the current batch; run again with resume=true (same run_dir) to continue.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from honing.config.synth import SynthConfig, TeacherConfig

__all__ = ["SynthConfig", "TeacherConfig", "run"]


def run(cfg: SynthConfig, *, teacher: Any = None, judge: Any = None) -> dict[str, Any]:
    """Run (or resume) a synth job; returns a summary. `teacher`/`judge` objects replace the configured ones."""
    from honing.evals import judges as judges_module
    from honing.interrupt import BATCH_NOTICE, StopRequest
    from honing.models.chat import ChatModel
    from honing.synth.distill import distill
    from honing.synth.selfinstruct import self_instruct
    from honing.ui import console

    # --- validate inputs before anything is loaded or written
    self_instructing = cfg.method == "self_instruct"
    source, run_dir, resuming, fingerprint, store = _check_inputs(cfg)

    # --- the parts
    teacher = teacher or ChatModel.load(cfg.teacher, cfg.sampling, role="teacher", batch_size=cfg.batch_size)
    judge = judge or (judges_module.build_judge(cfg.judge, batch_size=cfg.batch_size) if cfg.judge else None)
    run = _open_run(cfg, run_dir, resuming, source, fingerprint, teacher, judge)
    state = store.load_state() or {**_fresh_state(cfg), "fingerprint": fingerprint}
    what = (f"{cfg.num_instructions} new tasks from {source} (at most {cfg.max_rounds} rounds of {cfg.batch_size})"
            if self_instructing else f"answers to every prompt of {source}")
    console.print(f"synth ({cfg.method}): {what} with teacher {teacher.identity}; "
                  f"{'resuming' if store.state_path.is_file() else 'writing'} {store.kept_path} → {cfg.output}")

    # --- generate, batch by batch
    loop = self_instruct if self_instructing else distill
    try:
        with StopRequest(BATCH_NOTICE) as stop:
            state, finished = loop(cfg, teacher, judge, store, state, stop)
    except KeyboardInterrupt:
        run.finish("interrupted")
        console.print(f"interrupted; the last complete batch is saved. Continue with: run_dir={run_dir} resume=true")
        raise
    counts = {"kept": state["kept"], "dropped": state["dropped"]}
    run.set("counts", counts)
    summary: dict[str, Any] = {"run_dir": str(run_dir), "method": cfg.method, **counts}
    if not finished:
        run.finish("interrupted", metrics={"kept": state["kept"]})
        console.print(f"stopped; {state['kept']} records kept so far. Continue with: run_dir={run_dir} resume=true")
        return {**summary, "status": "interrupted", "output": None}

    # --- the output, atomically
    records = [_exported(cfg, record) for record in store.kept_records()]
    digest = store.finalize(cfg.output, records)
    run.add_output("data", cfg.output)
    run.set("output", {"path": cfg.output, "sha256": digest, "records": len(records)})
    run.finish("completed", metrics={"kept": state["kept"], "dropped": sum(state["dropped"].values())})
    console.print(f"{len(records)} records → {cfg.output} (dropped {state['dropped'] or 'none'})")
    return {**summary, "status": "completed", "output": cfg.output, "sha256": digest, "records": len(records)}


def _check_inputs(cfg: SynthConfig) -> tuple[Path, Path, bool, dict[str, Any], Any]:
    """The source file (read once, so a bad record is a file:line error before the teacher loads), the run
    directory, whether it is resumed, the fingerprint a resume must match, and the store."""
    from honing.errors import HoningError
    from honing.runs import RUN_FILE, default_run_dir, file_sha256
    from honing.synth.distill import TEMPLATE as DISTILL_TEMPLATE
    from honing.synth.distill import load_prompts
    from honing.synth.selfinstruct import TEMPLATE as SELF_INSTRUCT_TEMPLATE
    from honing.synth.selfinstruct import load_seeds
    from honing.synth.store import SynthStore

    self_instructing = cfg.method == "self_instruct"
    source = Path(cfg.seeds if self_instructing else cfg.prompts)
    if self_instructing:
        load_seeds(str(source))  # a bad record is a file:line error now, not after the teacher loaded
    else:
        load_prompts(cfg)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir("synth")
    resuming = cfg.resume and (run_dir / RUN_FILE).is_file()
    if not cfg.resume and ((run_dir / RUN_FILE).is_file() or (run_dir / "state.json").is_file()):
        raise HoningError(f"{run_dir} already holds a synth run; set resume=true to continue it, or choose another run_dir")
    fingerprint = {"method": cfg.method, "seed": cfg.seed, "source_sha256": file_sha256(source),
                   "template": SELF_INSTRUCT_TEMPLATE if self_instructing else DISTILL_TEMPLATE}
    if not self_instructing:
        fingerprint["format"] = cfg.format  # distill writes the final format batch by batch
    store = SynthStore(run_dir)
    if resuming and store.state_path.is_file():
        started_with = json.loads(store.state_path.read_text(encoding="utf-8")).get("fingerprint", {})
        changed = [f"{key} was {started_with.get(key)!r}, now {value!r}"
                   for key, value in fingerprint.items() if started_with.get(key) != value]
        if changed:
            raise HoningError(f"{run_dir} cannot be resumed with this config: {'; '.join(changed)}; "
                              "resume with the original settings or choose another run_dir")
    return source, run_dir, resuming, fingerprint, store


def _open_run(cfg: SynthConfig, run_dir: Path, resuming: bool, source: Path, fingerprint: dict[str, Any],
              teacher: Any, judge: Any) -> Any:
    """The run (reopened, or new) with its inputs and parameters recorded."""
    from honing.config import dump_config
    from honing.io import write_text_atomic
    from honing.runs import Run
    from honing.ui import console

    self_instructing = cfg.method == "self_instruct"
    if resuming:
        run = Run.open(run_dir)
        write_text_atomic(run_dir / "config.yaml", dump_config(cfg))
    else:
        if cfg.resume:
            console.print(f"no run in {run_dir} yet: starting one")
        run = Run.create("synth", cfg, run_dir)
    run.add_input("seeds" if self_instructing else "prompts", source, sha256=fingerprint["source_sha256"])
    run.add_input("teacher", teacher.identity.get("path") or teacher.identity.get("endpoint") or "teacher",
                  sha256=teacher.identity.get("sha256"), identity=teacher.identity)
    if judge is not None:
        run.add_input("judge", judge.identity.get("path") or judge.identity.get("endpoint") or "judge",
                      sha256=judge.identity.get("sha256"), identity=judge.identity)
    run.set("parameters", {**cfg.model_dump(mode="json"), "template": fingerprint["template"]})
    return run


def _fresh_state(cfg: SynthConfig) -> dict[str, Any]:
    if cfg.method == "self_instruct":
        return {"round": 0, "kept": 0, "requested": 0, "dropped": {}}
    return {"done": 0, "kept": 0, "dropped": {}}


def _exported(cfg: SynthConfig, record: dict[str, Any]) -> dict[str, Any]:
    """Self-instruct keeps Alpaca records in the run directory; format=chat turns them into messages here."""
    if cfg.format == "alpaca" or "messages" in record:
        return record
    user = record["instruction"] + (f"\n\n{record['input']}" if record.get("input") else "")
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}],
            "_provenance": record["_provenance"]}
