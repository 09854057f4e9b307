"""Data workbench benchmark: clean → dedup → pii on a generated corpus of short records.

    python -m bench.data --records 1000000 [--workers N] [--dir /tmp/honing-bench-data]

Generates a seeded JSONL corpus (instruction records of 20-60 words, with 5% exact duplicates,
5% near duplicates (one word changed), 3% records carrying PII and 5% low-quality records),
runs each step through honing.workbench with the given workers, and prints records/s and MB/s
(of the step's input) per step, and the peak resident memory of the main process and of the
largest worker (resource.getrusage of self and children).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import time
from pathlib import Path

from honing.config import load_config
from honing.config.stages import DATA_STAGES

WORDS = ("the of and to in is was for on that with as by at from his her they this which be are or had an not but "
         "river system model data paper table light water power market garden window letter music school engine "
         "quickly gently broken golden hidden silver winter summer orange yellow purple simple modern ancient").split()
PII = ["reach me at jane.doe{n}@example.com", "call +44 20 7946 {n:04d}", "card 4111 1111 1111 1111", "ip 192.168.{a}.{b}"]


def generate(path: Path, records: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    kept: list[dict] = []
    with path.open("w", encoding="utf-8") as handle:
        for i in range(records):
            roll = rng.random()
            if kept and roll < 0.05:
                record = dict(rng.choice(kept))  # exact duplicate
            elif kept and roll < 0.10:
                words = rng.choice(kept)["output"].split()
                words[rng.randrange(len(words))] = "changed"
                record = {"instruction": rng.choice(kept)["instruction"], "input": "", "output": " ".join(words)}
            elif roll < 0.15:
                record = {"instruction": "x", "input": "", "output": rng.choice(["...", "#### ####", "ok"])}  # low quality
            else:
                output = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60)))
                if roll < 0.18:
                    output += " " + rng.choice(PII).format(n=i % 10000, a=i % 250, b=(i // 250) % 250)
                record = {"instruction": " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))), "input": "", "output": output}
                if len(kept) < 10_000:
                    kept.append(record)
                elif rng.random() < 0.01:
                    kept[rng.randrange(len(kept))] = record
            handle.write(json.dumps(record) + "\n")


def peak_rss_mib() -> tuple[float, float]:
    """(main process, largest child) peak resident set size in MiB (Linux reports KiB)."""
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    parser.add_argument("--chunk-size", type=int, default=2000)
    parser.add_argument("--dir", default="/tmp/honing-bench-data")
    parser.add_argument("--existing", help="use this JSONL instead of generating one")
    args = parser.parse_args()
    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    corpus = Path(args.existing) if args.existing else root / "corpus.jsonl"
    if not args.existing:
        start = time.perf_counter()
        generate(corpus, args.records)
        print(f"generated {args.records:,} records, {corpus.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - start:.0f} s")
    common = [f"workers={args.workers}" if args.workers else "workers=null", f"chunk_size={args.chunk_size}"]
    steps = [
        ("clean", corpus, root / "clean.jsonl", ["clean.min_words=5", "clean.min_alpha_word_fraction=0.8", "clean.max_symbol_ratio=0.1"]),
        ("dedup", root / "clean.jsonl", root / "dedup.jsonl", []),
        ("pii", root / "dedup.jsonl", root / "pii.jsonl", []),
    ]
    print(f"cores {os.cpu_count()}, workers {args.workers or os.cpu_count()}, chunk {args.chunk_size}")
    print(f"{'step':<6} {'records in':>11} {'removed':>9} {'seconds':>8} {'records/s':>10} {'MB/s':>7} {'peak RSS main / worker (MiB)':>30}")
    for name, source, target, overrides in steps:
        import importlib

        module = importlib.import_module(f"honing.workbench.{name}")
        cfg = load_config(DATA_STAGES[name].config, None, [f"input={source}", f"output={target}", f"run_dir={root}/run-{name}", *common, *overrides])
        size = source.stat().st_size
        start = time.perf_counter()
        counts = module.run(cfg)["counts"]
        seconds = time.perf_counter() - start
        main_rss, child_rss = peak_rss_mib()
        print(f"{name:<6} {counts['in']:>11,} {counts['removed']:>9,} {seconds:>8.1f} {counts['in'] / seconds:>10,.0f} "
              f"{size / 1e6 / seconds:>7.1f} {main_rss:>17,.0f} / {child_rss:,.0f}")


if __name__ == "__main__":
    main()
