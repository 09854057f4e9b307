"""`honing audit NAME@V`: one Markdown + HTML report of a registered version, for a reviewer, from the records alone.

    gather the facts (honing.registry.audit: the registry's version, history and attachments; the training run's
    metrics.jsonl; the data runs and the lineage, re-hashed unless verify=false)
    ─▶ render report.md and report.html (honing.registry.audit_report), then write them and audit.json (the
    facts), each atomically
"""

from __future__ import annotations

from typing import Any

from honing.config.audit import AuditConfig
from honing.ui import console


def audit(cfg: AuditConfig) -> dict[str, Any]:
    from honing.registry.audit import default_output, gather
    from honing.registry.audit_report import check_output, write_audit

    if cfg.output:
        check_output(cfg.output)  # before the lineage is re-hashed
    facts = gather(cfg.target, search=cfg.search, verify=cfg.verify)
    model = facts["model"]["registry"]
    directory = cfg.output or default_output(model["name"], model["version"])
    paths = write_audit(facts, directory)
    verification = facts["verification"]
    checked = ("not re-hashed" if not verification["verified"] else
               "every file as recorded" if verification["passed"] else "some files changed or missing")
    console.print(f"audit of {facts['ref']}: {len(facts['evaluations'])} evaluation(s), "
                  f"{'a red-team scan' if facts['redteam'] else 'no red-team scan'}, "
                  f"{len(facts['data']['runs'])} data step(s), {checked}; "
                  f"{len(facts['missing'])} missing → {paths['markdown']}, {paths['html']}, {paths['facts']}",
                  markup=False, soft_wrap=True)
    for what in facts["missing"]:
        console.print(f"  missing: {what}", markup=False, soft_wrap=True)
    return {"output": str(directory), "missing": facts["missing"]}


run = audit
