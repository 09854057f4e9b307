"""Three tiny product documents the retrieval tests index: each names a product's activation code (chunk #0) and a
care instruction (chunk #1), so a question about one code has exactly one right chunk."""

from __future__ import annotations

from pathlib import Path

FACTS = {"zephyr.md": ("Zephyr relay", "QX-4471"), "tulip.md": ("Tulip lamp", "BR-2290"),
         "orca.md": ("Orca pump", "MT-6013")}


def write_fact_docs(docs: Path) -> Path:
    """The three documents in `docs` (created), returned."""
    docs.mkdir(parents=True, exist_ok=True)
    for name, (thing, code) in FACTS.items():
        (docs / name).write_text(f"# {thing}\n\nThe {thing}'s activation code is {code}. Keep it private.\n\n"
                                 f"## Care\n\nWipe the {thing} with a dry cloth once a month.\n")
    return docs
