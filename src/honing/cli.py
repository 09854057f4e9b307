"""`honing <stage> [CONFIG.yaml] [FILE ...] [-o OUT] [key=value ...]`: parse, load the config, call the stage.

The commands and their help are generated from the one stage registry (`honing.config.stages`).
This module imports no torch: `honing --help` and `honing <stage> --help` stay instant.

Arguments are read the way people type them:
- a `.yaml`/`.yml` file is the config (at most one);
- `key=value` is an override (overrides win over the config);
- any other argument is the command's subject file, where it has one (`honing inspect data.jsonl`,
  `honing data clean in.jsonl -o out.jsonl`); `-o/--output` names the output.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import click

from honing.config.help import describe_fields
from honing.config.loader import load_config
from honing.config.stages import DATA_STAGES, MONITOR_STAGES, RAG_STAGES, STAGES, Stage
from honing.errors import EXIT_CRASH, EXIT_GATE_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, HoningError
from honing.registry.commands import registry_group

OVERRIDE = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*=")
CONFIG_SUFFIXES = (".yaml", ".yml")


class StageCommand(click.Command):
    """A stage's --help: the summary, the usage, then every config field."""

    def __init__(self, stage: Stage, **kwargs):
        self.stage = stage
        super().__init__(**kwargs)

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_paragraph()
        formatter.write_text(self.stage.summary)
        formatter.write_paragraph()
        formatter.write_text("Settings come from an optional YAML file and key=value overrides, which win: "
                             + self.stage.example)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = describe_fields(self.stage.config)
        with formatter.section("Config fields (key: type = default)"):
            formatter.write_dl([(f"{key}: {kind} = {default}", doc) for key, kind, default, doc in rows])


def split_args(stage: Stage, args: tuple[str, ...], output: str | None = None) -> tuple[str | None, list[str]]:
    """(config path, overrides) from the command line; subject files and -o become overrides."""
    config, overrides, files = None, [], []
    for arg in args:
        if OVERRIDE.match(arg):
            overrides.append(arg)
        elif arg.lower().endswith(CONFIG_SUFFIXES):
            if config is not None:
                raise HoningError(f"two config files ({config}, {arg}): give one, then key=value overrides")
            config = arg
        elif stage.subject:
            files.append(arg)
        else:
            raise HoningError(
                f"{arg!r} is neither a config (a config file ends in .yaml or .yml) nor a key=value override, and "
                f"`{stage.command}` takes no file argument; rename a config to {Path(arg).stem}.yaml, or set the "
                "file with key=value (see --help)")
    given = {arg.partition("=")[0] for arg in overrides}
    implied = stage.subject_overrides(files) if files else []
    if output is not None:
        implied.append(f"{stage.output}={output}")
    for arg in implied:
        key = arg.partition("=")[0]
        if key in given:
            raise HoningError(f"{key} is given twice: as {arg!r} and as a {key}= override; keep one")
    return config, implied + overrides


def _resume_config(resume: str, config_path: str | None) -> str:
    saved = Path(resume) / "config.yaml"
    if not saved.is_file():
        raise HoningError(f"{resume} is not a run directory (no config.yaml); nothing to resume")
    if config_path:
        raise HoningError("--resume continues a run with its saved config; give key=value overrides, not a config file")
    return str(saved)  # overrides (e.g. train.grad_accum on another number of processes) still apply


def _run(stage: Stage, args: tuple[str, ...], *, output: str | None = None, resume: str | None = None,
         **flags) -> None:
    config_path, overrides = split_args(stage, args, output)
    for flag in stage.flags:
        override = flag.override(flags.get(flag.param))
        if override is not None:
            overrides.append(override)
    if resume:
        config_path = _resume_config(resume, config_path)
    cfg = load_config(stage.config, config_path, overrides)
    if not stage.group:
        from honing.ui import quiet_libraries

        quiet_libraries()
    result = stage.run(cfg, resume=resume) if stage.trains else stage.run(cfg)
    if isinstance(result, dict) and result.get("status") == "interrupted":
        sys.exit(EXIT_INTERRUPTED)  # stopped by Ctrl-C after saving its work; --resume (synth: resume=true) continues
    if isinstance(result, dict) and result.get("gate") and not result["gate"]["passed"]:
        sys.exit(EXIT_GATE_FAILED)


def _make_command(stage: Stage) -> click.Command:
    params: list[click.Parameter] = [click.Argument(["args"], nargs=-1)]
    if stage.output:
        params.append(click.Option(["-o", "--output"], metavar="PATH", help=f"Where to write (sets {stage.output})."))
    if stage.trains:
        params.append(click.Option(["--resume"], metavar="RUN_DIR", help=(
            "Continue this run from its latest checkpoint, exactly, with its saved config (key=value overrides still apply)."
        )))
    for flag in stage.flags:
        if flag.metavar is None:
            params.append(click.Option([flag.option], is_flag=True, help=flag.help))
        else:
            params.append(click.Option([flag.option], type=flag.kind, metavar=flag.metavar, help=flag.help))

    def callback(args: tuple[str, ...], **options) -> None:
        _run(stage, args, **options)

    return StageCommand(stage, name=stage.name, callback=callback, params=params, short_help=stage.summary,
                        options_metavar="[CONFIG.yaml] [OPTIONS]",
                        context_settings={"ignore_unknown_options": True})


class StageGroup(click.Group):
    """A stage that also has subcommands: `honing monitor ARGS` runs the stage (the report), `honing monitor export
    ARGS` the subcommand; --help shows the stage's own help, then the subcommands."""

    def __init__(self, stage: Stage, subcommands: dict[str, Stage]):
        super().__init__(name=stage.name, short_help=stage.summary)
        self.default = _make_command(stage)
        self.default.hidden = True
        self.add_command(self.default, name="report")
        for sub in subcommands.values():
            self.add_command(_make_command(sub))

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = ["report", *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.default.format_help(ctx, formatter)
        self.format_commands(ctx, formatter)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="honing")
def cli() -> None:
    """honing: from a base model to a specialised, evaluated model, with the evidence of how it got there."""


@cli.group(name="data")
def data_group() -> None:
    """The data workbench: clean, deduplicate, scrub PII, convert, split, mix, validate, describe, document."""


@cli.group(name="rag")
def rag_group() -> None:
    """Retrieval over your documents: `honing rag index DOCS... --index DIR`, then `honing rag ask QUESTION --index DIR`;
    `honing rag eval QA.jsonl --index DIR` scores it."""


for _stage in STAGES.values():
    cli.add_command(_make_command(_stage))
cli.add_command(registry_group)
cli.add_command(StageGroup(STAGES["monitor"], MONITOR_STAGES))
for _stage in DATA_STAGES.values():
    data_group.add_command(_make_command(_stage))
for _stage in RAG_STAGES.values():
    rag_group.add_command(_make_command(_stage))


def _crash_file(err: BaseException) -> Path | None:
    """Write the traceback where the user can find it: the current run directory, else the cache, else the
    working directory; None when none of them can be written."""
    import datetime as _dt
    import traceback

    from honing.models.source import cache_root
    from honing.runs import current_run_dir

    text = f"honing {' '.join(sys.argv[1:])}\n\n" + "".join(traceback.format_exception(err))
    name = f"crash-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.txt"
    run_dir = current_run_dir()
    for folder in ([run_dir] if run_dir is not None and run_dir.is_dir() else []) + [cache_root() / "crashes", Path.cwd()]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text, encoding="utf-8")
            return folder / name
        except OSError:
            continue
    return None


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as err:
        err.show()
        sys.exit(EXIT_USAGE)
    except HoningError as err:
        click.secho(f"error: {err}", err=True, fg="red")
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as err:  # a bug in honing: one line, and the traceback in a file
        if os.environ.get("HONING_DEBUG") == "1":
            raise
        path = _crash_file(err)
        where = f"the traceback is in {path}" if path else "no crash file could be written"
        click.secho(f"error: unexpected {type(err).__name__}: {err} — this is a bug in honing; {where} "
                    "(HONING_DEBUG=1 shows it here)", err=True, fg="red")
        sys.exit(EXIT_CRASH)


if __name__ == "__main__":
    main()
