"""Serving benchmark: `honing serve` against `transformers serve` on the same model, prompts and load.

    python -m bench.serve                                     # embedded model, 32 requests, C = 1, 8, 32
    python -m bench.serve --legs honing,transformers --concurrency 8 --requests 16
    python -m bench.serve --vllm --legs honing-vllm,vllm      # on a GPU: honing's vLLM backend vs `vllm serve`

Phases: resolve the model directory and the prompts → for each leg in turn: start its server as a child
process on a free loopback port, wait for /health, send the warm-up requests (untimed), run the load at every
concurrency, stop the server (SIGTERM, then SIGKILL), so no two servers ever run at once → compare → tables
and JSON. The load generator and the process handling are in bench/serve_load.py; bench/RESULTS.md
("Serving benchmark") records the measurements.

Every server gets the same HF directory (`--model embedded`: the embedded SmolLM2-135M-Instruct GGUF as
honing converts it, `honing.models.load.convert_gguf`), in the same dtype (float32 on a CPU, bfloat16 on a
GPU), and is sized for the largest concurrency asked for. Legs:

    honing           honing serve: models.<dir name>: {path: DIR, dtype}, generation.max_batch = max C,
                     limits.concurrency = max C and a rate limit the load cannot reach; its request log in a
                     temporary directory; everything else its defaults (prefix caching, prompt-lookup guesses,
                     the PII-redacted log)
    transformers     transformers serve DIR --device D --dtype T: its default, one `generate` at a time
    transformers-cb  the same with --continuous-batching; on a CPU its paged cache sized (--cb-num-blocks,
                     --cb-max-batch-tokens) for max C requests of the longest prompt plus max_tokens, as
                     bench.generate sizes it (left alone it takes 60 % of the machine's RAM)
    honing-vllm      honing serve with generation.backend: vllm (--vllm; CUDA and vllm needed); skipped with
                     the reason until honing serve has a vLLM backend (it refuses that setting today)
    vllm             vllm serve DIR --dtype T --max-num-seqs (max C) --enable-prefix-caching (--vllm)

Load: C clients (one asyncio event loop, the official `openai` client, no retries), each sending chat
completions back to back; request i is held-out quickstart ticket i (its system and user turns, rendered by
each server with the model's chat template), greedy (temperature 0), max_tokens `--max-tokens`, streamed
(`--no-stream`: whole replies). A run ends when `--requests` have been sent and answered, or
`--duration` seconds after it began (no request is sent after that). Metrics per (leg, C): completion
tokens/s = the servers' own usage counts ÷ wall time (first request sent → last reply done), requests/s,
latency (send → last byte) and time to first token (send → first content chunk) p50/p95, errors (must be 0),
per ticket whether the answer's text equals honing's, and the CPU seconds the server and the load generator
used during the run and the share of the machine's CPU other processes took (over 15 %: flagged not clean).
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

from bench.generate import _s, common_prefix, percentiles
from bench.serve_load import LoadRun, cpu_ticks, free_port, get_json, others_share, run_load, serving
from bench.train import REPO, hardware, versions, wait_until_idle

LIBRARIES = ("torch", "transformers", "openai", "fastapi", "uvicorn", "vllm", "honing")
LEGS = {"honing": "honing serve", "transformers": "transformers serve",
        "transformers-cb": "transformers serve (CB)", "honing-vllm": "honing serve (vLLM)", "vllm": "vllm serve"}
VERSUS = {"transformers": "honing", "transformers-cb": "honing", "vllm": "honing-vllm"}  # baseline -> ours
TARGET = {"concurrency": 8, "tokens_per_s_ratio": 2.0}  # issue #18: ≥ 2× transformers serve at C = 8, p95 no worse
CLEAN = 0.15  # a run during which other processes used more of the CPU than this is flagged
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded",
                        help="embedded (SmolLM2-135M-Instruct, converted from its GGUF) or a local HF model directory")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--requests", type=int, default=32,
                        help="requests per (leg, concurrency): held-out quickstart tickets, cycled past the last")
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens of every request")
    parser.add_argument("--legs", default="honing,transformers,transformers-cb",
                        help=f"comma-separated subset of {', '.join(LEGS)}, run in this order")
    parser.add_argument("--vllm", action="store_true",
                        help="add the honing-vllm and vllm legs (skipped, with the reason, without vllm or CUDA)")
    parser.add_argument("--vllm-memory", type=float, default=0.8, help="vllm serve's --gpu-memory-utilization")
    parser.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True,
                        help="stream the replies (time to first token is measured only when streaming)")
    parser.add_argument("--warmup", type=int, default=4,
                        help="untimed requests (other tickets, sent together) after a server is ready")
    parser.add_argument("--duration", type=float, default=900.0,
                        help="seconds per (leg, concurrency) after which no more requests are sent")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one request may take")
    parser.add_argument("--startup-timeout", type=float, default=600.0, help="seconds a server may take to be ready")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"],
                        help="weights for every server (default: float32 on a CPU, bfloat16 on a GPU)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="before each run, wait up to this long for other processes to leave the CPU idle")
    parser.add_argument("--out", help="result JSON (default: bench/results-serve-<model>-<dtype>.json)")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.legs = [leg.strip() for leg in args.legs.split(",") if leg.strip()]
    if args.vllm:
        args.legs += [leg for leg in ("honing-vllm", "vllm") if leg not in args.legs]
    unknown = set(args.legs) - set(LEGS)
    if unknown:
        parser.error(f"unknown leg(s) {sorted(unknown)}: use {', '.join(LEGS)}")
    if not args.concurrency or min(args.concurrency) < 1:
        parser.error("--concurrency needs positive integers, e.g. 1,8,32")
    if args.requests < 1 or args.max_tokens < 1 or args.warmup < 0:
        parser.error("--requests and --max-tokens need positive integers, --warmup a non-negative one")
    return args


# --------------------------------------------------------------------------- setup


def model_directory(model: str) -> tuple[Path, str]:
    """(HF directory every server loads, the name results are filed under)."""
    if model == "embedded":
        from honing.models.load import convert_gguf
        from honing.models.source import embedded_gguf

        return Path(convert_gguf(embedded_gguf())), "embedded"
    path = Path(model).expanduser().resolve()
    if not (path / "config.json").is_file():
        raise SystemExit(f"--model {model}: not an HF model directory (no config.json); use embedded or a directory")
    return path, path.name


def conversations(count: int, warmup: int) -> tuple[list[list[dict[str, str]]], list[list[dict[str, str]]]]:
    """(the measured conversations, the warm-up ones): held-out quickstart tickets without the assistant turn;
    the warm-up takes tickets from the end, which the measured ones reach only past count + warmup."""
    from honing.quickstart.task import load_split

    tickets = [[m for m in r["messages"] if m["role"] != "assistant"] for r in load_split("test")]
    measured = tickets[:min(count, len(tickets))]
    return measured, tickets[len(tickets) - warmup:] if warmup else []


def prompt_stats(directory: Path, measured: list[list[dict[str, str]]]) -> tuple[dict[str, Any], list[list[int]]]:
    """Token counts of the prompts as the chat template renders them (what sizes transformers' paged cache)."""
    from transformers import AutoTokenizer

    from honing.data.prompts import encode_prompts

    encoded = encode_prompts(AutoTokenizer.from_pretrained(directory), measured)
    lengths = [len(p) for p in encoded]
    return {"count": len(encoded), "source": "honing.quickstart.task.load_split('test'), without the assistant "
            "turn; token counts by honing.data.prompts.encode_prompts", "mean_tokens": statistics.fmean(lengths),
            "min_tokens": min(lengths), "max_tokens": max(lengths),
            "common_prefix_tokens": common_prefix(encoded)}, encoded


def honing_config(directory: Path, dtype: str, max_concurrency: int, workdir: Path, backend: str | None) -> dict:
    """honing serve's config: the model under its directory name, sized for the load, its log kept out of the repo."""
    config: dict[str, Any] = {
        "models": {directory.name: {"path": str(directory), "dtype": dtype}},
        "generation": {"max_batch": max_concurrency},
        # the load must never be refused: in-flight and per-minute limits above what it sends
        "limits": {"concurrency": max_concurrency + 4, "rate_per_minute": 1_000_000},
        "log": {"path": str(workdir / f"requests-{backend or 'torch'}.sqlite")}}
    if backend:
        config["generation"]["backend"] = backend
    return config


def server_command(leg: str, directory: Path, dtype: str, device: str, port: int, args, encoded: list[list[int]],
                   workdir: Path) -> tuple[list[str], dict[str, Any]]:
    """(the command line that starts `leg`'s server, what it was configured with)."""
    max_c = max(args.concurrency)
    if leg in ("honing", "honing-vllm"):
        config = honing_config(directory, dtype, max_c, workdir, "vllm" if leg == "honing-vllm" else None)
        path = workdir / f"{leg}.yaml"
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        return [sys.executable, "-m", "honing.cli", "serve", str(path), "--host", "127.0.0.1", "--port", str(port)], {
            "config": config}
    if leg in ("transformers", "transformers-cb"):
        command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(directory), "--host",
                   "127.0.0.1", "--port", str(port), "--device", device, "--dtype", dtype, "--log-level", "warning"]
        info: dict[str, Any] = {}
        if leg == "transformers-cb":
            command.append("--continuous-batching")
            if device == "cpu":
                from bench.generate_legs import continuous_settings

                sizing = continuous_settings(encoded, args.max_tokens, max_c)
                info = {"num_blocks": sizing["num_blocks"], "max_batch_tokens": sizing["max_batch_tokens"],
                        "page_size": sizing["page_size"]}  # the page size is transformers' default, not passed
                command += ["--cb-num-blocks", str(info["num_blocks"]), "--cb-max-batch-tokens",
                            str(info["max_batch_tokens"])]
        return command, {"cb_sizing": info} if info else {}
    import shutil

    vllm = shutil.which("vllm", path=str(Path(sys.executable).parent)) or shutil.which("vllm") or "vllm"
    return [vllm, "serve", str(directory), "--host", "127.0.0.1", "--port", str(port), "--dtype", dtype,
            "--max-num-seqs", str(max_c), "--enable-prefix-caching", "--gpu-memory-utilization",
            str(args.vllm_memory)], {}


def skip_reason(leg: str) -> str | None:
    if leg == "honing-vllm":  # the leg is kept so the GPU comparison runs unchanged once the server has it
        return ("honing serve has no vLLM backend yet (it refuses generation.backend: vllm); the vllm leg alone "
                "measures plain vllm serve")
    if leg == "vllm":
        from bench.generate_legs import vllm_unavailable

        return vllm_unavailable()
    return None


# --------------------------------------------------------------------------- measuring


def summarise(run: LoadRun) -> dict[str, Any]:
    """One (leg, C) run's figures from its replies; failed requests count as errors, not as latencies."""
    ok = [r for r in run.replies if r.error is None]
    tokens = sum(r.completion_tokens for r in ok)
    errors = sorted({r.error for r in run.replies if r.error is not None})
    wall = run.wall_s
    finish: dict[str, int] = {}
    for r in ok:
        finish[str(r.finish_reason)] = finish.get(str(r.finish_reason), 0) + 1
    return {"status": "ok", "concurrency": run.concurrency, "stopped_by": run.stopped_by, "wall_s": wall,
            "requests_sent": len(run.replies), "requests_ok": len(ok), "errors": len(run.replies) - len(ok),
            "error_messages": errors[:5], "completion_tokens": tokens,
            "prompt_tokens": sum(r.prompt_tokens or 0 for r in ok),
            "tokens_per_s": tokens / wall if wall > 0 else 0.0, "requests_per_s": len(ok) / wall if wall > 0 else 0.0,
            "latency_s": percentiles([r.latency_s for r in ok]),
            "first_token_s": percentiles([r.first_token_s for r in ok if r.first_token_s is not None]),
            "finish_reasons": finish, "settings": run.settings,
            "per_request": [{"prompt": r.prompt, "sent_s": round(r.sent_s, 4), "latency_s": round(r.latency_s, 4),
                             "first_token_s": None if r.first_token_s is None else round(r.first_token_s, 4),
                             "completion_tokens": r.completion_tokens, "prompt_tokens": r.prompt_tokens,
                             "finish_reason": r.finish_reason, "error": r.error, "text": r.text}
                            for r in run.replies]}


def served_model(base_url: str) -> str:
    """The model name a request must give: the first (only) entry of GET /v1/models."""
    return get_json(f"{base_url}/v1/models")["data"][0]["id"]


def run_leg(leg: str, directory: Path, dtype: str, device: str, args, measured, warmups, encoded,
            workdir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Start `leg`'s server, warm it up, run every concurrency, stop it: (one result per C, the server's facts)."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    command, configured = server_command(leg, directory, dtype, device, port, args, encoded, workdir)
    server: dict[str, Any] = {"command": command, **configured}
    results: list[dict[str, Any]] = []
    print(f"[{LEGS[leg]}] starting: {' '.join(command)}", flush=True)
    try:
        with serving(command, base_url, workdir / f"{leg}.log", env=OFFLINE, cwd=workdir,
                     startup_timeout_s=args.startup_timeout) as info:
            server.update(info)
            server["model"] = model = served_model(base_url)
            print(f"[{LEGS[leg]}] ready in {info['ready_s']:.1f} s, serving {model!r}", flush=True)
            if warmups:
                warm = summarise(run_load(base_url, model, warmups, len(warmups), len(warmups), args.max_tokens,
                                          args.stream, args.duration, args.timeout))
                server["warmup"] = {k: warm[k] for k in ("wall_s", "requests_ok", "errors", "error_messages")}
            for concurrency in args.concurrency:
                busy = wait_until_idle(args.wait_idle)
                before = cpu_ticks(info["pid"])
                result = summarise(run_load(base_url, model, measured, concurrency, args.requests, args.max_tokens,
                                            args.stream, args.duration, args.timeout))
                result.update(leg=leg, machine_busy_before=busy, cpu=others_share(before, cpu_ticks(info["pid"])))
                others = (result["cpu"] or {}).get("others_cpu_share")
                results.append(result)
                print(f"  C={concurrency} {LEGS[leg]}: {result['tokens_per_s']:,.1f} tokens/s, "
                      f"{result['requests_per_s']:.2f} requests/s, latency p50/p95 {_s(result['latency_s']['p50'])}"
                      f"/{_s(result['latency_s']['p95'])} s, {result['errors']} errors in {result['wall_s']:.1f} s"
                      + (f" [stopped by --duration after {result['requests_sent']} requests]"
                         if result["stopped_by"] == "time" else "")
                      + (f" [warning: the machine was {100 * busy:.0f}% busy before]" if busy and busy > 0.15 else "")
                      + (f" [warning: other processes used {100 * others:.0f}% of the CPU during the run: not clean]"
                         if others and others > CLEAN else ""), flush=True)
    except Exception as err:  # reported in the table and the JSON; the other legs go on
        error = f"{type(err).__name__}: {err}"
        print(f"[{LEGS[leg]}] failed: {error}", file=sys.stderr, flush=True)
        done = {r["concurrency"] for r in results}
        results += [{"status": "error", "leg": leg, "concurrency": c, "error": error}
                    for c in args.concurrency if c not in done]
    return results, server


def comparison(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per concurrency and baseline: our throughput ÷ its, both p95s, and how many answers have the same text."""
    ok = {(r["concurrency"], r["leg"]): r for r in results if r["status"] == "ok" and r["completion_tokens"]}
    rows = []
    for (concurrency, leg), theirs in ok.items():
        ours = ok.get((concurrency, VERSUS.get(leg, "")))
        if ours is None:
            continue
        first_ours = _answers(ours)
        first_theirs = _answers(theirs)
        both = sorted(set(first_ours) & set(first_theirs))
        same = sum(first_ours[p] == first_theirs[p] for p in both)
        ratio = ours["tokens_per_s"] / theirs["tokens_per_s"]
        p95_ours, p95_theirs = ours["latency_s"]["p95"], theirs["latency_s"]["p95"]
        row = {"concurrency": concurrency, "ours": ours["leg"], "versus": leg, "tokens_per_s_ratio": ratio,
               "requests_per_s_ratio": ours["requests_per_s"] / theirs["requests_per_s"],
               "latency_p95_s": {"ours": p95_ours, "theirs": p95_theirs},
               "first_token_p95_s": {"ours": ours["first_token_s"]["p95"], "theirs": theirs["first_token_s"]["p95"]},
               "same_answers": same, "answers_compared": len(both)}
        if concurrency == TARGET["concurrency"]:
            row["target"] = {"tokens_per_s_ratio": TARGET["tokens_per_s_ratio"],
                             "met": ratio >= TARGET["tokens_per_s_ratio"] and p95_ours <= p95_theirs}
        rows.append(row)
    return rows


def _answers(result: dict[str, Any]) -> dict[int, str]:
    """Each ticket's first successful answer's text."""
    answers: dict[int, str] = {}
    for r in result["per_request"]:
        if r["error"] is None:
            answers.setdefault(r["prompt"], r["text"])
    return answers


# --------------------------------------------------------------------------- reporting


def _pair(stats: dict[str, float | None]) -> str:
    return f"{_s(stats['p50'])} / {_s(stats['p95'])}"


def _status(result: dict[str, Any]) -> str:
    notes = [] if result["stopped_by"] == "count" else [f"stopped by --duration at {result['requests_sent']}"]
    others = (result.get("cpu") or {}).get("others_cpu_share")
    if others is not None and others > CLEAN:
        notes.append(f"others used {100 * others:.0f}% CPU")
    return "; ".join(notes) or "ok"


def render(report: dict[str, Any], console=None):
    """Every (C, leg) row, then honing against each baseline (what main prints; the test renders it too)."""
    from rich.console import Console
    from rich.table import Table

    console = console or (Console() if sys.stdout.isatty() else Console(width=170))
    model, prompts, load = report["model"], report["prompts"], report["load"]
    checks = {(c["concurrency"], c["versus"]): c for c in report["comparison"]}
    table = Table(title=f"{model['name']} · {model['dtype']} · {report['device']} · {load['requests']} requests per run "
                        f"({prompts['count']} tickets, mean {prompts['mean_tokens']:.0f} prompt tokens) · max_tokens "
                        f"{load['max_tokens']} · greedy · {'streamed' if load['stream'] else 'not streamed'}")
    for column in ("C", "server", "completion tokens/s", "requests/s", "honing ÷ this", "TTFT p50 / p95 (s)",
                   "latency p50 / p95 (s)", "completion tokens", "errors", "same answers as honing", "status"):
        table.add_column(column, justify="left" if column in ("server", "status") else "right")
    for r in report["results"]:
        if r["status"] != "ok":
            table.add_row(str(r["concurrency"]), LEGS[r["leg"]], *["-"] * 8,
                          f"{r['status']}: {r.get('reason') or r.get('error')}"[:120])
            continue
        check = checks.get((r["concurrency"], r["leg"]))
        table.add_row(str(r["concurrency"]), LEGS[r["leg"]], f"{r['tokens_per_s']:,.1f}", f"{r['requests_per_s']:.2f}",
                      f"{check['tokens_per_s_ratio']:.2f}×" if check else "",
                      _pair(r["first_token_s"]), _pair(r["latency_s"]), f"{r['completion_tokens']:,}",
                      str(r["errors"]), f"{check['same_answers']}/{check['answers_compared']}" if check else "",
                      _status(r))
    console.print(table)
    if report["comparison"]:
        pairs = Table(title="honing against each baseline (latency: send → last byte; TTFT: send → first content)")
        for column in ("C", "versus", "ours tokens/s", "theirs tokens/s", "ratio", "ours p50 / p95 (s)",
                       "theirs p50 / p95 (s)", "ours TTFT p95", "theirs TTFT p95"):
            pairs.add_column(column, justify="left" if column == "versus" else "right")
        by_leg = {(r["concurrency"], r["leg"]): r for r in report["results"]}
        for c in report["comparison"]:
            ours, theirs = by_leg[(c["concurrency"], c["ours"])], by_leg[(c["concurrency"], c["versus"])]
            pairs.add_row(str(c["concurrency"]), LEGS[c["versus"]], f"{ours['tokens_per_s']:,.1f}",
                          f"{theirs['tokens_per_s']:,.1f}", f"{c['tokens_per_s_ratio']:.2f}×",
                          _pair(ours["latency_s"]), _pair(theirs["latency_s"]), _s(ours["first_token_s"]["p95"]),
                          _s(theirs["first_token_s"]["p95"]))
        console.print(pairs)
    return console


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    args = parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    directory, name = model_directory(args.model)
    measured, warmups = conversations(args.requests, args.warmup)
    prompts, encoded = prompt_stats(directory, measured)
    out = Path(args.out or REPO / "bench" / f"results-serve-{name}-{dtype}.json")
    report: dict[str, Any] = {
        "command": "python -m bench.serve " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": {"name": name, "path": str(directory), "dtype": dtype}, "device": device, "prompts": prompts,
        "load": {"concurrency": args.concurrency, "requests": args.requests, "max_tokens": args.max_tokens,
                 "stream": args.stream, "temperature": 0.0, "warmup_requests": len(warmups),
                 "duration_s": args.duration, "timeout_s": args.timeout},
        "hardware": hardware(device), "versions": versions(LIBRARIES), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(f"{name} ({directory}), {dtype} on {device}; {args.requests} requests per run over {prompts['count']} "
          f"tickets of {prompts['min_tokens']}–{prompts['max_tokens']} prompt tokens, max_tokens {args.max_tokens}, "
          f"greedy, {'streamed' if args.stream else 'whole replies'}; C = {args.concurrency}; servers in turn: "
          f"{', '.join(LEGS[leg] for leg in args.legs)}", flush=True)
    results: list[dict[str, Any]] = []
    servers: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="honing-bench-serve-") as tmp:
        for leg in args.legs:
            reason = skip_reason(leg)
            if reason:
                print(f"[{LEGS[leg]}] skipped: {reason}", flush=True)
                results += [{"status": "skipped", "leg": leg, "concurrency": c, "reason": reason}
                            for c in args.concurrency]
                continue
            leg_results, servers[leg] = run_leg(leg, directory, dtype, device, args, measured, warmups, encoded,
                                                Path(tmp))
            results += leg_results
    results.sort(key=lambda r: (args.concurrency.index(r["concurrency"]), args.legs.index(r["leg"])))
    report.update(servers=servers, results=results, comparison=comparison(results))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    render(report)
    for c in report["comparison"]:
        target = c.get("target")
        verdict = "" if target is None else (" — target (≥ {:.0f}× with p95 no worse): {}".format(
            target["tokens_per_s_ratio"], "met" if target["met"] else "missed"))
        print(f"C={c['concurrency']}: {LEGS[c['ours']]} ÷ {LEGS[c['versus']]} = {c['tokens_per_s_ratio']:.2f}× "
              f"completion tokens/s, p95 latency {_s(c['latency_p95_s']['ours'])} vs "
              f"{_s(c['latency_p95_s']['theirs'])} s; same answer text for {c['same_answers']}/"
              f"{c['answers_compared']} tickets{verdict}")
    errors = sum(r.get("errors", 0) for r in results)
    if errors:
        print(f"[warning] {errors} requests failed: see error_messages in {out}", flush=True)
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
