"""`honing <stage> [CONFIG.yaml] [key=value ...]`: parse, load the config, call the stage.

This module imports no torch: `honing --help` and `honing <stage> --help` stay instant.
Every stage's help lists its config fields with their docs and defaults, read from the
config models themselves.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

from honing.config import STAGES, describe_fields, load_config
from honing.config_data import DATA_COMMANDS, DATA_RUNNERS, DATA_SUMMARIES
from honing.errors import HoningError

SUMMARIES = {
    "pretrain": "Pre-train a causal LM on raw text (a new model from a config, or continue one).",
    "sft": "Supervised fine-tuning (full, LoRA, DoRA, QLoRA) on instruction or chat data.",
    "generate": "Answer every prompt of a file, writing a JSONL of responses.",
    "chat": "Chat with a model (base, fine-tuned, or base + adapter) in the terminal.",
    "merge": "Fold a LoRA/DoRA adapter into its base model and save a plain HF model.",
    "inspect": "Show a data file's format, counts, token lengths and trained-vs-masked tokens.",
    "quickstart": "Fine-tune the embedded model on the bundled task and show before/after on held-out data.",
    "dpo": "Align a model with preference pairs: DPO, IPO, SimPO or ORPO (LoRA or full fine-tuning).",
    "label": "Collect human preferences in the terminal: a prompt, two answers, keys a / b / t(ie) / s(kip) / u(ndo) / q(uit).",
    "reward": "Train a reward model (a scalar head on the model) on preference pairs with the Bradley-Terry loss.",
    "score": "Score answers with a reward model: each record plus `score`; with a baseline, the win rate.",
    "rl": "Online RL from prompts and rewards (verifiers, reward model, judge): GRPO or PPO, with a KL to the start.",
    "eval": "Evaluate models on tasks with bootstrap intervals; one Markdown + HTML report; --gate fails on regressions.",
    "redteam": "Attack a model with a probe suite; attack success rate per category and mutator; --fail-above gates.",
    "constitute": "Critique and revise answers against a constitution (default: a redteam run's failures): SFT data and preference pairs.",
}
GATE_FAILED_EXIT = 3  # `honing eval --gate`: a candidate regressed or missed a threshold (1 is a usage/input error)
TRAINING_STAGES = {"pretrain", "sft", "dpo", "rl", "reward"}


class StageCommand(click.Command):
    """A stage's --help: the summary, the usage, then every config field."""

    def __init__(self, stage: str, *, summary: str | None = None, config_cls: type | None = None,
                 example: str | None = None, **kwargs):
        self.stage = stage
        self.summary = summary or SUMMARIES[stage]
        self.config_cls = config_cls or STAGES[stage]
        self.example = example or f"honing {stage} examples/{stage}/<config>.yaml train.lr=2e-4"
        super().__init__(**kwargs)

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_paragraph()
        formatter.write_text(self.summary)
        formatter.write_paragraph()
        formatter.write_text(f"Settings come from an optional YAML file and key=value overrides, which win: {self.example}")

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = describe_fields(self.config_cls)
        with formatter.section("Config fields (key: type = default)"):
            formatter.write_dl([(f"{key}: {kind} = {default}", doc) for key, kind, default, doc in rows])


def _split_args(args: tuple[str, ...]) -> tuple[str | None, list[str]]:
    config, overrides = None, []
    for i, arg in enumerate(args):
        if i == 0 and "=" not in arg:
            config = arg
        elif "=" in arg:
            overrides.append(arg)
        else:
            raise HoningError(f"unexpected argument {arg!r}: give one config file first, then key=value overrides")
    return config, overrides


def _run_stage(stage: str, args: tuple[str, ...], resume: str | None, gate: bool = False,
               fail_above: float | None = None) -> None:
    config_path, overrides = _split_args(args)
    if gate:
        overrides.append("gate.enabled=true")
    if fail_above is not None:
        overrides.append(f"fail_above={fail_above!r}")
    if resume:
        saved = Path(resume) / "config.yaml"
        if not saved.is_file():
            raise HoningError(f"{resume} is not a run directory (no config.yaml); nothing to resume")
        if config_path:
            raise HoningError("--resume continues a run with its saved config; give key=value overrides, not a config file")
        config_path = str(saved)  # overrides (e.g. train.grad_accum on another number of processes) still apply
    cfg = load_config(STAGES[stage], config_path, overrides)
    from honing.ui import quiet_libraries

    quiet_libraries()
    module = importlib.import_module(f"honing.stages.{stage}")
    result = module.run(cfg, resume=resume) if stage in TRAINING_STAGES else module.run(cfg)
    if isinstance(result, dict) and result.get("status") == "interrupted":
        sys.exit(130)  # stopped by Ctrl-C after writing a checkpoint; --resume continues it
    if isinstance(result, dict) and result.get("gate") and not result["gate"]["passed"]:
        sys.exit(GATE_FAILED_EXIT)


def _make_command(stage: str) -> click.Command:
    params: list[click.Parameter] = [click.Argument(["args"], nargs=-1)]
    if stage in TRAINING_STAGES:
        params.append(click.Option(["--resume"], metavar="RUN_DIR", help=(
            "Continue this run from its latest checkpoint, exactly, with its saved config (key=value overrides still apply)."
        )))

    if stage == "eval":
        params.append(click.Option(["--gate"], is_flag=True, help=(
            f"Exit with code {GATE_FAILED_EXIT} when a candidate regresses on a regression task or misses a task's min threshold."
        )))

    if stage == "redteam":
        params.append(click.Option(["--fail-above"], type=float, metavar="RATE", help=(
            f"Exit with code {GATE_FAILED_EXIT} when the attack success rate (0-1, all attack categories) is above RATE."
        )))

    def callback(args: tuple[str, ...], resume: str | None = None, gate: bool = False,
                 fail_above: float | None = None) -> None:
        _run_stage(stage, args, resume, gate, fail_above)

    return StageCommand(stage, name=stage, callback=callback, params=params, short_help=SUMMARIES[stage],
                        context_settings={"ignore_unknown_options": True})


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="honing")
def cli() -> None:
    """honing: from a base model to a specialised, evaluated model, with the evidence of how it got there."""


for _stage in STAGES:
    cli.add_command(_make_command(_stage))


@cli.group(name="data")
def data_group() -> None:
    """The data workbench: clean, deduplicate, scrub PII, convert, split, mix, validate, describe, document."""


def _run_data_command(command: str, args: tuple[str, ...]) -> None:
    config_path, overrides = _split_args(args)
    cfg = load_config(DATA_COMMANDS[command], config_path, overrides)
    module_name, function = DATA_RUNNERS[command].split(":")
    result = getattr(importlib.import_module(module_name), function)(cfg)
    if isinstance(result, dict) and result.get("status") == "interrupted":
        sys.exit(130)  # stopped by Ctrl-C after saving its work (synth: resume=true continues)


def _make_data_command(command: str) -> click.Command:
    def callback(args: tuple[str, ...]) -> None:
        _run_data_command(command, args)

    return StageCommand(
        f"data {command}", summary=DATA_SUMMARIES[command], config_cls=DATA_COMMANDS[command],
        example=f"honing data {command} examples/data_{command}/<config>.yaml key=value",
        name=command, callback=callback, params=[click.Argument(["args"], nargs=-1)],
        short_help=DATA_SUMMARIES[command], context_settings={"ignore_unknown_options": True},
    )


for _command in DATA_COMMANDS:
    data_group.add_command(_make_data_command(_command))


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except HoningError as err:
        click.secho(f"error: {err}", err=True, fg="red")
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
