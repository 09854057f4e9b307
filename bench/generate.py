"""Generation benchmark: honing's engine against transformers `generate` and transformers' continuous batching.

    python -m bench.generate                                  # embedded model, 32 quickstart prompts, C = 1, 8, 32
    python -m bench.generate --model tiny --prompts 8 --max-new-tokens 8 --concurrency 1,8
    python -m bench.generate --model llama-1b --vllm --concurrency 1,8,32     # on a GPU

Phases: load the model and the prompts → measure the matmul peak → one untimed warm-up of every leg → every
(concurrency, leg) run, `--repeats` times, interleaved → the peak again (the higher reading is kept) →
compare (tokens/s, time to first token, per-request latency, MFU, greedy agreement) → tables and JSON.
All legs run in this one process on the same model object and the same token-id prompts (the quickstart's
held-out tickets rendered with the chat template; they share its ~90-token system prompt); generation is
greedy, every request may stop at the model's stop tokens or at --max-new-tokens. What each leg does is in
bench/generate_legs.py; bench/RESULTS.md ("Generation benchmark") records the measurements.

Every request arrives at t = 0 and at most C are in flight. Time to first token and latency are seconds from
the run's start to a request's first and last new token (for transformers `generate`: to its static batch's
first forward's logits and to the batch's end). tokens/s = the requests' generated tokens (each cut after its
first stop token) ÷ the run's wall time. honing's row is a cold prefix cache (a fresh Engine per run); the
"honing (warm)" row is a second run on the same Engine, its prefixes already kept.

MFU = model FLOPs ÷ wall time ÷ the matmul peak measured in this run in the model's dtype. Model FLOPs per
request, N = parameters in matmuls (every nn.Linear, the LM head included even when tied), L = layers,
d = attention width (heads × head_dim), P = prompt tokens, c = of them taken from a prefix cache, g = generated:
    2·N·((P − c) + g)  +  4·L·d·Σ context,   Σ context = Σ (position + 1) over the positions c .. P + g − 1
(scores and values, causal: each token attends to the tokens before it). Only useful work is counted: left
padding and the tokens transformers `generate` computes for a row after it stopped are not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import generate_legs as legs
from bench.train import REPO, hardware, versions, wait_until_idle

LIBRARIES = ("torch", "transformers", "vllm", "honing")
LEGS = {"honing": "honing", "honing-warm": "honing (warm)", "generate": "transformers generate",
        "continuous": "transformers continuous batching", "vllm": "vLLM"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded",
                        help="embedded (SmolLM2-135M-Instruct), tiny (a 2-layer random llama with its tokenizer), "
                             "llama-1b (the Llama-3.2-1B shape, random weights), or a local HF model directory")
    parser.add_argument("--prompts", type=int, default=32, help="held-out quickstart tickets to answer (at most 60)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated requests in flight")
    parser.add_argument("--legs", default="honing,honing-warm,generate,continuous",
                        help=f"comma-separated subset of {', '.join(LEGS)}")
    parser.add_argument("--vllm", action="store_true", help="add the vLLM leg (skipped, with the reason, without "
                                                            "vllm or CUDA)")
    parser.add_argument("--vllm-memory", type=float, default=0.5,
                        help="vLLM's gpu_memory_utilization (the torch legs share the GPU)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"],
                        help="weights and matmul peak (default: float32 on a CPU, bfloat16 on a GPU)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run every leg this many times (interleaved); each reports its fastest, all kept in JSON")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="before each leg, wait up to this long for other processes to leave the CPU idle")
    parser.add_argument("--out", help="result JSON (default: bench/results-generate-<model>-<dtype>.json)")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.legs = [leg.strip() for leg in args.legs.split(",") if leg.strip()]
    if args.vllm and "vllm" not in args.legs:
        args.legs.append("vllm")
    unknown = set(args.legs) - set(LEGS)
    if unknown:
        parser.error(f"unknown leg(s) {sorted(unknown)}: use {', '.join(LEGS)}")
    if not args.concurrency or min(args.concurrency) < 1:
        parser.error("--concurrency needs positive integers, e.g. 1,8,32")
    return args


# --------------------------------------------------------------------------- setup


def load(args: argparse.Namespace, device: str, dtype: str) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, what the model is) in eval mode on `device`."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from honing.config import ModelConfig
    from honing.models.load import load_model, load_tokenizer

    if args.model in ("tiny", "llama-1b"):
        tokenizer = load_tokenizer(ModelConfig())  # the embedded tokenizer renders the prompts
        shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=len(tokenizer)) if args.model == "tiny" else dict(
            hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
            num_key_value_heads=8, vocab_size=128256, rope_theta=500_000.0)
        config = LlamaConfig(**shape, max_position_embeddings=2048, tie_word_embeddings=True,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        with torch.random.fork_rng(devices=[]), torch.device(device):
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=getattr(torch, dtype))
        source = {"kind": f"random llama ({args.model} shape), seed 0", "config": config.to_diff_dict()}
    else:
        cfg = ModelConfig() if args.model == "embedded" else ModelConfig(path=args.model)
        loaded = load_model(cfg, device=device, dtype=dtype)
        model, tokenizer, source = loaded.model, loaded.tokenizer, dict(loaded.source)
    model.eval()
    return model, tokenizer, {"name": args.model, "source": source, **model_shape(model)}


def model_shape(model) -> dict[str, Any]:
    """N (parameters in matmuls, counted per nn.Linear, so a tied head counts) and the attention sizes."""
    from torch import nn

    config = model.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return {"matmul_params": sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear)),
            "params_total": sum(p.numel() for p in model.parameters()), "layers": config.num_hidden_layers,
            "attention_width": heads * head_dim, "dtype": str(next(model.parameters()).dtype).replace("torch.", "")}


def load_prompts(tokenizer, count: int) -> list[list[int]]:
    """The first `count` held-out quickstart tickets, without the assistant turn, as generation renders them."""
    from honing.data.prompts import encode_prompts
    from honing.quickstart.task import load_split

    records = load_split("test")[:count]
    return encode_prompts(tokenizer, [[m for m in r["messages"] if m["role"] != "assistant"] for r in records])


def common_prefix(prompts: list[list[int]]) -> int:
    first, n = prompts[0], len(prompts[0])
    for p in prompts[1:]:
        n = next((i for i, (a, b) in enumerate(zip(first[:n], p)) if a != b), min(n, len(p)))
    return n


def vllm_directory(model, tokenizer, info: dict[str, Any], args, workdir: Path) -> str:
    """vLLM loads weights from disk: a local directory as it is, anything else (the embedded GGUF's weights,
    the random llama-1b) saved to a temporary HF directory first."""
    if Path(args.model).is_dir():
        return args.model
    out = workdir / "vllm-model"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


# --------------------------------------------------------------------------- measuring


def flops(timed: legs.Timed, shape: dict[str, Any]) -> float:
    """The docstring's model FLOPs of one run."""
    total = 0.0
    for prompt, cached, tokens in zip(timed.prompt_tokens, timed.cached_tokens, timed.token_ids):
        end = prompt + len(tokens)
        context = (end * (end + 1) - cached * (cached + 1)) / 2  # Σ (position + 1), positions cached .. end − 1
        total += 2 * shape["matmul_params"] * (end - cached) + 4 * shape["layers"] * shape["attention_width"] * context
    return total


def percentiles(values: list[float]) -> dict[str, float | None]:
    values = sorted(v for v in values if v == v)  # NaN: not reported
    if not values:
        return {"mean": None, "p50": None, "p95": None}

    def at(q: float) -> float:
        k = (len(values) - 1) * q
        low = int(k)
        high = min(low + 1, len(values) - 1)
        return values[low] + (values[high] - values[low]) * (k - low)

    return {"mean": statistics.fmean(values), "p50": at(0.5), "p95": at(0.95)}


def summarise(timed: legs.Timed, shape: dict[str, Any], peak: float) -> dict[str, Any]:
    generated = sum(len(t) for t in timed.token_ids)
    model_flops = flops(timed, shape)
    return {"status": "ok", "wall_s": timed.wall_s, "tokens_per_s": generated / timed.wall_s,
            "generated_tokens": generated, "prompt_tokens": sum(timed.prompt_tokens),
            "prompt_tokens_computed": sum(timed.prompt_tokens) - sum(timed.cached_tokens),
            "first_token_s": percentiles(timed.first_token_s), "latency_s": percentiles(timed.latency_s),
            "model_flops": model_flops, "mfu": model_flops / timed.wall_s / peak, **timed.extra,
            "per_request": {"first_token_s": [round(x, 4) for x in timed.first_token_s],
                            "latency_s": [round(x, 4) for x in timed.latency_s],
                            "generated": [len(t) for t in timed.token_ids], "cached": timed.cached_tokens},
            "token_ids": timed.token_ids}


def run_legs(model, tokenizer, prompts, stops, args, shape, peak: float, model_dir) -> list[dict[str, Any]]:
    """Every (concurrency, leg), `args.repeats` times, interleaved; each reports its fastest repeat."""
    skipped = {"vllm": legs.vllm_unavailable()} if "vllm" in args.legs else {}
    llms: dict[int, Any] = {}
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for repeat in range(args.repeats):
        for concurrency in args.concurrency:
            engine = None
            for leg in args.legs:
                if skipped.get(leg):
                    runs.setdefault((concurrency, leg), []).append({"status": "skipped", "reason": skipped[leg]})
                    continue
                busy = wait_until_idle(args.wait_idle)
                try:
                    if leg in ("honing", "honing-warm"):
                        # honing-warm: the same Engine again, its prefixes kept; without a cold run first, one now
                        if leg == "honing-warm" and engine is None:
                            _, engine = legs.honing_leg(model, tokenizer, prompts, args.max_new_tokens, stops,
                                                        concurrency)
                        timed, engine = legs.honing_leg(model, tokenizer, prompts, args.max_new_tokens, stops,
                                                        concurrency, engine if leg == "honing-warm" else None)
                    elif leg == "generate":
                        timed = legs.generate_leg(model, tokenizer, prompts, args.max_new_tokens, stops, concurrency)
                    elif leg == "continuous":
                        timed = legs.continuous_leg(model, tokenizer, prompts, args.max_new_tokens, stops, concurrency)
                    else:
                        timed, llms[concurrency] = legs.vllm_leg(model_dir(), shape["dtype"], prompts,
                                                                 args.max_new_tokens, stops, concurrency,
                                                                 args.vllm_memory, llms.get(concurrency))
                    result = summarise(timed, shape, peak)
                except Exception as err:  # reported in the table and the JSON; the other legs go on
                    import traceback

                    result = {"status": "error", "error": f"{type(err).__name__}: {err}",
                              "traceback": traceback.format_exc()}
                    print(result["traceback"], file=sys.stderr)
                result["machine_busy_before"] = busy
                if busy is not None and busy > 0.15:
                    print(f"  [warning] the machine was {100 * busy:.0f}% busy before this leg: its timing is not "
                          "clean", flush=True)
                runs.setdefault((concurrency, leg), []).append(result)
                rate = f" {result['tokens_per_s']:,.1f} tokens/s in {result['wall_s']:.2f} s" \
                    if result["status"] == "ok" else f" {result['status']}: {result.get('error', '')}"
                print(f"  C={concurrency} {LEGS[leg]} (repeat {repeat + 1}/{args.repeats}):{rate}", flush=True)
    results = []
    for (concurrency, leg), attempts in runs.items():
        ok = [r for r in attempts if r["status"] == "ok"]
        best = dict(max(ok, key=lambda r: r["tokens_per_s"]) if ok else attempts[-1])
        best.update(leg=leg, concurrency=concurrency, repeats=[
            {k: r.get(k) for k in ("status", "tokens_per_s", "wall_s", "machine_busy_before")} for r in attempts])
        results.append(best)
    return results


def warm_up(model, tokenizer, prompts, stops, args) -> None:
    """One short untimed pass of each torch leg: first-call costs (allocator, lazy imports) stay out of the timings."""
    few = prompts[:2]
    for leg, run in (("honing", lambda: legs.honing_leg(model, tokenizer, few, 4, stops, 2)),
                     ("generate", lambda: legs.generate_leg(model, tokenizer, few, 4, stops, 2)),
                     ("continuous", lambda: legs.continuous_leg(model, tokenizer, few, 4, stops, 2))):
        if leg in args.legs or (leg == "honing" and "honing-warm" in args.legs):
            try:
                run()
            except Exception as err:  # the timed run reports it
                print(f"  warm-up of {LEGS[leg]} failed: {type(err).__name__}: {err}", flush=True)


def comparison(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per concurrency: honing's tokens/s ÷ each other leg's, and the share of requests whose greedy token ids
    are identical to honing's."""
    ok = {(r["concurrency"], r["leg"]): r for r in results if r["status"] == "ok"}
    rows = []
    for (concurrency, leg), other in ok.items():  # in the run's order: concurrency, then --legs
        ours = ok.get((concurrency, "honing"))
        if leg == "honing" or ours is None:
            continue
        same = sum(a == b for a, b in zip(ours["token_ids"], other["token_ids"]))
        rows.append({"concurrency": concurrency, "versus": leg, "tokens_per_s_ratio": ours["tokens_per_s"] / other[
            "tokens_per_s"], "same_tokens": same, "requests": len(ours["token_ids"]),
                     "agreement": same / len(ours["token_ids"])})
    return rows


# --------------------------------------------------------------------------- reporting


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render(report: dict[str, Any], console=None):
    """A rich table per concurrency, then the ratios (what main prints; the test renders one too)."""
    from rich.console import Console
    from rich.table import Table

    console = console or (Console() if sys.stdout.isatty() else Console(width=170))
    model, prompts, peak = report["model"], report["prompts"], report["matmul_peak"]
    agreement = {(c["concurrency"], c["versus"]): c for c in report["comparison"]}
    for concurrency in report["concurrency"]:
        table = Table(title=f"{model['name']} · {model['dtype']} · {report['device']} · {prompts['count']} prompts "
                            f"(mean {prompts['mean_tokens']:.0f} tokens, {prompts['common_prefix_tokens']} shared) · "
                            f"≤ {report['max_new_tokens']} new · greedy · C = {concurrency} · matmul peak "
                            f"{peak['flops_per_s'] / 1e9:,.1f} GFLOP/s")
        for column in ("leg", "tokens/s", "honing ÷ this", "TTFT mean / p50 / p95 (s)",
                       "latency mean / p50 / p95 (s)", "MFU", "prompt tokens computed", "generated",
                       "same tokens as honing", "status"):
            table.add_column(column, justify="left" if column in ("leg", "status") else "right")
        for r in (r for r in report["results"] if r["concurrency"] == concurrency):
            if r["status"] != "ok":
                table.add_row(LEGS[r["leg"]], *["-"] * 8, f"{r['status']}: {r.get('reason') or r.get('error')}")
                continue
            check = agreement.get((concurrency, r["leg"]))
            ttft, latency = r["first_token_s"], r["latency_s"]
            table.add_row(LEGS[r["leg"]], f"{r['tokens_per_s']:,.1f}",
                          f"{check['tokens_per_s_ratio']:.2f}×" if check else "",
                          " / ".join(_s(ttft[k]) for k in ("mean", "p50", "p95")),
                          " / ".join(_s(latency[k]) for k in ("mean", "p50", "p95")), f"{100 * r['mfu']:.1f}%",
                          f"{r['prompt_tokens_computed']:,}", f"{r['generated_tokens']:,}",
                          f"{check['same_tokens']}/{check['requests']}" if check else "", "ok")
        console.print(table)
    return console


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    from bench.workload import matmul_peak
    from honing.generate import stop_token_ids

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    model, tokenizer, info = load(args, device, dtype)
    prompts = load_prompts(tokenizer, args.prompts)
    stops = set(stop_token_ids(tokenizer, model))
    lengths = [len(p) for p in prompts]
    report: dict[str, Any] = {
        "command": "python -m bench.generate " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": info, "device": device, "max_new_tokens": args.max_new_tokens, "concurrency": args.concurrency,
        "prompts": {"count": len(prompts), "source": "honing.quickstart.task.load_split('test'), without the "
                    "assistant turn, rendered by honing.data.prompts.encode_prompts", "mean_tokens":
                    statistics.fmean(lengths), "min_tokens": min(lengths), "max_tokens": max(lengths),
                    "common_prefix_tokens": common_prefix(prompts)},
        "stop_token_ids": sorted(stops), "torch_threads": torch.get_num_threads(), "hardware": hardware(device),
        "versions": versions(LIBRARIES), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    name = Path(args.model).name if Path(args.model).is_dir() else args.model
    out = Path(args.out or REPO / "bench" / f"results-generate-{name}-{dtype}.json")
    print(f"{info['name']}: {info['params_total'] / 1e6:,.1f} M parameters ({info['matmul_params'] / 1e6:,.1f} M in "
          f"matmuls), {dtype} on {device}, {torch.get_num_threads()} threads; {len(prompts)} prompts of "
          f"{min(lengths)}–{max(lengths)} tokens ({report['prompts']['common_prefix_tokens']} shared), ≤ "
          f"{args.max_new_tokens} new, greedy; C = {args.concurrency}; legs: {', '.join(LEGS[x] for x in args.legs)}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="honing-bench-generate-") as tmp:
        directory: list[str] = []

        def model_dir() -> str:  # saved once, on the vLLM leg's first use
            if not directory:
                directory.append(vllm_directory(model, tokenizer, info, args, Path(tmp)))
            return directory[0]

        peak = {**matmul_peak(device, dtype), "measured": "before"}
        warm_up(model, tokenizer, prompts, stops, args)
        results = run_legs(model, tokenizer, prompts, stops, args, info, peak["flops_per_s"], model_dir)
        again = {**matmul_peak(device, dtype), "measured": "after"}
        if again["flops_per_s"] > peak["flops_per_s"]:  # a busy moment only lowers a reading
            for r in results:
                if r["status"] == "ok":
                    r["mfu"] *= peak["flops_per_s"] / again["flops_per_s"]
            peak = again
    report.update(matmul_peak=peak, results=results, comparison=comparison(results))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    render(report)
    for c in report["comparison"]:
        print(f"C={c['concurrency']}: honing ÷ {LEGS[c['versus']]} = {c['tokens_per_s_ratio']:.2f}× tokens/s; "
              f"greedy token ids identical to honing's for {c['same_tokens']}/{c['requests']} requests "
              f"(agreement {c['agreement']:.3f})")
        if c["versus"] == "generate" and c["agreement"] < 1 and dtype == "float32":
            print("  [warning] honing and transformers generate disagree on fp32 greedy answers", flush=True)
    print(f"wrote {out}")
    return report



if __name__ == "__main__":
    main()
