"""Write the bundled knowledge task in the shapes `honing ladder` and `honing eval` read, from questions.jsonl:

    kestrelmark_test.jsonl    the 100 test questions: {"id", "kind", "messages": [system, user], "references"}
                              (references: the answer and its aliases; scored by contains_reference)
    kestrelmark_train.jsonl   the 20 train questions as chat records: [system, user, assistant: the answer]

    python -m honing.rag.make_ladder_data      (a test checks the files are what this writes)
"""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).parent / "data"
INSTRUCTION = ("You are the support assistant of Kestrelmark Devices. Answer the customer's question about a "
               "Kestrelmark product or policy in one short sentence.")
"""The task's instruction: the system turn of every rung (and of the fine-tune's training records)."""


def turns(question: dict) -> list[dict[str, str]]:
    return [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": question["question"]}]


def records() -> dict[str, list[dict]]:
    lines = (DATA / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    questions = [json.loads(line) for line in lines if line.strip()]
    return {
        "kestrelmark_test.jsonl": [{"id": q["id"], "kind": q["kind"], "messages": turns(q),
                                    "references": [q["answer"], *q["aliases"]]}
                                   for q in questions if q["split"] == "test"],
        "kestrelmark_train.jsonl": [{"id": q["id"], "messages": [*turns(q), {"role": "assistant", "content": q["answer"]}]}
                                    for q in questions if q["split"] == "train"],
    }


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main() -> None:
    for name, rows in records().items():
        (DATA / name).write_text(render(rows), encoding="utf-8")
        print(f"{DATA / name}: {len(rows)} records")


if __name__ == "__main__":
    main()
