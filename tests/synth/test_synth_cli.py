"""`honing data synth` through the CLI: distillation with a real local teacher (the tiny model)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from honing.cli import cli


def test_data_synth_distill_through_the_cli(tmp_path, tiny_model_dir):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Say hello.\nName a colour.\n")
    output = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, [
        "data", "synth", "method=distill", f"prompts={prompts}", f"output={output}", f"run_dir={tmp_path / 'run'}",
        f"teacher.path={tiny_model_dir}", "sampling.max_new_tokens=4", "format=chat",
    ], standalone_mode=False)
    assert result.exception is None, result.output
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["messages"][0]["content"] for r in records] == ["Say hello.", "Name a colour."]
    assert all(r["_provenance"]["method"] == "distill" for r in records)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert any(i["role"].startswith("prompts") or "prompt" in i["role"] for i in run["inputs"])
