"""Training benchmark: honing against TRL's SFTTrainer on the same model, data, batch and optimiser.

    python -m bench.train --size cpu-small --modes full,lora
    python -m bench.train --size llama-1b --modes full,lora --liger            # on a GPU
    python -m bench.train --size llama-1b --modes full,lora --liger --find-max-seq
    python -m bench.train --workload quickstart --steps 6 --warmup 1     # train.shared_prefix off vs auto

Phases: measure the matmul peak → run every (mode, framework) leg in a fresh process → compare
(tokens/s, memory, MFU, loss curves) → print the tables and write the JSON. What both legs do
is in bench/workload.py and bench/legs.py; bench/RESULTS.md records the measurements.

`--workload quickstart` instead trains `honing quickstart`'s fine-tune (the embedded model, its bundled
tickets, padded micro-batches of 8 with a common system prompt) with train.shared_prefix off and auto,
each in a fresh process, and compares tokens/s, step time, the prefix tokens shared and the losses.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.workload import SIZES, Size, flops_per_token, resolve_size, size_dict

REPO = Path(__file__).resolve().parent.parent
LIBRARIES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "liger-kernel", "honing")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=["random", "quickstart"], default="random",
                        help="random: packed random tokens on --size's model, honing against TRL; quickstart: the "
                             "quickstart's fine-tune on the embedded model, train.shared_prefix off against auto")
    parser.add_argument("--model-path", help="quickstart workload: a model directory with the embedded model's "
                                             "tokenizer to train instead of the embedded model")
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu-small")
    parser.add_argument("--modes", default="full,lora", help="comma-separated: full, lora")
    parser.add_argument("--steps", type=int, help="timed optimiser steps (default: the size's)")
    parser.add_argument("--warmup", type=int, help="untimed optimiser steps before them (default: the size's)")
    parser.add_argument("--seq", type=int, help="sequence (packed row) length (default: the size's)")
    parser.add_argument("--micro-batch", type=int, help="rows per forward pass (default: the size's)")
    parser.add_argument("--grad-accum", type=int, help="micro-batches per optimiser step (default: the size's)")
    parser.add_argument("--lr", type=float, help="AdamW learning rate, constant (default: the size's)")
    parser.add_argument("--precision", choices=["bf16", "fp32"],
                        help="bf16 autocast or fp32, the same for both (default: bf16 where the hardware does it natively)")
    parser.add_argument("--model-dtype", choices=["float32", "bfloat16"], default="float32",
                        help="weight dtype of the model given to both frameworks")
    parser.add_argument("--attn", choices=["sdpa", "eager", "flash_attention_2"], default="sdpa",
                        help="attention implementation, the same for both")
    parser.add_argument("--compile", action="store_true",
                        help="honing legs with train.compile=true (torch.compile of each block; the warm-up steps absorb the compile)")
    parser.add_argument("--trl", action=argparse.BooleanOptionalAction, default=True, help="run the TRL legs")
    parser.add_argument("--liger", action="store_true", help="also run TRL with use_liger_kernel=True")
    parser.add_argument("--frameworks", help="comma-separated subset of honing,trl,trl+liger (overrides --trl/--liger)")
    parser.add_argument("--find-max-seq", action="store_true",
                        help="instead of the throughput legs, find the longest sequence that trains at batch 1")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="before each leg, wait up to this long for other processes to leave the CPU idle")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run every leg this many times (interleaved) and report each leg's fastest")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--out", help="result JSON (default: bench/results-<size>-<precision>.json)")
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(args.modes) - {"full", "lora"}
    if unknown:
        parser.error(f"unknown mode(s) {sorted(unknown)}: use full, lora")
    return args


# --------------------------------------------------------------------------- setup


def resolve(args: argparse.Namespace) -> tuple[Size, str, str, list[str]]:
    import torch

    from honing.train.engine import uses_bf16

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    precision = args.precision or ("bf16" if uses_bf16("auto", torch.device(device)) else "fp32")
    size = resolve_size(args.size, steps=args.steps, warmup=args.warmup, seq=args.seq, micro_batch=args.micro_batch,
                        grad_accum=args.grad_accum, lr=args.lr)
    if size.warmup < 1 or size.steps < 1:
        raise SystemExit("--warmup and --steps must both be at least 1 (the timed window starts after a warm-up step)")
    if args.frameworks:
        frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
        unknown = set(frameworks) - {"honing", "trl", "trl+liger"}
        if unknown:
            raise SystemExit(f"unknown framework(s) {sorted(unknown)}: use honing, trl, trl+liger")
        if any(f.startswith("trl") for f in frameworks) and importlib.util.find_spec("trl") is None:
            raise SystemExit("TRL is not installed: pip install 'trl==1.16.0' (the bench extra)")
        return size, device, precision, frameworks
    frameworks = ["honing"]
    if args.trl:
        if importlib.util.find_spec("trl") is None:
            raise SystemExit("TRL is not installed: pip install 'trl==1.16.0' (the bench extra), or pass --no-trl")
        frameworks.append("trl")
        if args.liger:
            if device == "cpu":
                raise SystemExit("--liger needs a CUDA GPU (Liger's kernels are Triton)")
            frameworks.append("trl+liger")
    return size, device, precision, frameworks


def hardware(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpu_count": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
        info["cpu_bf16"] = sorted({f for f in flags.split() if "bf16" in f or f.startswith("amx")})
    except OSError:
        info["cpu"] = platform.processor()
    if device.startswith("cuda"):
        import torch

        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def versions(libraries: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    found = {}
    for name in libraries:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


# --------------------------------------------------------------------------- running legs


def busy_fraction(seconds: float = 1.0) -> float | None:
    """Share of the machine's CPU time other processes used over `seconds` (Linux; None elsewhere).
    Recorded per leg: on a shared machine a busy neighbour slows a leg and must not pass unnoticed."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)

    try:
        busy0, total0 = sample()
        time.sleep(seconds)
        busy1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return (busy1 - busy0) / max(1, total1 - total0)


def wait_until_idle(timeout: float, threshold: float = 0.15) -> float | None:
    """Wait (up to `timeout` seconds) until other processes use under `threshold` of the CPU; the last reading."""
    deadline = time.monotonic() + timeout
    busy = busy_fraction()
    while busy is not None and busy > threshold and time.monotonic() < deadline:
        busy = busy_fraction(2.0)
    return busy


def run_child(spec: dict[str, Any], workdir: Path, name: str, entry: tuple[str, ...] = ("bench.worker",)) -> dict[str, Any]:
    """Run one spec in a fresh interpreter (`python -m *entry SPEC OUT`); its log stays in workdir and is shown on failure."""
    spec_path, out_path, log_path = workdir / f"{name}.spec.json", workdir / f"{name}.out.json", workdir / f"{name}.log"
    spec_path.write_text(json.dumps(spec))
    # A fixed hash seed: peft iterates a set of module names when it adds LoRA, so the adapters'
    # random init (and the loss curve) would otherwise change from process to process.
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    started, cpu_before = time.perf_counter(), _children_cpu()
    with log_path.open("w") as log:
        proc = subprocess.run([sys.executable, "-m", *entry, str(spec_path), str(out_path)],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    result = json.loads(out_path.read_text()) if out_path.is_file() else {
        "status": "error", "error": f"worker exited with {proc.returncode} and no result"}
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    result["cpu_seconds"] = round(_children_cpu() - cpu_before, 1)  # cpu ÷ wall well below the core count: contention
    if result.get("status") == "error":
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-25:])
        print(f"[{name}] failed: {result.get('error')}\n{result.get('traceback', '')}--- log tail ({log_path}):\n{tail}",
              file=sys.stderr)
    return result


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def leg_spec(size: Size, framework: str, mode: str, args, device: str, precision: str, workdir: Path,
             tag: str = "") -> dict[str, Any]:
    return {"role": "leg", "framework": framework, "mode": mode, "size": size_dict(size), "seed": args.seed,
            "device": device, "precision": precision, "attn": args.attn, "model_dtype": args.model_dtype,
            "compile": args.compile, "run_dir": str(workdir / f"run-{framework}-{mode}-{size.seq}{tag}")}


def run_legs(size: Size, frameworks: list[str], args, device: str, precision: str, peak: float,
             workdir: Path) -> list[dict[str, Any]]:
    """Every (mode, framework) leg, `args.repeats` times, interleaved so a noisy neighbour hits
    both frameworks alike; each leg reports its fastest repeat (all repeats stay in the JSON)."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for repeat in range(args.repeats):
        for mode in args.modes:
            for framework in frameworks:
                print(f"running {framework} {mode} (repeat {repeat + 1}/{args.repeats}) ...", flush=True)
                spec = leg_spec(size, framework, mode, args, device, precision, workdir, tag=f"-{repeat}")
                busy = wait_until_idle(args.wait_idle)
                result = run_child(spec, workdir, f"{framework}-{mode}-{repeat}")
                result["machine_busy_before"] = busy
                if busy is not None and busy > 0.15:
                    print(f"  [warning] the machine was {100 * busy:.0f}% busy before this leg: its timing is not clean",
                          flush=True)
                runs.setdefault((framework, mode), []).append(result)
                rate = f", {result['real_tokens_per_s']:,.0f} real tokens/s" if result.get("status") == "ok" else ""
                print(f"  {framework} {mode}: {result.get('status')} in {result['wall_seconds']} s{rate}", flush=True)
    results = []
    for (framework, mode), attempts in runs.items():
        ok = [r for r in attempts if r.get("status") == "ok"]
        best = dict(max(ok, key=lambda r: r["real_tokens_per_s"]) if ok else attempts[-1])
        flops = flops_per_token(size, mode)
        best.update(framework=framework, mode=mode, **flops)
        best["repeats"] = [{k: r.get(k) for k in ("status", "real_tokens_per_s", "median_step_tokens_per_s",
                                                  "peak_memory_bytes", "wall_seconds", "cpu_seconds",
                                                  "machine_busy_before")} for r in attempts]
        if best.get("status") == "ok":
            best["mfu"] = best["real_tokens_per_s"] * flops["flops_per_token"] / peak
            best["final_loss"] = best["losses"][-1]
        results.append(best)
    return results


def find_max_seq(size: Size, frameworks: list[str], args, device: str, precision: str,
                 workdir: Path, limit: int = 262_144, granularity: int = 1024) -> list[dict[str, Any]]:
    """Longest sequence (one example filling one row, batch 1, no accumulation) that trains without
    running out of memory: doubling from the size's length, then bisection to `granularity`."""
    found = []
    for mode in args.modes:
        for framework in frameworks:
            tried: dict[int, str] = {}

            def fits(seq: int) -> bool:
                probe = resolve_size(size.name, seq=seq, min_len=seq, micro_batch=1, grad_accum=1, steps=1, warmup=1)
                spec = leg_spec(probe, framework, mode, args, device, precision, workdir)
                result = run_child(spec, workdir, f"maxseq-{framework}-{mode}-{seq}")
                tried[seq] = result.get("status", "error")
                print(f"  {framework} {mode} seq {seq}: {tried[seq]}", flush=True)
                return tried[seq] == "ok"

            good, bad = 0, None
            seq = size.seq
            while seq <= limit:
                if not fits(seq):
                    bad = seq
                    break
                good, seq = seq, seq * 2
            if bad is not None and good:
                while bad - good > granularity:
                    middle = (good + bad) // 2 // granularity * granularity
                    if middle in (good, bad):
                        break
                    if fits(middle):
                        good = middle
                    else:
                        bad = middle
            found.append({"framework": framework, "mode": mode, "max_seq": good, "first_failing": bad,
                          "tried": tried})
    return found


# --------------------------------------------------------------------------- the quickstart workload

QUICKSTART_LEG = "--quickstart-leg"  # python -m bench.train --quickstart-leg SPEC OUT: one leg, in its own process


def quickstart_leg(spec: dict[str, Any]) -> dict[str, Any]:
    """One quickstart fine-tune of warmup + steps optimiser steps with the spec's train.shared_prefix."""
    import resource

    import torch

    from bench.workload import quickstart_config
    from honing.runs import Run
    from honing.stages.sft import setup_parts
    from honing.train.distributed import Dist
    from honing.train.engine import fit

    warmup, steps = spec["warmup"], spec["steps"]
    cfg = quickstart_config(warmup + steps, spec["shared_prefix"], spec["seed"], spec.get("model_path"))
    ctx = Dist()
    parts = setup_parts(cfg, ctx)
    step_end: dict[int, float] = {}

    def after_step(state) -> None:
        step_end[state.step] = time.perf_counter()

    run = Run.create("bench", cfg, spec["run_dir"])
    result = fit(parts.model, parts.train_items, [], parts.collate, cfg.train, run=run, ctx=ctx, show_progress=False,
                 after_step=after_step)
    logged = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    tokens = {entry["step"]: entry["tokens"] for entry in logged if "tokens" in entry}
    seconds = [step_end[s] - step_end[s - 1] for s in range(warmup + 1, warmup + steps + 1)]
    timed_tokens = sum(tokens[s] for s in range(warmup + 1, warmup + steps + 1))
    rates = sorted(tokens[s] / seconds[s - warmup - 1] for s in range(warmup + 1, warmup + steps + 1))
    metrics = result.metrics
    return {
        "shared_prefix": spec["shared_prefix"], "plan": run.record.get("plan", {}).get("shared_prefix"),
        "real_tokens_per_s": timed_tokens / sum(seconds), "timed_real_tokens": timed_tokens,
        "median_step_tokens_per_s": rates[len(rates) // 2],  # robust to a neighbour's burst on a shared machine
        "step_seconds": [round(s, 3) for s in seconds], "median_step_seconds": sorted(seconds)[len(seconds) // 2],
        "losses": [entry["loss"] for entry in logged if "loss" in entry],
        "prefix_tokens_computed_once": metrics.get("prefix_tokens_computed_once", 0),
        "prefix_tokens_per_row": metrics.get("prefix_tokens_per_row", 0),
        "prefix_tokens_saved_share": metrics.get("prefix_tokens_saved_share", 0.0),
        "tokens_seen": metrics["tokens_seen"], "torch_threads": torch.get_num_threads(),
        "peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "status": "ok",
    }


def run_quickstart(args, workdir: Path) -> list[dict[str, Any]]:
    """The off and auto legs, `args.repeats` times, interleaved; each reports its fastest repeat."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for repeat in range(args.repeats):
        for mode in ("off", "auto"):
            print(f"running quickstart shared_prefix={mode} (repeat {repeat + 1}/{args.repeats}) ...", flush=True)
            spec = {"shared_prefix": mode, "warmup": args.warmup or 1, "steps": args.steps or 6, "seed": args.seed,
                    "model_path": args.model_path, "run_dir": str(workdir / f"run-quickstart-{mode}-{repeat}")}
            busy = wait_until_idle(args.wait_idle)
            result = run_child(spec, workdir, f"quickstart-{mode}-{repeat}", entry=("bench.train", QUICKSTART_LEG))
            result["machine_busy_before"] = busy
            runs.setdefault(mode, []).append(result)
            rate = f", {result['real_tokens_per_s']:,.0f} real tokens/s" if result.get("status") == "ok" else ""
            print(f"  shared_prefix={mode}: {result.get('status')} in {result['wall_seconds']} s{rate}", flush=True)
    results = []
    for mode, attempts in runs.items():
        ok = [r for r in attempts if r.get("status") == "ok"]
        best = dict(max(ok, key=lambda r: r["real_tokens_per_s"]) if ok else attempts[-1])
        best["repeats"] = [{k: r.get(k) for k in ("status", "real_tokens_per_s", "median_step_seconds", "wall_seconds",
                                                  "cpu_seconds", "machine_busy_before")} for r in attempts]
        results.append(best)
    return results


def quickstart_comparison(results: list[dict[str, Any]]) -> dict[str, Any]:
    """auto ÷ off in tokens/s and step time, step by step (both legs train the same batches in the same order,
    so step i of one is the same work as step i of the other), and the largest per-step loss difference."""
    ok = {r["shared_prefix"]: r for r in results if r.get("status") == "ok"}
    if set(ok) != {"off", "auto"}:
        return {}
    off, auto = ok["off"], ok["auto"]
    speedups = [a / b for a, b in zip(off["step_seconds"], auto["step_seconds"])]  # > 1: auto was faster on that batch
    return {"tokens_per_s_ratio": auto["real_tokens_per_s"] / off["real_tokens_per_s"],
            "median_step_tokens_per_s_ratio": auto["median_step_tokens_per_s"] / off["median_step_tokens_per_s"],
            "median_step_ratio": auto["median_step_seconds"] / off["median_step_seconds"],
            "fastest_step_ratio": min(auto["step_seconds"]) / min(off["step_seconds"]),
            "same_step_speedups": [round(x, 3) for x in speedups],
            "max_abs_loss_diff": max(abs(a - b) for a, b in zip(auto["losses"], off["losses"]))}


def render_quickstart(report: dict[str, Any], console=None):
    from rich.console import Console
    from rich.table import Table

    console = console or (Console() if sys.stdout.isatty() else Console(width=150))
    table = Table(title=f"quickstart fine-tune · embedded model · LoRA r16 · batch 8 padded · {report['precision']} · "
                        f"{report['device']} · matmul peak {report['matmul_peak']['flops_per_s'] / 1e9:,.1f} GFLOP/s")
    for column in ("shared_prefix", "real tokens/s", "median step tokens/s", "median step", "prefix tokens once / per row",
                   "saved share",
                   "first loss", "final loss", "peak memory", "status"):
        table.add_column(column, justify="left" if column in ("shared_prefix", "status") else "right")
    for r in report["results"]:
        if r.get("status") != "ok":
            table.add_row(r.get("shared_prefix", "?"), *["-"] * 8, r.get("status", "?"))
            continue
        table.add_row(r["shared_prefix"], f"{r['real_tokens_per_s']:,.0f}", f"{r['median_step_tokens_per_s']:,.0f}",
                      f"{r['median_step_seconds']:.2f} s",
                      f"{r['prefix_tokens_computed_once']:,} / {r['prefix_tokens_per_row']:,}",
                      f"{100 * r['prefix_tokens_saved_share']:.1f}%", f"{r['losses'][0]:.4f}", f"{r['losses'][-1]:.4f}",
                      _gib(r["peak_memory_bytes"]), "ok")
    console.print(table)
    c = report.get("comparison")
    if c:
        console.print(f"auto ÷ off: {c['tokens_per_s_ratio']:.2f}× tokens/s ({c['median_step_tokens_per_s_ratio']:.2f}× "
                      f"the median step's), {c['median_step_ratio']:.2f}× median step time, {c['fastest_step_ratio']:.2f}× "
                      f"the fastest step's; off ÷ auto time on the same batches, step by step: "
                      f"{' '.join(f'{x:.2f}×' for x in c['same_step_speedups'])}; largest per-step loss difference "
                      f"{c['max_abs_loss_diff']:.2e}")
    return console


# --------------------------------------------------------------------------- comparing


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """honing ÷ each TRL leg, per mode: tokens/s and peak memory."""
    ok = {(r["framework"], r["mode"]): r for r in results if r.get("status") == "ok"}
    rows = []
    for (framework, mode), other in ok.items():
        ours = ok.get(("honing", mode))
        if framework == "honing" or ours is None:
            continue
        rows.append({"mode": mode, "versus": framework,
                     "tokens_per_s_ratio": ours["real_tokens_per_s"] / other["real_tokens_per_s"],
                     "peak_memory_ratio": ours["peak_memory_bytes"] / other["peak_memory_bytes"]})
    return rows


def loss_check(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Step-by-step loss of honing against each TRL leg (same model, data distribution and lr;
    each framework shuffles its own packed rows, so single steps differ by data noise)."""
    ok = {(r["framework"], r["mode"]): r for r in results if r.get("status") == "ok"}
    checks = []
    for (framework, mode), other in ok.items():
        ours = ok.get(("honing", mode))
        if framework == "honing" or ours is None:
            continue
        a, b = ours["losses"], other["losses"]
        n = min(len(a), len(b))
        diffs = [abs(x - y) for x, y in zip(a[:n], b[:n])]
        tail = max(1, n // 4)
        checks.append({
            "mode": mode, "versus": framework, "steps_compared": n,
            "honing_first": a[:3], "honing_last": a[-3:], "other_first": b[:3], "other_last": b[-3:],
            "max_abs_diff": max(diffs) if diffs else None,
            "max_rel_diff": max(d / abs(y) for d, y in zip(diffs, b)) if diffs else None,
            "last_quarter_mean_diff": sum(a[n - tail : n]) / tail - sum(b[n - tail : n]) / tail,
        })
    return checks


# --------------------------------------------------------------------------- reporting


def _gib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def render(report: dict[str, Any], console=None):
    """Rich tables of a report (what main prints; the test renders one too)."""
    from rich.console import Console
    from rich.table import Table

    console = console or (Console() if sys.stdout.isatty() else Console(width=150))
    size, peak = report["size"], report["matmul_peak"]
    title = (f"{size['name']} · seq {size['seq']} · batch {size['micro_batch']}×{size['grad_accum']} · "
             f"{report['precision']} · {report['device']} · matmul peak {peak['flops_per_s'] / 1e9:,.1f} GFLOP/s")
    if report.get("results"):
        ours = {r["mode"]: r for r in report["results"] if r["framework"] == "honing" and r.get("status") == "ok"}
        table = Table(title=title)
        for column in ("framework", "mode", "real tokens/s", "median step", "honing ÷ this", "peak memory", "MFU",
                       "first loss", "final loss", "status"):
            table.add_column(column, justify="left" if column in ("framework", "mode", "status") else "right")
        for r in report["results"]:
            if r.get("status") != "ok":
                table.add_row(r["framework"], r["mode"], "-", "-", "-", _gib(r.get("peak_memory_bytes")), "-", "-", "-",
                              r.get("status", "?"))
                continue
            base = ours.get(r["mode"])
            ratio = "" if r["framework"] == "honing" or base is None else \
                f"{base['real_tokens_per_s'] / r['real_tokens_per_s']:.2f}×"
            table.add_row(r["framework"], r["mode"], f"{r['real_tokens_per_s']:,.0f}",
                          f"{r['median_step_tokens_per_s']:,.0f}", ratio,
                          _gib(r["peak_memory_bytes"]), f"{100 * r['mfu']:.1f}%", f"{r['losses'][0]:.4f}",
                          f"{r['final_loss']:.4f}", "ok")
        console.print(table)
    if report.get("loss_check"):
        table = Table(title="loss curves (per optimiser step)")
        for column in ("mode", "versus", "honing first → last", "other first → last", "max |diff|",
                       "last-quarter mean diff"):
            table.add_column(column)
        for c in report["loss_check"]:
            table.add_row(c["mode"], c["versus"],
                          f"{' '.join(f'{x:.3f}' for x in c['honing_first'])} → {' '.join(f'{x:.3f}' for x in c['honing_last'])}",
                          f"{' '.join(f'{x:.3f}' for x in c['other_first'])} → {' '.join(f'{x:.3f}' for x in c['other_last'])}",
                          f"{c['max_abs_diff']:.4f}", f"{c['last_quarter_mean_diff']:+.4f}")
        console.print(table)
    if report.get("max_seq"):
        table = Table(title="longest sequence at batch 1")
        for column in ("framework", "mode", "max seq", "first failing"):
            table.add_column(column)
        for m in report["max_seq"]:
            table.add_row(m["framework"], m["mode"], str(m["max_seq"]), str(m["first_failing"]))
        console.print(table)
    return console


def measure_peak(device: str, dtype: str, workdir: Path, when: str) -> dict[str, Any]:
    peak = run_child({"role": "peak", "device": device, "dtype": dtype}, workdir, f"peak-{when}")
    if peak.get("status") == "error":
        raise SystemExit("the matmul peak measurement failed")
    peak["measured"] = when
    return peak


def main_quickstart(args, argv: list[str] | None) -> dict[str, Any]:
    import torch

    from honing.train.engine import uses_bf16

    device = "cpu" if not torch.cuda.is_available() else "cuda"
    precision = "bf16" if uses_bf16("auto", torch.device(device)) else "fp32"  # what the quickstart itself uses
    out = Path(args.out or REPO / "bench" / f"results-quickstart-{precision}.json")
    report: dict[str, Any] = {
        "command": "python -m bench.train " + " ".join(sys.argv[1:] if argv is None else argv),
        "workload": "quickstart", "device": device, "precision": precision, "seed": args.seed,
        "hardware": hardware(device), "versions": versions(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    with tempfile.TemporaryDirectory(prefix="honing-bench-") as tmp:
        workdir = Path(tmp)
        report["matmul_peak"] = measure_peak(device, "bfloat16" if precision == "bf16" else "float32", workdir, "before")
        report["results"] = run_quickstart(args, workdir)
    report["comparison"] = quickstart_comparison(report["results"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    render_quickstart(report)
    print(f"wrote {out}")
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.workload == "quickstart":
        return main_quickstart(args, argv)
    size, device, precision, frameworks = resolve(args)
    out = Path(args.out or REPO / "bench" / f"results-{size.name}-{precision}.json")
    report: dict[str, Any] = {
        "command": "python -m bench.train " + " ".join(sys.argv[1:] if argv is None else argv),
        "size": size_dict(size), "device": device, "precision": precision, "model_dtype": args.model_dtype,
        "attn": args.attn, "compile": args.compile, "seed": args.seed, "hardware": hardware(device), "versions": versions(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(f"{size.name}: seq {size.seq}, batch {size.micro_batch}×{size.grad_accum}, {size.warmup}+{size.steps} steps, "
          f"{precision} on {device}; legs: {', '.join(frameworks)} × {', '.join(args.modes)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="honing-bench-") as tmp:
        workdir = Path(tmp)
        peak_dtype = "bfloat16" if precision == "bf16" else "float32"
        report["matmul_peak"] = measure_peak(device, peak_dtype, workdir, "before")
        if args.find_max_seq:
            report["max_seq"] = find_max_seq(size, frameworks, args, device, precision, workdir)
        else:
            results = run_legs(size, frameworks, args, device, precision, report["matmul_peak"]["flops_per_s"], workdir)
            # Measured again after the legs; the higher reading is the peak (a busy moment only lowers it).
            again = measure_peak(device, peak_dtype, workdir, "after")
            if again["flops_per_s"] > report["matmul_peak"]["flops_per_s"]:
                for r in results:
                    if r.get("status") == "ok":
                        r["mfu"] *= report["matmul_peak"]["flops_per_s"] / again["flops_per_s"]
                report["matmul_peak"] = again
            report.update(results=results, ratios=ratios(results), loss_check=loss_check(results))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    render(report)
    for r in report.get("ratios", []):
        print(f"{r['mode']}: honing ÷ {r['versus']} = {r['tokens_per_s_ratio']:.2f}× tokens/s, "
              f"{r['peak_memory_ratio']:.2f}× peak memory")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    if sys.argv[1:2] == [QUICKSTART_LEG]:
        leg_spec_path, leg_out = Path(sys.argv[2]), Path(sys.argv[3])
        try:
            leg_result = quickstart_leg(json.loads(leg_spec_path.read_text()))
        except Exception as err:  # reported to the parent like bench.worker's legs
            import traceback

            leg_result = {"status": "error", "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        leg_out.write_text(json.dumps(leg_result))
    else:
        main()
