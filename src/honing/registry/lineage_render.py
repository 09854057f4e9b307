"""A lineage graph as text: a tree for the terminal (rich), JSON (the shape `honing.registry.lineage`
documents), and Graphviz DOT (`dot -Tsvg lineage.dot -o lineage.svg`).

The tree starts at the target (a run directory's own models first, `role →`) and goes upstream; a node reached a
second time is named again, marked `(shown above)`, and not expanded twice. Paths under the working directory are
shown relative to it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from honing.registry.lineage import Lineage, Node

FORMATS = ("tree", "json", "dot")
STYLE = {"ok": "green", "changed": "bold red", "missing": "bold red", "damaged": "bold red", "unchecked": "yellow"}
DOT_SHAPE = {"model": "component", "run": "box", "file": "note", "external": "ellipse"}
DOT_COLOR = {"ok": "darkgreen", "changed": "red", "missing": "red", "damaged": "red", "unchecked": "orange"}


def render(lineage: Lineage, fmt: str) -> str:
    """The whole report in `fmt` (tree, json or dot) as text, the tree without colour."""
    if fmt == "json":
        return json.dumps(lineage.to_dict(), indent=2) + "\n"
    if fmt == "dot":
        return to_dot(lineage)
    if fmt == "tree":
        buffer = io.StringIO()
        print_tree(lineage, Console(file=buffer, width=100_000, color_system=None, highlight=False))
        return buffer.getvalue()
    raise ValueError(f"unknown lineage format {fmt!r}; one of {', '.join(FORMATS)}")


def print_tree(lineage: Lineage, console: Console) -> None:
    """The tree, then the summary line (long lines wrap at the console's width)."""
    console.print(tree(lineage))
    console.print(escape(summary_line(lineage)), soft_wrap=True)


def tree(lineage: Lineage) -> Tree:
    """Depth first, in the order the records list their inputs."""
    root = Tree(describe(lineage.nodes[lineage.root]))
    shown = {lineage.root}
    for edge, node in lineage.downstream(lineage.root):  # a run's own models, first
        root.add(f"[dim]{escape(edge.role)} →[/] " + describe(node))
        shown.add(node.id)
    pending = [(root, iter(lineage.upstream(lineage.root)))]
    while pending:
        branch, children = pending[-1]
        edge, node = next(children, (None, None))
        if node is None:
            pending.pop()
            continue
        where = f"[dim]{escape(edge.role)} ←[/] "
        if node.id in shown:
            name = f"{node.stage} {node.run_id}" if node.kind == "run" and node.run_id else _where(node)
            branch.add(f"{where}{node.kind} {escape(name)} [dim](shown above)[/]")
            continue
        shown.add(node.id)
        pending.append((branch.add(where + describe(node)), iter(lineage.upstream(node.id))))
    return root


def describe(node: Node) -> str:
    """One node as rich markup: kind, what it is, where, its hash and its status."""
    parts = [f"[bold]{node.kind}[/]"]
    if node.kind == "run":
        parts += [escape(node.stage or "?"), escape(node.run_id or ""), f"[dim]{escape(_where(node))}[/]"]
        if node.details.get("status"):
            parts.append(escape(str(node.details["status"])))
        if node.details.get("record_from"):
            parts.append(f"[dim](record from the {node.details['record_from']})[/]")
        if node.details.get("why"):
            parts.append(f"[dim]({escape(str(node.details['why']))})[/]")
    else:
        parts.append(escape(_where(node)))
        if node.sha256:
            parts.append(f"[dim]sha256 {node.sha256[:12]}[/]")
    status = node.status
    if status in STYLE:
        text = status + (f" (now {node.actual_sha256[:12]})" if status == "changed" and node.actual_sha256 else "")
        parts.append(f"[{STYLE[status]}]{escape(text)}[/]")
    if node.details.get("registry"):
        parts.append(f"[cyan]registry:{escape(node.details['registry'])}[/]")
    return "  ".join(p for p in parts if p)


def summary_line(lineage: Lineage) -> str:
    counts = lineage.summary
    kinds = ", ".join(f"{counts[k]} {k}{'s' if counts[k] != 1 else ''}" for k in ("run", "file", "model", "external")
                      if counts[k])
    line = f"{counts['nodes']} nodes ({kinds})"
    if lineage.verified:
        checked = ", ".join(f"{counts.get(s, 0)} {s}" for s in ("ok", "changed", "missing", "unchecked"))
        damaged = f", {counts['damaged']} damaged" if counts.get("damaged") else ""
        return f"{line}; verify: {checked}{damaged} — {'passed' if lineage.passed else 'FAILED'}"
    gone = [f"{counts[s]} {s}" for s in ("missing", "damaged") if counts.get(s)]
    return f"{line}; {', '.join(gone) + '; ' if gone else ''}hashes not re-checked (--verify re-hashes every file)"


def to_dot(lineage: Lineage) -> str:
    lines = ["digraph lineage {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];',
             f"  label={_quote(summary_line(lineage))};"]
    for node in lineage.nodes.values():
        label = "\\n".join(_quote(part)[1:-1] for part in _dot_label(node))
        attrs = [f'label="{label}"', f"shape={DOT_SHAPE[node.kind]}"]
        if node.status in DOT_COLOR:
            attrs.append(f"color={DOT_COLOR[node.status]}")
        if node.kind == "external" or node.status == "missing":
            attrs.append("style=dashed")
        if node.id == lineage.root:
            attrs.append("penwidth=2")
        lines.append(f"  {_quote(node.id)} [{', '.join(attrs)}];")
    for edge in lineage.edges:  # drawn the way data flows: from what went in to what came out
        lines.append(f"  {_quote(edge.upstream)} -> {_quote(edge.downstream)} [label={_quote(edge.role)}];")
    return "\n".join(lines) + "\n}\n"


def _dot_label(node: Node) -> list[str]:
    if node.kind == "run":
        parts = [node.stage or "run", node.run_id or node.label]
    else:
        parts = [node.label] + ([node.sha256[:12]] if node.sha256 else [])
    return parts + ([node.status] if node.status in DOT_COLOR else [])


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _where(node: Node) -> str:
    if not node.path:
        return node.label
    path = Path(node.path)
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
