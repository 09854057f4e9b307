"""honing.config.stages: the one list of commands. Every runner imports and is callable, every key a
positional file or -o sets exists in the stage's config, every summary says something, names are unique."""

from __future__ import annotations

import importlib

import pytest

from honing.config.loader import section_model
from honing.config.stages import DATA_STAGES, RAG_STAGES, STAGES, Stage
from honing.errors import HoningError

ALL = [*STAGES.values(), *DATA_STAGES.values(), *RAG_STAGES.values()]


def _has_key(config, dotted: str) -> bool:
    """Walk a dotted key through model_fields, into sections."""
    cls = config
    for part in dotted.split("."):
        if cls is None or part not in cls.model_fields:
            return False
        cls = section_model(cls.model_fields[part].annotation)
    return True


@pytest.mark.parametrize("stage", ALL, ids=lambda s: s.command)
def test_runner_imports_and_is_callable(stage: Stage):
    module, function = stage.runner.split(":")
    assert callable(getattr(importlib.import_module(module), function))


@pytest.mark.parametrize("stage", ALL, ids=lambda s: s.command)
def test_subject_and_output_keys_exist_in_the_config(stage: Stage):
    for key in (stage.subject, stage.output):
        if key is not None:
            assert _has_key(stage.config, key), f"{stage.command}: {key} is not a key of {stage.config.__name__}"
    assert len(stage.summary.split()) >= 4 and stage.summary.endswith(".")
    assert stage.example.startswith(stage.command + " examples/")


def test_key_walk_fails_on_a_wrong_key():
    assert _has_key(STAGES["inspect"].config, "data.train")
    assert not _has_key(STAGES["inspect"].config, "data.nope")
    assert not _has_key(STAGES["inspect"].config, "nope")


def test_command_names_are_unique_and_groups_right():
    commands = [stage.command for stage in ALL]
    assert len(commands) == len(set(commands))
    assert all(name == stage.name for name, stage in STAGES.items()) and all(not s.group for s in STAGES.values())
    assert all(s.group == "data" for s in DATA_STAGES.values())
    assert {s.name for s in ALL if s.trains} == {"pretrain", "sft", "dpo", "reward", "rl"}


def test_subject_overrides():
    assert STAGES["inspect"].subject_overrides(["a.jsonl"]) == ["data.train=a.jsonl"]
    with pytest.raises(HoningError, match="takes one file, got 2"):
        STAGES["inspect"].subject_overrides(["a.jsonl", "b.jsonl"])
    mix = DATA_STAGES["mix"]
    assert mix.subject_many
    assert mix.subject_overrides(["x/chat.jsonl", "y/chat.jsonl", "code.parquet"]) == [
        "sources.chat=x/chat.jsonl", "sources.chat_2=y/chat.jsonl", "sources.code=code.parquet"]
