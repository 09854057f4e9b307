"""Configs: every shipped example loads; bad configs name the key and what is allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from honing.config import PretrainConfig, SFTConfig, describe_fields, load_config, parse_override
from honing.config.registry import RegistryConfig
from honing.config.stages import GROUPS, RAG_STAGES, STAGES
from honing.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(path for path in (ROOT / "examples").glob("*/*.yaml")
                  if not path.parent.name.startswith(("data_", "rag_")))
GROUP_EXAMPLES = sorted([*(ROOT / "examples").glob("data_*/*.yaml"), *(ROOT / "examples").glob("rag_*/*.yaml")])
"""examples/<group>_<command>/: the commands under `honing data` and `honing rag`."""


CONFIGS = {**{name: stage.config for name, stage in STAGES.items()}, "registry": RegistryConfig}
"""Every example folder's config class: the stages', and `honing registry`'s (gate, MLflow mirror)."""


def test_there_is_an_example_for_every_stage():
    stages_with_examples = {path.parent.name for path in EXAMPLES}
    assert set(STAGES) - {"quickstart"} <= stages_with_examples


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_config_loads(path):
    stage = path.parent.name
    first_line = path.read_text().splitlines()[0]
    command = f"# honing {stage} " + ("promote NAME VERSION " if stage == "registry" else "")
    assert first_line.startswith(f"{command}examples/{stage}/{path.name}"), "each example opens with its command"
    config = load_config(CONFIGS[stage], path)
    for key in ("train", "validation"):
        data_path = getattr(getattr(config, "data", None), key, None)
        if data_path and not data_path.startswith("path/to"):
            assert (ROOT / data_path).exists(), f"{path.name} points at missing data {data_path}"
    for task in getattr(config, "tasks", []):  # eval
        for data_path in (task.data, task.include_path):
            if data_path and not data_path.startswith("builtin:"):
                assert (ROOT / data_path).exists(), f"{path.name} points at missing data {data_path}"


@pytest.mark.parametrize("path", GROUP_EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_group_example_config_loads(path):
    group, _, command = path.parent.name.partition("_")
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith(f"# honing {group} {command} examples/{path.parent.name}/{path.name}"), "each example opens with its command"
    config = load_config(GROUPS[group][command].config, path)
    given = getattr(config, "input", None)
    inputs = given.values() if isinstance(given, dict) else [given] if given else []
    for data_path in [*inputs, *getattr(config, "against", []), *getattr(config, "docs", [])]:
        assert (ROOT / data_path).exists(), f"{path.name} points at missing data {data_path}"


def test_every_rag_command_has_an_example():
    examples = {path.parent.name.removeprefix("rag_") for path in GROUP_EXAMPLES if path.parent.name.startswith("rag_")}
    assert examples == set(RAG_STAGES)


def test_overrides_win_and_are_typed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {train: a.jsonl}\ntrain: {lr: 0.1, micro_batch_size: 2}\n")
    cfg = load_config(SFTConfig, path, ["train.lr=2e-4", "train.betas=[0.9, 0.95]", "adapter.target_modules=[q_proj]"])
    assert cfg.train.lr == 2e-4 and cfg.train.micro_batch_size == 2
    assert cfg.train.betas == (0.9, 0.95) and cfg.adapter.target_modules == ["q_proj"]


def test_stage_defaults_survive_partial_sections():
    cfg = load_config(PretrainConfig, None, ["data.train=corpus.txt"])
    assert cfg.data.packing is True and cfg.data.train_on == "everything"
    assert cfg.model.from_config is not None


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["data.train=a", "train.lrr=1"], "train.lrr: unknown key; allowed here: lr,"),
        (["data.train=a", "trian.lr=1"], "trian: unknown key; allowed here: model, adapter, data, train, output"),
        (["data.train=a", "train.schedule=steep"], "train.schedule: Input should be 'constant', 'linear' or 'cosine'"),
        (["data.train=a", "train.lr=fast"], "train.lr: Input should be a valid number"),
        (["data.train=a", "train.lr=-1"], "train.lr: Input should be greater than 0"),
        (["train.lr=1e-4"], "data.train is required"),
        (["data.train=a", "data.format=preference"], "sft trains on instruction, chat or sharegpt data"),
        (["data.train=a", "model.path=x", "model.from_config.num_layers=2"], "either model.path or model.from_config"),
    ],
)
def test_bad_config_errors_name_the_key(overrides, expected):
    with pytest.raises(ConfigError) as err:
        load_config(SFTConfig, None, overrides)
    assert expected in str(err.value)


def test_yaml_errors_name_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("data:\n  train: a.jsonl\n  max_length: [1,\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:\d+: not valid YAML"):
        load_config(SFTConfig, path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(SFTConfig, tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("train.lr")


def test_every_field_is_documented():
    for stage in [*STAGES.values(), *(stage for group in GROUPS.values() for stage in group.values())]:
        for key, _, _, doc in describe_fields(stage.config):
            assert doc, f"{stage.command}: {key} has no docstring"


def test_help_lists_fields_without_importing_torch():
    code = (
        "import sys; from click.testing import CliRunner; from honing.cli import cli;"
        "r = CliRunner().invoke(cli, ['sft', '--help']); print(r.output);"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "train.lr: float = 0.0002" in out.stdout and "Peak learning rate." in out.stdout
    assert "data.on_bad_record: fail | skip = fail" in out.stdout


def test_cli_bad_config_exits_nonzero_with_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "honing.cli", "sft", "data.train=a", "train.lrr=1"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.startswith("error: invalid config") and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()


def test_quickstart_defaults_match_the_example_config():
    from honing.config import QuickstartConfig

    example = load_config(SFTConfig, ROOT / "examples/sft/quickstart.yaml")
    built_in = QuickstartConfig().sft
    assert example.data.train == "src/honing/quickstart/data/train.jsonl" and built_in.data.train == "<bundled>"
    assert example.model_dump(exclude={"data": {"train"}}) == built_in.model_dump(exclude={"data": {"train"}})


def test_override_value_that_is_not_yaml_is_a_string():
    assert parse_override('system_prompt=Reply as {"a": "x"|"y"}: only JSON')[1] == 'Reply as {"a": "x"|"y"}: only JSON'
    assert parse_override("train.betas=[0.9, 0.95]")[1] == [0.9, 0.95]


CONFIG_MODULES = ["alignment", "audit", "data", "evaluation", "inference", "lineage", "model", "output", "pipeline",
                  "redteam", "registry", "rl", "sampling", "synth", "train", "training", "workbench"]


@pytest.mark.parametrize("name", CONFIG_MODULES)
def test_every_config_class_of_every_module_documents_its_fields(name):
    import importlib

    from honing.config.base import StrictModel

    module = importlib.import_module(f"honing.config.{name}")
    classes = [obj for obj in vars(module).values()
               if isinstance(obj, type) and issubclass(obj, StrictModel) and obj.__module__ == module.__name__]
    assert classes, f"honing.config.{name} defines no config class"
    for cls in classes:
        assert (cls.__doc__ or "").strip(), f"{cls.__name__} has no docstring"
        undocumented = [field for field, info in cls.model_fields.items() if not (info.description or "").strip()
                        and not issubclass(_section(info.annotation) or type, StrictModel)]
        assert not undocumented, f"{name}.{cls.__name__}: {', '.join(undocumented)} have no docstring"


def _section(annotation):
    from honing.config.loader import section_model

    return section_model(annotation)


def test_the_old_top_level_adapter_points_at_model_adapter():
    from honing.config import GenerateConfig

    with pytest.raises(ConfigError, match=r"adapter: unknown key.*the adapter to load is model\.adapter now"):
        load_config(GenerateConfig, None, ["prompts=p.txt", "output=o.jsonl", "adapter=runs/x/adapter"])
