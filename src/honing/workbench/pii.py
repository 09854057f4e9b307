"""`honing data pii`: redact, drop or report personal data and secrets (honing.data.pii).

Finds are counted by type in run.json (`counts.found`). With action=drop the dropped records go
to <run_dir>/removed.jsonl (reason `pii`, with their finds' types); with action=report the data
is not rewritten and <run_dir>/findings.jsonl lists every find by file, line, field and type —
with its position but never its text, so the report does not copy the personal data.
"""

from __future__ import annotations

from typing import Any

from honing.config.workbench import DataPIIConfig
from honing.data.clean import joined_text
from honing.data.formats import RecordError
from honing.data.pii import PIIScrubber
from honing.workbench.io import as_line, dumps, parse_payload
from honing.workbench.runner import Outcome, stream_filter


class PIIStep:
    def __init__(self, scrubber: PIIScrubber) -> None:
        self.scrubber = scrubber

    def process(self, file: str, line: int, payload: Any) -> Outcome:
        try:
            record = parse_payload(payload)
        except RecordError as err:
            return Outcome("rejected", reason=str(err))
        result = self.scrubber.scrub(record)
        action = self.scrubber.cfg.action
        if result.record is None:
            return Outcome("removed", reason="pii", found=result.counts, detail=sorted(result.counts))
        findings = None
        if action == "report" and result.findings:
            findings = [
                {"field": ".".join(map(str, path)), "type": match.type, "start": match.start, "end": match.end}
                for path, match in result.findings
            ]
        out = dumps(result.record) if result.counts and action == "redact" else as_line(payload)
        return Outcome("kept", out, length=len(joined_text(result.record)), found=result.counts or None, detail=findings)


def run(cfg: DataPIIConfig) -> dict[str, Any]:
    """Scrub cfg.input into cfg.output; see the module docstring."""
    report = cfg.pii.action == "report"
    return stream_filter(
        "pii",
        cfg,
        PIIStep(PIIScrubber(cfg.pii)),
        output=None if report else cfg.output,
        write_removed=cfg.write_removed and cfg.pii.action == "drop",
        findings=report,
    )
