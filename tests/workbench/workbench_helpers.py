"""Helpers of the workbench tests: tiny data files and configs."""

from __future__ import annotations

import json
import random
from pathlib import Path


from honing.config import load_config
from honing.config.stages import DATA_STAGES

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def sentence(rng: random.Random, n: int = 30) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def read_jsonl(path: Path) -> list:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def command(name: str, *overrides: str):
    return load_config(DATA_STAGES[name].config, None, list(overrides))


