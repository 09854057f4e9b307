"""Procedurally generated tasks with checkable answers, for RL without any downloaded data.

`builtin:arithmetic`: one-operation integer questions ("What is 37 + 18?": sums below 100,
differences of two-digit numbers, times tables to 12), asked to be answered with the number
alone. The generator is seeded, so the
same seed gives the same prompts on every machine.
"""

from __future__ import annotations

import random
from typing import Any

ARITHMETIC_INSTRUCTION = "Reply with the final number only."


def arithmetic(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` records {prompt, answer, expression}, each distinct."""
    rng = random.Random(f"arithmetic:{seed}")
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(records) < n:
        expression, value = _expression(rng)
        if expression in seen:
            continue
        seen.add(expression)
        records.append({"prompt": f"What is {expression}? {ARITHMETIC_INSTRUCTION}", "answer": str(value),
                        "expression": expression})
    return records


def _expression(rng: random.Random) -> tuple[str, int]:
    shape = rng.choice(["a+b", "a-b", "a*b"])
    if shape == "a+b":
        a, b = rng.randint(1, 60), rng.randint(1, 40)
        return f"{a} + {b}", a + b
    if shape == "a-b":
        a = rng.randint(10, 99)
        b = rng.randint(1, a)
        return f"{a} - {b}", a - b
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    return f"{a} * {b}", a * b


BUILTIN = {"builtin:arithmetic": arithmetic}
