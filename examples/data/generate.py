"""Writes the small example data sets in this folder (deterministic): python examples/data/generate.py

The records are procedurally generated arithmetic and unit-conversion tasks with correct
answers, in each format honing reads, so every example config has real data to run on.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

HERE = Path(__file__).parent
UNITS = [("kilometres", "metres", 1000), ("hours", "minutes", 60), ("kilograms", "grams", 1000), ("minutes", "seconds", 60)]


def tasks(rng: random.Random, n: int) -> list[tuple[str, str, str]]:
    out = []
    for _ in range(n):
        if rng.random() < 0.5:
            a, b = rng.randint(2, 99), rng.randint(2, 99)
            out.append(("Add the two numbers.", f"{a} and {b}", f"{a} + {b} = {a + b}."))
        else:
            big, small, factor = rng.choice(UNITS)
            x = rng.randint(2, 40)
            out.append((f"Convert {big} to {small}.", f"{x} {big}", f"{x} {big} is {x * factor} {small}."))
    return out


def main() -> None:
    rng = random.Random(7)
    items = tasks(rng, 80)
    with (HERE / "alpaca.jsonl").open("w") as f:
        for instruction, given, answer in items:
            f.write(json.dumps({"instruction": instruction, "input": given, "output": answer}) + "\n")
    with (HERE / "chat.jsonl").open("w") as f:
        for (i1, g1, a1), (i2, g2, a2) in zip(items[::2], items[1::2]):
            messages = [
                {"role": "system", "content": "You are a precise calculator. Answer in one sentence."},
                {"role": "user", "content": f"{i1} {g1}"},
                {"role": "assistant", "content": a1},
                {"role": "user", "content": f"Now this one. {i2} {g2}"},
                {"role": "assistant", "content": a2},
            ]
            f.write(json.dumps({"messages": messages}) + "\n")
    sharegpt = [
        {"conversations": [{"from": "human", "value": f"{i} {g}"}, {"from": "gpt", "value": a}]} for i, g, a in items
    ]
    (HERE / "sharegpt.json").write_text(json.dumps(sharegpt, indent=1) + "\n")
    with (HERE / "alpaca.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["instruction", "input", "output"])
        writer.writeheader()
        for instruction, given, answer in items[:30]:
            writer.writerow({"instruction": instruction, "input": given, "output": answer})
    with (HERE / "preference.jsonl").open("w") as f:
        for instruction, given, answer in items[:40]:
            wrong = answer.replace("=", "is roughly").replace(" is ", " might be ")
            f.write(json.dumps({"prompt": f"{instruction} {given}", "chosen": answer, "rejected": wrong}) + "\n")
    with (HERE / "prompts.txt").open("w") as f:
        for instruction, given, _ in tasks(random.Random(99), 8):
            f.write(f"{instruction} {given}\n")
    (HERE / "corpus.txt").write_text(corpus(random.Random(3)))


def corpus(rng: random.Random) -> str:
    """Short plain-prose documents, one per paragraph, for the tiny pre-training example."""
    subjects = ["The river", "A small boat", "The old mill", "Our garden", "The night train", "A quiet library", "The harbour"]
    verbs = ["wakes before dawn", "carries the smell of rain", "keeps its own slow time", "fills with light at noon",
             "grows quiet in winter", "hums with voices in spring", "waits for the tide"]
    tails = ["and nobody hurries.", "while the town sleeps.", "as it has for a hundred years.",
             "until the lamps are lit.", "and the gulls circle overhead.", "long after the visitors leave."]
    paragraphs = []
    for _ in range(120):
        sentences = [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(tails)}" for _ in range(rng.randint(3, 6))]
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs) + "\n"


if __name__ == "__main__":
    main()
