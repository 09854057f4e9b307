"""`honing pipeline` on a tiny model: steps run in order through the stage registry, a rerun skips what is
unchanged, a change reruns that step and the ones after it, a gate registers and promotes or rejects, a failed
step or a bad reference is one line, and both bundled pipelines run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from honing.config.loader import load_config
from honing.config.pipeline import PipelineConfig
from honing.errors import ConfigError, HoningError
from honing.registry.pipeline import Step, _stage, load_step, run_pipeline, step_key
from honing.registry.refs import resolve_ref
from honing.registry.store import Registry

ROOT = Path(__file__).resolve().parents[2]
CHAT = ROOT / "examples" / "data" / "chat.jsonl"
HONING = [sys.executable, "-m", "honing.cli"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HONING_REGISTRY", str(tmp_path / "reg" / "registry.sqlite"))
    monkeypatch.setenv("HONING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HONING_USER", "tester")


def _probe(tmp_path: Path, **settings) -> dict:
    data = tmp_path / "gate.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {w}.", "answer": w}) + "\n" for w in ("yes", "no", "maybe")))
    return {"name": "probe", "data": str(data), "metrics": ["exact_match"], "max_new_tokens": 4, "regression": True,
            **settings}


def _sft(tiny_model_dir: Path, **extra) -> dict:
    return {"model.path": str(tiny_model_dir), "data.max_length": 64, "train.max_steps": 2,
            "train.micro_batch_size": 4, "adapter.rank": 4, "output.tensorboard": False, **extra}


def _pipeline(tmp_path: Path, tiny_model_dir: Path, *, clean_input: Path = CHAT, sft: dict | None = None,
              gate_task: dict | None = None, sft_data: str = "${steps.clean.output}") -> Path:
    document = {
        "name": "tiny",
        "output": {"dir": str(tmp_path / "pipe")},
        "registry": {"gate": {"tasks": [gate_task or _probe(tmp_path)], "regression_tolerance": 1.0, "cache": False}},
        "steps": [
            {"name": "clean", "command": "data clean", "overrides": {"input": str(clean_input)}},
            {"name": "sft", "command": "sft", "overrides": {"data.train": sft_data,
                                                            **_sft(tiny_model_dir, **(sft or {}))}},
            {"name": "promote", "gate": {"candidate": "${steps.sft.run_dir}", "name": "bot"}},
        ],
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _run(path: Path, *overrides: str) -> dict:
    return run_pipeline(load_config(PipelineConfig, path, list(overrides)))


def _statuses(result: dict) -> dict[str, str]:
    return {step["name"]: step["status"] for step in result["steps"]}


def _dirs(tmp_path: Path) -> set[str]:
    return {p.name for p in (tmp_path / "pipe").iterdir() if p.is_dir()}


def test_a_pipeline_runs_skips_what_is_unchanged_and_reruns_what_changed(tmp_path, tiny_model_dir):
    path = _pipeline(tmp_path, tiny_model_dir)
    first = _run(path)
    assert first["status"] == "completed" and set(_statuses(first).values()) == {"ran"}
    with Registry() as registry:
        assert registry.get("bot", "production").version == 1
    state = json.loads((tmp_path / "pipe" / "state.json").read_text())
    assert {name: entry["status"] for name, entry in state["steps"].items()} == dict.fromkeys(_statuses(first), "done")
    assert Path(state["steps"]["sft"]["outputs"]["adapter"]).is_dir()
    first_sft = state["steps"]["sft"]["run_dir"]
    dirs = _dirs(tmp_path)

    second = _run(path)
    assert set(_statuses(second).values()) == {"skipped"} and _dirs(tmp_path) == dirs
    with Registry() as registry:
        assert [v.version for v in registry.versions("bot")] == [1]

    changed = _pipeline(tmp_path, tiny_model_dir, sft={"train.seed": 7})  # one override of one step
    third = _run(changed)
    assert _statuses(third) == {"clean": "skipped", "sft": "ran", "promote": "ran"}
    new = _dirs(tmp_path) - dirs
    assert len(new) == 2 and dirs <= _dirs(tmp_path)  # the old sft run stays where the registry's v1 points
    with Registry() as registry:
        assert registry.get("bot", "production").version == 2

    state = json.loads((tmp_path / "pipe" / "state.json").read_text())
    v2_dir = Path(state["steps"]["sft"]["run_dir"])
    v2_record = (v2_dir / "run.json").read_bytes()
    alias = _stats_step("registry:bot@production")  # a reference to an alias is keyed by the version it names
    key_before = _key_of(alias, tmp_path)

    forced = _run(changed, "from_step=sft")
    assert _statuses(forced) == {"clean": "skipped", "sft": "ran", "promote": "ran"}
    state = json.loads((tmp_path / "pipe" / "state.json").read_text())
    assert state["steps"]["sft"]["run_dir"] == f"{v2_dir}-2"  # same key, fresh directory: the finished run stays
    assert (v2_dir / "run.json").read_bytes() == v2_record
    assert not list((tmp_path / "pipe").glob("*.attempt-*"))
    assert {resolve_ref(f"registry:bot@{n}").run_dir for n in (1, 2, 3)} == {
        str(Path(p).resolve()) for p in (first_sft, v2_dir, f"{v2_dir}-2")}
    assert _key_of(alias, tmp_path) != key_before  # production moved from v2 to v3
    log = [json.loads(line) for line in (tmp_path / "pipe" / "log.jsonl").read_text().splitlines()]
    assert [e["event"] for e in log if e["step"] == "clean"] == ["started", "finished", "skipped", "skipped", "skipped"]


def _stats_step(field: str, name: str = "stats") -> dict:
    return {"name": name, "command": "data stats",
            "overrides": {"input": str(CHAT), "field": field, "pii": False, "workers": 1}}


def _key_of(settings: dict, tmp_path: Path) -> str:
    cfg = PipelineConfig.model_validate({"name": "keys", "steps": [settings]})
    step = Step(cfg.steps[0], _stage(cfg.steps[0]))
    return step_key(step, load_step(step, {}, "@pipeline-step-dir@"), tmp_path / "keys")[0]


def test_config_strings_naming_the_working_or_pipeline_directory_are_not_hashed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the pipeline's directory is runs/pipeline-paths, under the working directory
    (tmp_path / "runs").mkdir()
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"name": "paths", "steps": [
        _stats_step(".", "here"), _stats_step("..", "up"), _stats_step("runs", "runs")]}))
    first = _run(path)
    assert set(_statuses(first).values()) == {"ran"}
    state = json.loads((tmp_path / "runs" / "pipeline-paths" / "state.json").read_text())
    assert all(entry["inputs"] == {str(CHAT): entry["inputs"][str(CHAT)]} for entry in state["steps"].values())
    assert set(_statuses(_run(path)).values()) == {"skipped"}


def test_a_gate_name_is_checked_before_anything_runs(tmp_path, tiny_model_dir):
    document = yaml.safe_load(_pipeline(tmp_path, tiny_model_dir).read_text())
    document["steps"][2]["gate"]["name"] = "bad/name"
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError, match="steps.promote.gate.name: model name 'bad/name'"):
        _run(path)
    assert not (tmp_path / "pipe").exists()


def test_a_failed_gate_rejects_the_candidate_keeps_production_and_exits_3(tmp_path, tiny_model_dir):
    _run(_pipeline(tmp_path, tiny_model_dir))  # v1 in production
    impossible = _probe(tmp_path, min={"exact_match": 1.0})  # a random tiny model never gets there
    path = _pipeline(tmp_path, tiny_model_dir, sft={"train.seed": 3}, gate_task=impossible)
    env = {**os.environ, "COLUMNS": "400"}
    out = subprocess.run([*HONING, "pipeline", str(path)], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 3, out.stderr + out.stdout
    assert "registered as rejected" in out.stderr and "production stays on v1" in out.stderr, out.stderr
    with Registry() as registry:
        assert registry.get("bot", "production").version == 1
        assert registry.get("bot", 2).status == "rejected" and registry.attachments("bot", 2, "eval")
    again = _run(path)  # unchanged: the recorded verdict stands, nothing is registered twice
    assert again["status"] == "gate_failed" and again["rejected"]["version"] == 2
    assert Path(again["rejected"]["report"]).is_file()
    with Registry() as registry:
        assert len(registry.versions("bot")) == 2


def test_a_failing_step_stops_with_one_line_and_a_rerun_continues_from_it(tmp_path, tiny_model_dir, monkeypatch,
                                                                         capsys):
    path = _pipeline(tmp_path, tiny_model_dir, sft={"data.format": "instruction"})  # chat data read as alpaca records
    with pytest.raises(HoningError) as err:
        _run(path)
    assert "\n" not in str(err.value)
    state = json.loads((tmp_path / "pipe" / "state.json").read_text())
    assert state["steps"]["clean"]["status"] == "done" and state["steps"]["sft"]["status"] == "failed"
    assert "promote" not in state["steps"] and not (tmp_path / "reg" / "registry.sqlite").exists()
    def unreachable(*args, **kwargs):
        raise HoningError("MLflow is not reachable")

    monkeypatch.setattr("honing.registry.mirror.mirror_model", unreachable)
    fixed = _run(_pipeline(tmp_path, tiny_model_dir), "registry.mlflow_uri=sqlite:///nowhere.db")
    assert _statuses(fixed) == {"clean": "skipped", "sft": "ran", "promote": "ran"}
    assert "MLflow is not reachable" in capsys.readouterr().err  # a warning: the gate's verdict is recorded
    state = json.loads((tmp_path / "pipe" / "state.json").read_text())
    assert state["steps"]["promote"]["status"] == "done"


@pytest.mark.parametrize("reference, message", [
    ("${steps.nope.adapter}", "no step 'nope' before sft (earlier steps: clean)"),
    ("${steps.clean.adapter}", "data clean step 'clean' has no output 'adapter' (available: run_dir, output, "),
    ("${steps.promote.version}", "no step 'promote' before sft (it runs later"),
])
def test_bad_references_are_one_line_errors_before_anything_runs(tmp_path, tiny_model_dir, reference, message):
    path = _pipeline(tmp_path, tiny_model_dir, sft_data=reference)
    with pytest.raises(ConfigError, match="steps.sft.overrides.data.train") as err:
        _run(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "pipe").exists()


# --------------------------------------------------------------------------- the bundled pipelines


def _gate_overrides(tmp_path: Path) -> list[str]:
    task = json.dumps(_probe(tmp_path))
    return [f"registry.gate.tasks=[{task}]", "registry.gate.regression_tolerance=1.0", "registry.gate.cache=false",
            f"output.dir={tmp_path / 'pipe'}"]


def _tiny(prefix: str, settings: dict) -> list[str]:
    return [f"{prefix}.{key}={json.dumps(value)}" for key, value in settings.items()]


def test_the_bundled_quickstart_pipeline_runs_on_a_tiny_model(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(ROOT)  # the bundled pipelines name their files from the repository root
    result = _run(ROOT / "examples" / "pipeline" / "quickstart.yaml", *_gate_overrides(tmp_path),
                  *_tiny("steps.sft.overrides", {"model": {"path": str(tiny_model_dir)}, "train.max_steps": 2, "adapter.rank": 4,
                                                 "output.tensorboard": False}))
    assert result["status"] == "completed" and set(_statuses(result).values()) == {"ran"}
    with Registry() as registry:
        assert registry.get("support-bot", "production").version == 1


def test_the_bundled_redteam_loop_runs_on_a_tiny_model(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(ROOT)
    scan = {"target": {"path": str(tiny_model_dir)}, "limit": 6, "mutators": ["none"], "attempts": 1,
            "sampling.max_new_tokens": 8, "batch_size": 6, "resamples": 100, "output.tensorboard": False}
    result = _run(ROOT / "examples" / "pipeline" / "redteam_loop.yaml", *_gate_overrides(tmp_path),
                  *_tiny("steps.scan.overrides", scan),
                  *_tiny("steps.revise.overrides", {"max_prompts": 4, "require_fixed": False, "anchors": False,
                                                    "anchor_prompts": None, "revision_samples": 1,
                                                    "sampling.max_new_tokens": 8, "output.tensorboard": False}),
                  *_tiny("steps.align.overrides", {"model": {"path": str(tiny_model_dir)}, "data.max_length": 64,
                                                   "data.validation_split": 0, "train.max_steps": 2,
                                                   "train.micro_batch_size": 2, "train.grad_accum": 1,
                                                   "adapter.rank": 4, "output.tensorboard": False}),
                  *_tiny("steps.rescan.overrides", {**{k: v for k, v in scan.items() if k != "target"},
                                                    "fail_above": 1.0}))
    assert result["status"] == "completed", result
    with Registry() as registry:
        version = registry.get("embedded-safe", "production")
        assert version.version == 1 and registry.attachments("embedded-safe", 1, "redteam")  # the rescan


def test_a_server_or_an_interactive_command_is_not_a_step(tmp_path):
    for command, why in (("serve", "runs until stopped"), ("chat", "interactive")):
        path = tmp_path / f"{command}.yaml"
        path.write_text(yaml.safe_dump({"name": command, "steps": [{"name": "it", "command": command}]}))
        with pytest.raises(ConfigError, match=f"steps.it.command: {command} cannot be a pipeline step.*{why}"):
            _run(path)
