"""The audit's reports, rendered from its facts (honing.registry.audit.gather) and nothing else.

    render_markdown(facts)     report.md
    render_html(facts)         report.html: self-contained (inline CSS and SVG, no script), every text escaped
    write_audit(facts, dir)    report.md, report.html and audit.json (the facts), each written atomically

Numbers are shown to 4 significant digits (`num`); audit.json holds them as recorded.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from honing.errors import HoningError
from honing.evals.charts import finite, interval_chart
from honing.evals.report import Block, blocks_html, blocks_markdown
from honing.io import write_text_atomic


def render_markdown(facts: dict[str, Any]) -> str:
    parts = []
    for block in _blocks(facts, html=False):
        if block.kind == "pre":
            fence = "`" * max(3, _longest_backticks(block.content) + 1)
            parts.append(f"{fence}text\n{block.content.rstrip()}\n{fence}")
        elif block.kind == "markdown":
            parts.append(block.content.rstrip())
        else:
            parts.append(blocks_markdown([block]).rstrip("\n"))
    return "\n\n".join(p for p in parts if p) + "\n"


def render_html(facts: dict[str, Any]) -> str:
    page = blocks_html([b for b in _blocks(facts, html=True) if b.kind != "markdown"], _title(facts))
    return page.replace("</style>", _CSS + "</style>", 1)


def write_audit(facts: dict[str, Any], directory: str | Path) -> dict[str, Path]:
    """report.md, report.html and audit.json in `directory` (rendered first, then each written atomically)."""
    texts = {"markdown": ("report.md", render_markdown(facts)), "html": ("report.html", render_html(facts)),
             "facts": ("audit.json", json.dumps(facts, indent=2, default=str) + "\n")}
    directory = check_output(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HoningError(f"-o {directory}: cannot make the directory ({err.strerror or err}); give a directory "
                          "that can be written") from None
    return {kind: write_text_atomic(directory / name, text) for kind, (name, text) in texts.items()}


def check_output(directory: str | Path) -> Path:
    """`directory` as a Path; a one-line HoningError when it (or a folder above it) is a file."""
    directory = Path(directory)
    taken = next((p for p in [directory, *directory.parents] if p.exists() and not p.is_dir()), None)
    if taken is not None:
        raise HoningError(f"-o {directory} names a file ({taken}); give a directory (report.md, report.html and "
                          "audit.json go in it)")
    return directory


def _title(facts: dict[str, Any]) -> str:
    reg = facts["model"]["registry"]
    return f"Audit: {reg['name']} v{reg['version']}"


def _blocks(facts: dict[str, Any], *, html: bool) -> list[Block]:
    blocks = [Block("h1", _title(facts)),
              Block("p", f"{facts['ref']} · registry {facts['registry']} · generated {facts['generated']} by "
                         "`honing audit`. Every number below is copied from a run record or the registry database "
                         "(shown to 4 significant digits; audit.json holds them as recorded).", "meta")]
    if facts["missing"]:
        blocks += [Block("h2", "Missing", "fail"),
                   Block("p", "These are no longer on disk as recorded; the sections below answer from the "
                              "registry's copies where it holds them."),
                   Block("table", (["what"], [[m] for m in facts["missing"]]))]
    blocks += _model_blocks(facts["model"], facts["training_log"], html)
    blocks += _data_blocks(facts["data"], html)
    blocks += _evaluation_blocks(facts["evaluations"], html)
    blocks += _redteam_blocks(facts["redteam"], html)
    blocks += _lineage_blocks(facts, html)
    blocks += _verification_blocks(facts["verification"])
    return blocks


def num(value: Any) -> str:
    """A recorded value as the report shows it: numbers to 4 significant digits, lists joined, null as —."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "nan" if finite(value) is None and value != value else format(value, ".4g")
    if isinstance(value, (list, tuple)):
        return ", ".join(num(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _interval(score: Any) -> str:
    if not isinstance(score, dict):
        return num(score)
    text = num(score.get("mean"))
    if score.get("low") is not None and score.get("high") is not None:
        text += f" [{num(score['low'])}, {num(score['high'])}]"
    if score.get("n") is not None:
        text += f" (n = {num(score['n'])})"
    return text


def _pairs(values: dict[str, Any]) -> list[list[str]]:
    return [[str(key), num(value)] for key, value in values.items()]


def _model_blocks(card: dict[str, Any], log: dict[str, Any], html: bool) -> list[Block]:
    reg, run = card["registry"], card["run"]
    blocks = [Block("h2", "Model card"), Block("p", f"From {card['source']}.", "meta"),
              Block("table", (["field", "value"], _pairs({
                  "name": reg["name"], "version": reg["version"], "status": reg["status"],
                  "aliases": reg["aliases"] or None, "registered by": reg["created_by"], "registered": reg["created"],
                  "model": f"{reg['kind']} {reg['model_path']}", "weights sha256": reg["weights_sha256"],
                  "training run": f"{run.get('stage')} {run.get('run_id')} ({run.get('status')})",
                  "run directory": reg["run_dir"], "started": run.get("started"), "finished": run.get("finished"),
                  "command": " ".join(map(str, run.get("command") or [])) or None})))]
    base = card["base_model"] or {}
    blocks += [Block("h3", "Base model and method"), Block("table", (["field", "value"], _pairs({
        "base model": base.get("path"), "base model sha256": base.get("sha256"), "base model kind": base.get("kind"),
        **{f"adapter.{key}" if key != "method" else "method": value for key, value in card["method"].items()},
        "saved": card["saved"]})))]
    if card["inputs"]:
        rows = [[str(i.get("role")), str(i.get("path")), str(i.get("sha256") or "—")] for i in card["inputs"]]
        blocks += [Block("h3", "Inputs of the training run"), Block("table", (["role", "path", "sha256"], rows))]
    blocks += [Block("h3", "Hyperparameters"),
               Block("table", (["key", "value"], _pairs({**card["hyperparameters"],
                                                         **{f"seeds.{k}": v for k, v in (card["seeds"] or {}).items()}})))]
    compute = card["compute"]
    host, code = compute.get("host") or {}, compute.get("code") or {}
    rows = _pairs({**compute["metrics"], **{f"plan.{k}": v for k, v in (compute.get("plan") or {}).items()},
                   **{f"host.{k}": v for k, v in host.items()}, **{f"code.{k}": v for k, v in code.items()}})
    blocks += [Block("h3", "Compute"), Block("table", (["key", "value"], rows))]
    if compute.get("libraries"):
        blocks += [Block("h3", "Libraries"), Block("table", (["library", "version"], _pairs(compute["libraries"])))]
    if card["metrics"]:
        blocks += [Block("h3", "Final metrics (run.json)"), Block("table", (["metric", "value"], _pairs(card["metrics"])))]
    if card["training_data"]:
        blocks += [Block("h3", "Training data as the run loaded it"),
                   Block("table", (["key", "value"], _pairs(card["training_data"])))]
    blocks.append(Block("h3", "Training log (metrics.jsonl)"))
    if not log["present"]:
        blocks.append(Block("p", f"{log['path']} is missing; the final metrics above are the registry's copy.", "fail"))
    else:
        last = [f"{log['records']} records in {log['path']}"]
        if log["last_train"]:
            last.append(f"last train loss {num(log['last_train'].get('loss'))} at step {num(log['last_train']['step'])}")
        if log["last_validation"]:
            last.append(f"last validation loss {num(log['last_validation'].get('val_loss'))} at step "
                        f"{num(log['last_validation']['step'])}")
        blocks.append(Block("p", "; ".join(last), "meta"))
        if html:
            from honing.evals.charts import curve_chart

            blocks.append(Block("html", curve_chart(card["registry"]["name"], log["curve"])))
    if card["history"]:
        rows = [[num(e["at"]), num(e["action"]), num(e["who"]), num(e["alias"]), num(e["from_version"]),
                 num(e["reason"])] for e in card["history"]]
        blocks += [Block("h3", "Registry history of this version"),
                   Block("table", (["at", "action", "who", "alias", "from version", "reason"], rows))]
    if card["config_text"]:
        blocks += [Block("h3", "config.yaml (as registered)"), Block("pre", card["config_text"])]
    return blocks


def _data_blocks(data: dict[str, Any], html: bool) -> list[Block]:
    blocks = [Block("h2", "Data card"), Block("p", f"From the {data['source']}, as `honing data card` writes it.", "meta")]
    if data["missing"]:
        rows = [[num(m["stage"]), num(m["run_id"]), num(m["dir"]), m["why"]] for m in data["missing"]]
        blocks += [Block("p", "Data runs of the lineage whose records could not be read:", "fail"),
                   Block("table", (["stage", "run", "directory", "why"], rows))]
    if not data["runs"]:
        return blocks + [Block("p", "No data run record was found upstream of the training data (the data was not "
                                    "prepared with honing data, or its run directories are gone; --search names more "
                                    "places to look).", "meta")]
    card = _demote(data["card_markdown"])
    blocks += [Block("markdown", card), Block("html", _markdown_html(card))] if html else [Block("markdown", card)]
    blocks.append(Block("h3", "Decontamination against evaluation sets"))
    rows = [[num(d["stage"]), num(d["run_id"]),
             ", ".join(f"{a.get('path')} ({str(a.get('sha256'))[:12]})" for a in d["against"]) or "none given",
             num(d["removed_by"].get("contamination")) if d["against"] else "not checked"]
            for d in data["decontamination"]]
    blocks.append(Block("table", (["step", "run", "checked against", "removed as contamination"], rows)) if rows else
                  Block("p", "No dedup or mix run in the chain: the data was not checked against evaluation sets.",
                        "fail"))
    return blocks


def _demote(markdown: str) -> str:
    """The card's headings one level down, under the audit's `## Data card` (code blocks left alone)."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        lines.append("#" + line if line.startswith("#") and not fenced else line)
    return "\n".join(lines)


def _markdown_html(markdown: str) -> str:
    """The card's Markdown as HTML, raw HTML in it escaped (only its own <details> folds are kept)."""
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    opened = rendered.count("<p>&lt;details&gt;&lt;summary&gt;parameters&lt;/summary&gt;</p>")
    if opened == rendered.count("<p>&lt;/details&gt;</p>"):
        rendered = rendered.replace("<p>&lt;details&gt;&lt;summary&gt;parameters&lt;/summary&gt;</p>",
                                    "<details><summary>parameters</summary>")
        rendered = rendered.replace("<p>&lt;/details&gt;</p>", "</details>")
    return f'<div class="card">{rendered}</div>'


def _evaluation_blocks(evaluations: list[dict[str, Any]], html: bool) -> list[Block]:
    blocks = [Block("h2", "Evaluations")]
    if not evaluations:
        return blocks + [Block("p", "No evaluation is attached to this version (honing registry attach NAME@V "
                                    "EVAL_RUN).", "fail")]
    for scan in evaluations:
        results = scan["results"]
        record = scan["record"]
        blocks += [Block("h3", f"Eval run {scan['run_id']}"),
                   Block("p", f"From {scan['source']}; run directory {scan['run_dir']}"
                              f"{'' if scan['present'] else ' (missing)'}; attached {scan['attached']}; status "
                              f"{record.get('status')}; finished {record.get('finished')}; bootstrap "
                              f"{num((results.get('bootstrap') or {}).get('resamples'))} resamples at "
                              f"{num((results.get('bootstrap') or {}).get('confidence'))} confidence.", "meta")]
        models = results.get("models") or []
        if models:
            rows = [[num(m.get("name")), num(m.get("role")), num(m.get("source")), num(m.get("adapter"))] for m in models]
            blocks.append(Block("table", (["model", "role", "source", "adapter"], rows)))
        for task in results.get("tasks") or []:
            name = str(task.get("name"))
            metrics = list(task.get("metrics") or [])
            rows = [[num(m.get("name"))] + [_interval((((results.get("scores") or {}).get(m.get("name")) or {})
                                                       .get(name) or {}).get(metric)) for metric in metrics]
                    for m in models]
            blocks += [Block("p", f"Task {name}: {num(task.get('kind'))}, n = {num(task.get('n'))}, primary "
                                  f"{num(task.get('primary'))}{', regression set' if task.get('regression') else ''}"),
                       Block("table", (["model"] + metrics, rows))]
            primary = task.get("primary") or (metrics[0] if metrics else None)
            if html and primary:
                triples = [(str(m.get("name")), _triple((((results.get("scores") or {}).get(m.get("name")) or {})
                                                         .get(name) or {}).get(primary))) for m in models]
                values = [v for _, t in triples for v in t if v is not None]
                plain = bool(values) and not all(0 <= v <= 1 for v in values)
                blocks.append(Block("html", interval_chart(triples, f"{name}: {primary} by model", plain=plain,
                                                           value_text=lambda mean: num(mean))))
        if results.get("differences"):
            rows = [[num(d.get("model")), num(d.get("baseline")), num(d.get("task")), num(d.get("metric")),
                     f"{num(d.get('diff'))} [{num(d.get('low'))}, {num(d.get('high'))}]"]
                    for d in results["differences"]]
            blocks += [Block("p", "Paired differences (candidate minus baseline, bootstrap interval):"),
                       Block("table", (["model", "baseline", "task", "metric", "difference [interval]"], rows))]
        gate = results.get("gate")
        if gate:
            passed = gate.get("passed")
            rows = [["pass" if c.get("passed") else "FAIL", num(c.get("model")), num(c.get("task")),
                     num(c.get("metric")), num(c.get("kind")), num(c.get("value")), num(c.get("limit")),
                     num(c.get("message"))] for c in gate.get("checks") or []]
            blocks.append(Block("p", f"Gate: {'PASSED' if passed else 'FAILED'}"
                                     f"{'' if gate.get('enabled', True) else ' (not enforced)'}",
                                "pass" if passed else "fail"))
            if rows:
                blocks.append(Block("table", (["result", "model", "task", "metric", "check", "value", "limit",
                                               "message"], rows)))
        else:
            blocks.append(Block("p", "No gate verdict recorded in this evaluation.", "meta"))
    return blocks


def _triple(score: Any) -> tuple[float | None, float | None, float | None]:
    score = score if isinstance(score, dict) else {}
    return finite(score.get("mean")), finite(score.get("low")), finite(score.get("high"))


def _redteam_blocks(scan: dict[str, Any] | None, html: bool) -> list[Block]:
    blocks = [Block("h2", "Red-team scan")]
    if scan is None:
        return blocks + [Block("p", "No red-team scan is attached to this version.", "fail")]
    results = scan["results"]
    summary = results.get("summary") or {}
    settings = results.get("settings") or {}
    blocks.append(Block("p", f"The latest of {scan['attached_scans']} attached scan(s) (by its run record's started): "
                             f"run {scan['run_id']}, from "
                             f"{scan['source']}; run directory {scan['run_dir']}{'' if scan['present'] else ' (missing)'};"
                             f" attached {scan['attached']}; target {num(settings.get('target'))}; attempts "
                             f"{num(settings.get('attempts'))}; mutators {num(settings.get('mutators'))}; judge "
                             f"{num(settings.get('judge'))}.", "meta"))
    header = ["group", "prompts", "successes / attempts", "ASR [interval]", "ASR any attempt [interval]"]

    def row(name: str, group: dict[str, Any]) -> list[str]:
        return [name, num(group.get("prompts")), f"{num(group.get('successes'))} / {num(group.get('attempts'))}",
                _interval(group.get("asr")), _interval(group.get("asr_any"))]

    categories = summary.get("by_category") or {}
    rows = [row(f"category {c}", g) for c, g in categories.items()]
    if summary.get("overall"):
        rows.append(row("all attack categories", summary["overall"]))
    if (summary.get("over_refusal") or {}).get("prompts"):
        rows.append(row("over-refusal (benign prompts refused)", summary["over_refusal"]))
    blocks.append(Block("table", (header, rows)))
    if html and categories:
        triples = [(c, _triple(g.get("asr"))) for c, g in categories.items()]
        if summary.get("overall"):
            triples.append(("all", _triple(summary["overall"].get("asr"))))
        blocks.append(Block("html", interval_chart(triples, "attack success rate by category",
                                                   value_text=lambda mean: num(mean))))
    mutators = summary.get("by_mutator") or {}
    if mutators:
        blocks.append(Block("table", (["mutator"] + header[1:], [row(m, g) for m, g in mutators.items()])))
    gate = results.get("gate")
    if gate:
        blocks.append(Block("p", f"Gate: {'PASSED' if gate.get('passed') else 'FAILED'} (ASR {num(gate.get('asr'))}, "
                                 f"fail above {num(gate.get('fail_above'))})", "pass" if gate.get("passed") else "fail"))
    else:
        blocks.append(Block("p", "No gate was set on this scan (fail_above).", "meta"))
    return blocks


def _lineage_blocks(facts: dict[str, Any], html: bool) -> list[Block]:
    lineage = facts["lineage"]
    blocks = [Block("h2", "Lineage"),
              Block("p", "From the run records (honing.registry.lineage): the model, the runs that made it and every "
                         "file they read, back to the raw data. Edges point upstream.", "meta")]
    svg = _dot_svg(lineage) if html else None
    if svg:
        blocks.append(Block("html", f'<div class="scroll">{svg}</div>'))
    blocks.append(Block("pre", facts["lineage_tree"]))
    rows = [[num(n["kind"]), num(n.get("stage") or n["label"]), num(n["path"]), num(n["sha256"]), num(n["status"])]
            for n in lineage["nodes"]]
    blocks += [Block("h3", "Every node and its recorded hash"),
               Block("table", (["kind", "what", "path", "sha256 (recorded)", "status"], rows))]
    return blocks


def _dot_svg(lineage: dict[str, Any]) -> str | None:
    """The graph as SVG when Graphviz's `dot` is installed (None otherwise: the text tree stands alone)."""
    dot = shutil.which("dot")
    if dot is None:
        return None
    from honing.registry.lineage import Edge, Lineage, Node
    from honing.registry.lineage_render import to_dot

    graph = Lineage(lineage["target"], lineage["root"], {n["id"]: Node(**n) for n in lineage["nodes"]},
                    [Edge(**e) for e in lineage["edges"]], verified=lineage["verified"])
    try:
        out = subprocess.run([dot, "-Tsvg"], input=to_dot(graph), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    start = out.stdout.find("<svg")
    if out.returncode != 0 or start < 0 or "<script" in out.stdout.lower():
        return None
    return out.stdout[start:]


def _verification_blocks(verification: dict[str, Any]) -> list[Block]:
    if verification["verified"]:
        verdict = "every file is as recorded" if verification["passed"] else "some files changed or are missing"
        intro = f"Each file and model re-hashed now, against the hash its record holds: {verdict}."
    else:
        intro = "Not re-hashed (verify: false): the recorded hashes only."
    rows = [[num(f["status"]), num(f["kind"]), num(f["path"] or f["label"]), num(f["sha256"]),
             num(f["actual_sha256"]) if f["actual_sha256"] != f["sha256"] else "same"] for f in verification["files"]]
    record = verification["run_record"]
    rows.append([record["status"], "record", record["path"], "the registry's copy", "—"])
    return [Block("h2", "Verification", "pass" if verification["passed"] else ("fail" if verification["verified"] else "")),
            Block("p", intro, "meta"),
            Block("table", (["status", "kind", "path", "recorded sha256", "sha256 now"], rows))]


def _longest_backticks(text: str) -> int:
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return longest


_CSS = """
pre{background:#fff;border:1px solid #e5e7eb;padding:8px;overflow-x:auto;font-size:12px}
.card table{font-size:13px}
.card code{font-size:12px;word-break:break-all}
details{margin:4px 0 8px}
"""
