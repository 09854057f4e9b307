"""Typed configs for every stage: YAML files plus dotted command-line overrides.

    base        StrictModel, the base of every section
    model       which model (one shape everywhere a model is named)
    data, train, sampling, output     the sections stages share
    training, inference, alignment, evaluation, rl, redteam, workbench, synth, rag
                one module per stage family
    loader      YAML + key=value overrides -> a validated config, with one-line errors
    help        the field table `honing <stage> --help` prints
    stages      the one registry of commands the CLI is built from

Each field's docstring is its documentation, so nothing is documented twice. The package must
not import torch: the CLI's help has to stay instant.
"""

from honing.config.base import StrictModel
from honing.config.data import DataConfig
from honing.config.loader import dump_config, format_validation_error, load_config, parse_override
from honing.config.model import AdapterConfig, ChatModelConfig, ModelConfig, ScratchModelConfig
from honing.config.output import OutputConfig
from honing.config.sampling import GenerationConfig, SamplingConfig
from honing.config.train import TrainConfig
from honing.config.help import describe_fields  # noqa: E402  (after loader, which it uses)
from honing.config.training import PretrainConfig, QuickstartConfig, SFTConfig
from honing.config.inference import ChatConfig, GenerateConfig, InspectConfig, MergeConfig
from honing.config.export import ExportConfig
from honing.config.alignment import (DPOConfig, LabelConfig, LabelSourceConfig, PreferenceObjectiveConfig,
                                     RewardConfig, RewardObjectiveConfig, ScoreConfig)
from honing.config.evaluation import EvalConfig, EvalModelConfig, EvalTaskConfig, GateConfig, JudgeConfig, TaskKind
from honing.config.rl import RewardSpec, RLConfig, RLDataConfig, RLObjectiveConfig, RolloutConfig
from honing.config.redteam import ConstituteConfig, RedteamConfig, RedteamMutator
from honing.config.rag import RagAskConfig, RagIndexConfig, RetrievalConfig

__all__ = [
    "AdapterConfig", "ChatConfig", "ChatModelConfig", "ConstituteConfig", "DPOConfig", "DataConfig", "EvalConfig",
    "EvalModelConfig", "EvalTaskConfig", "ExportConfig", "GateConfig", "GenerateConfig", "InspectConfig", "JudgeConfig",
    "LabelConfig", "LabelSourceConfig", "MergeConfig", "ModelConfig", "OutputConfig", "PreferenceObjectiveConfig",
    "PretrainConfig", "QuickstartConfig", "RLConfig", "RagAskConfig", "RagIndexConfig", "RetrievalConfig",
    "RLDataConfig", "RLObjectiveConfig", "RedteamConfig",
    "RedteamMutator", "RewardConfig", "RewardObjectiveConfig", "RewardSpec", "RolloutConfig", "SFTConfig",
    "GenerationConfig", "SamplingConfig", "ScoreConfig", "ScratchModelConfig", "StrictModel", "TaskKind", "TrainConfig",
    "describe_fields", "dump_config", "format_validation_error", "load_config", "parse_override",
]
