"""The generation benchmark end to end on a tiny random llama (the embedded tokenizer, the quickstart's prompts):
every leg runs, greedy answers agree, the JSON holds the figures, the FLOP count is the docstring's, the
tables render; the vLLM leg skips with its reason where vLLM or CUDA is missing."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import generate as bench_generate  # noqa: E402
from bench.generate_legs import Timed  # noqa: E402


def test_flops_count_prompt_suffix_generated_tokens_and_causal_attention():
    shape = {"matmul_params": 1000, "layers": 2, "attention_width": 8}
    timed = Timed([[5, 6]], [0.1], [0.2], prompt_tokens=[4], cached_tokens=[1], wall_s=1.0)
    # positions 1..5 are computed (3 prompt + 2 generated); each attends to position + 1 tokens
    assert bench_generate.flops(timed, shape) == 2 * 1000 * 5 + 4 * 2 * 8 * (2 + 3 + 4 + 5 + 6)


def test_tiny_benchmark_runs_every_leg_and_agrees(tmp_path, tiny_model_dir):
    out = tmp_path / "generate.json"
    report = bench_generate.main(["--model", str(tiny_model_dir), "--prompts", "4", "--max-new-tokens", "4",
                                  "--concurrency", "1,2", "--vllm", "--device", "cpu", "--out", str(out)])
    saved = json.loads(out.read_text())
    legs = {(r["concurrency"], r["leg"]): r for r in saved["results"]}
    assert set(legs) == {(c, leg) for c in (1, 2) for leg in ("honing", "honing-warm", "generate", "continuous",
                                                              "vllm")}
    for (concurrency, leg), r in legs.items():
        if leg == "vllm":
            assert r["status"] == "skipped" and r["reason"]
            continue
        assert r["status"] == "ok", r.get("error")
        assert r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1
        assert 0 < r["first_token_s"]["p50"] <= r["latency_s"]["p95"] <= r["wall_s"] * 1.01
        assert r["generated_tokens"] == sum(len(t) for t in r["token_ids"])
    # the quickstart prompts share the system prompt: honing computes it once, the warm run not at all
    assert legs[(2, "honing")]["prompt_tokens_computed"] < legs[(2, "generate")]["prompt_tokens_computed"]
    assert legs[(2, "honing-warm")]["prompt_tokens_computed"] < legs[(2, "honing")]["prompt_tokens_computed"]
    assert saved["prompts"]["common_prefix_tokens"] > 16
    for check in saved["comparison"]:
        assert check["agreement"] == pytest.approx(1.0), check  # fp32 greedy: token-identical
    assert saved["matmul_peak"]["flops_per_s"] > 0 and saved["versions"]["torch"]

    from rich.console import Console

    console = Console(file=io.StringIO(), width=200)
    bench_generate.render(report, console)
    text = console.file.getvalue()
    assert "tokens/s" in text and "continuous" in text and "skipped" in text
