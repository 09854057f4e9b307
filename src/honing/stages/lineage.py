"""`honing lineage`: trace a model, run or data file back to the raw bytes, from the run records alone.

    build the graph (honing.registry.lineage; with --verify, every file re-hashed)
    ─▶ the report: a tree on the terminal, or json / dot, to stdout or atomically to -o FILE
    ─▶ exit 3 when --verify found a file changed or missing
"""

from __future__ import annotations

import sys
from typing import Any

from honing.config.lineage import LineageConfig
from honing.io import write_text_atomic
from honing.ui import console


def lineage(cfg: LineageConfig) -> dict[str, Any]:
    from rich.console import Console

    from honing.registry.lineage import build_lineage
    from honing.registry.lineage_render import print_tree, render, summary_line

    graph = build_lineage(cfg.target, search=cfg.search, verify=cfg.verify)
    if cfg.output:
        write_text_atomic(cfg.output, render(graph, cfg.format))
        console.print(f"lineage of {cfg.target} → {cfg.output}: {summary_line(graph)}", markup=False, soft_wrap=True)
    elif cfg.format == "tree":
        wide = {} if sys.stdout.isatty() else {"width": 100_000}  # piped: whole lines, for grep
        print_tree(graph, Console(file=sys.stdout, highlight=False, **wide))
    else:
        sys.stdout.write(render(graph, cfg.format))
        console.print(summary_line(graph), markup=False, soft_wrap=True)
    return {"root": graph.root, "summary": graph.summary,
            "gate": {"passed": graph.passed, "summary": graph.summary} if cfg.verify else None}


run = lineage
