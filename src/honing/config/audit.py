"""Config of `honing audit`: which registered version to audit, where the report goes, and how far to check."""

from __future__ import annotations

from pydantic import model_validator

from honing.config.base import StrictModel


class AuditConfig(StrictModel):
    """`honing audit`: one Markdown + HTML report of a registered version, read only from the records."""

    target: str | None = None
    """The registered version: NAME@VERSION or NAME@ALIAS (e.g. support-bot@3, support-bot@production; the
    registry: prefix is optional)."""
    output: str | None = None
    """Directory of report.md, report.html and audit.json (the facts gathered); null: runs/audit-NAME-vVERSION."""
    search: list[str] = []
    """More directories holding run directories (the data runs that made the training data), besides ./runs and the
    directory of every run reached, for the lineage and the data card."""
    verify: bool = True
    """Re-hash every file and model of the lineage still on disk and say, per file, whether it is as recorded (ok),
    changed or missing; false: report the recorded hashes only."""

    @model_validator(mode="after")
    def _check(self) -> AuditConfig:
        if not self.target:
            raise ValueError("target is required: the registered version to audit (e.g. honing audit support-bot@3)")
        return self
