"""The training benchmark's machinery on a tiny model: honing's leg (and TRL's when installed) runs,
the JSON has a positive throughput, the FLOP formula is what the docstring says, the tables render."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import train as bench_train  # noqa: E402
from bench.workload import flops_per_token, make_examples, resolve_size  # noqa: E402


def test_flops_per_token_formula():
    size = resolve_size("llama-1b")
    full = flops_per_token(size, "full")
    # Llama-3.2-1B: 1.236e9 parameters with the tied head counted once; all of them take part in a matmul.
    assert full["matmul_params"] == pytest.approx(1.2358e9, rel=1e-3)
    assert full["flops_per_token"] == 6 * full["matmul_params"] + 12 * 16 * 2048 * 2048
    lora = flops_per_token(size, "lora")
    assert lora["flops_per_token"] == 4 * lora["matmul_params"] + 6 * lora["lora_params"] + 12 * 16 * 2048 * 2048


def test_examples_are_seeded_and_within_bounds():
    size = resolve_size("tiny")
    first, again = make_examples(size, 0), make_examples(size, 0)
    assert first == again
    assert all(size.min_len <= len(e) <= size.seq for e in first)
    assert min(min(e) for e in first) >= 2  # never the pad (0) or eos (1) id


@pytest.mark.parametrize("with_trl", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_tiny_benchmark_runs_and_renders(tmp_path, with_trl):
    if with_trl and importlib.util.find_spec("trl") is None:
        pytest.skip("trl is not installed (the bench extra)")
    out = tmp_path / "tiny.json"
    argv = ["--size", "tiny", "--modes", "full" if with_trl else "full,lora", "--steps", "1", "--warmup", "1",
            "--precision", "fp32", "--device", "cpu", "--out", str(out)]
    report = bench_train.main(argv + ([] if with_trl else ["--no-trl"]))

    saved = json.loads(out.read_text())
    legs = {(r["framework"], r["mode"]): r for r in saved["results"]}
    expected = {("honing", "full"), ("trl", "full")} if with_trl else {("honing", "full"), ("honing", "lora")}
    assert set(legs) == expected
    for leg in legs.values():
        assert leg["status"] == "ok", leg.get("error")
        assert leg["real_tokens_per_s"] > 0
        assert leg["peak_memory_bytes"] > 0
        assert 0 < leg["mfu"] < 1
        assert len(leg["losses"]) == 2
    assert legs[("honing", "full")]["params_trainable"] > legs.get(("honing", "lora"), {"params_trainable": 0})["params_trainable"]
    if with_trl:
        (check,) = saved["loss_check"]
        assert check["max_abs_diff"] < 0.05  # same init: the first losses agree to data noise
        assert saved["ratios"][0]["tokens_per_s_ratio"] > 0

    from rich.console import Console

    console = Console(file=io.StringIO(), width=160)
    bench_train.render(report, console)
    text = console.file.getvalue()
    assert "real tokens/s" in text and "honing" in text


def test_find_max_seq_doubles_then_bisects(monkeypatch, tmp_path):
    def fake_child(spec, workdir, name):
        return {"status": "ok" if spec["size"]["seq"] <= 5000 else "oom"}

    monkeypatch.setattr(bench_train, "run_child", fake_child)
    args = bench_train.parse_args(["--size", "tiny", "--modes", "full"])
    size = resolve_size("tiny", seq=1024)
    (found,) = bench_train.find_max_seq(size, ["honing"], args, "cpu", "fp32", tmp_path)
    assert found["max_seq"] == 4096 and found["first_failing"] == 5120
    assert all(seq == 1024 * (seq // 1024) for seq in found["tried"])


def test_quickstart_workload_compares_shared_prefix_off_and_auto(tmp_path, tiny_model_dir, monkeypatch):
    """The quickstart workload's two legs on the tiny model (the embedded model's tokenizer): auto shares the
    system prompt and ends with the same losses as off."""
    monkeypatch.setenv("HONING_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "quickstart.json"
    report = bench_train.main(["--workload", "quickstart", "--model-path", str(tiny_model_dir), "--steps", "2",
                               "--warmup", "1", "--out", str(out)])
    legs = {r["shared_prefix"]: r for r in json.loads(out.read_text())["results"]}
    assert set(legs) == {"off", "auto"} and all(r["status"] == "ok" for r in legs.values())
    assert legs["off"]["prefix_tokens_per_row"] == 0 and legs["auto"]["plan"].startswith("auto")
    assert legs["auto"]["prefix_tokens_per_row"] == 8 * legs["auto"]["prefix_tokens_computed_once"] > 0
    assert legs["auto"]["prefix_tokens_saved_share"] > 0.3
    assert report["comparison"]["max_abs_loss_diff"] < 1e-4 and len(legs["auto"]["losses"]) == 3
    from rich.console import Console

    bench_train.render_quickstart(report, Console(file=io.StringIO(), width=150))
