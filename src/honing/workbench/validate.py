"""`honing data validate`: every record parses and normalises (honing.data.formats), or is
listed with file:line.

A file's format is that of its first valid record (or the configured one); a later record of
another format is invalid, as it would be when training. All invalid records go to
<run_dir>/rejects.jsonl; the first `shown_errors` are printed and kept in run.json. The command
fails (exit 1) when any record is invalid, unless on_bad_record=skip.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from honing.config.workbench import DataValidateConfig
from honing.data.formats import RecordError, detect_format, normalize
from honing.errors import DataError
from honing.ui import console
from honing.workbench.io import AtomicOutputs, as_line, dumps, iter_items, parse_payload
from honing.workbench.pipeline import run_step
from honing.workbench.runner import failed, record_outputs, start_run


class ValidateStep:
    def __init__(self, fmt: str) -> None:
        self.fmt = fmt

    def process(self, file: str, line: int, payload: Any) -> tuple[str, str]:
        fmt = self.fmt
        try:
            record = parse_payload(payload)
            if fmt == "auto":
                try:
                    fmt = detect_format(record)
                except DataError as err:
                    raise RecordError(str(err)) from None
            normalize(record, fmt)
        except RecordError as err:
            return ("invalid", f"{err} ({fmt} format)" if fmt != "auto" else str(err))
        return ("valid", fmt)


def run(cfg: DataValidateConfig) -> dict[str, Any]:
    """Validate cfg.input; see the module docstring."""
    run_record = start_run("validate", cfg, {"input": cfg.input})
    formats: Counter[str] = Counter()
    file_format: dict[str, str] = {}
    errors: list[dict[str, Any]] = []
    counts = {"in": 0, "valid": 0, "invalid": 0}
    try:
        with AtomicOutputs() as outs:
            rejects = outs.open("rejects", run_record.dir / "rejects.jsonl")
            results = run_step(ValidateStep(cfg.format), iter_items(cfg.input), workers=cfg.workers, chunk_size=cfg.chunk_size)
            for (file, line, payload), (status, value) in results:
                counts["in"] += 1
                if status == "valid":
                    first = file_format.setdefault(file, value)
                    if first == value:
                        counts["valid"] += 1
                        formats[value] += 1
                        continue
                    status, value = "invalid", f"a {value} record in a {first} file (its first record is {first})"
                counts["invalid"] += 1
                if len(errors) < cfg.shown_errors:
                    errors.append({"where": f"{file}:{line}", "reason": value})
                rejects.write(dumps({"file": file, "line": line, "reason": value, "record": as_line(payload)}))
        record_outputs(run_record, outs.files)
    except BaseException as err:
        failed(run_record, err)
        raise
    counts["formats"] = dict(sorted(formats.items()))
    run_record.set("counts", counts)
    run_record.set("errors", errors)
    run_record.finish("completed")
    shown = ", ".join(f"{name} {n}" for name, n in counts["formats"].items()) or "none"
    console.print(f"[bold]data validate[/bold]: {counts['in']} records, {counts['valid']} valid ({shown}), {counts['invalid']} invalid → {run_record.dir}")
    for error in errors:
        console.print(f"  [yellow]{error['where']}: {error['reason']}[/yellow]")
    if counts["invalid"] > len(errors):
        console.print(f"  … and {counts['invalid'] - len(errors)} more in {run_record.dir / 'rejects.jsonl'}")
    if counts["invalid"] and cfg.on_bad_record == "fail":
        first = errors[0] if errors else {"where": "?", "reason": "see rejects.jsonl"}
        raise DataError(f"{counts['invalid']} of {counts['in']} records are invalid; the first: {first['where']}: {first['reason']}")
    return {"run_dir": str(run_record.dir), "counts": counts, "errors": errors}
