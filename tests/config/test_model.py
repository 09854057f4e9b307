"""honing.config.model: the one model shape (path + adapter, or endpoint + endpoint_model), the training
ModelConfig that needs weights, and the rule that training stages load no adapter."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from honing.config.model import (AdapterConfig, ChatModelConfig, ModelConfig, ScratchModelConfig, no_adapter_to_load,
                                 starts_from_trained)


def test_a_local_model_and_an_endpoint_are_both_one_shape():
    local = ChatModelConfig(path="runs/sft", adapter="runs/sft/adapter")
    assert (local.path, local.adapter, local.endpoint) == ("runs/sft", "runs/sft/adapter", None)
    remote = ChatModelConfig(endpoint="http://localhost:8000/v1", endpoint_model="m")
    assert remote.endpoint_model == "m" and remote.path is None
    assert ChatModelConfig().path is None  # the embedded default


def test_endpoint_needs_endpoint_model_and_excludes_a_path():
    with pytest.raises(ValidationError, match="endpoint needs endpoint_model"):
        ChatModelConfig(endpoint="http://localhost:8000/v1")
    for local in ({"path": "m"}, {"adapter": "a"}):
        with pytest.raises(ValidationError, match="either endpoint or path/adapter"):
            ChatModelConfig(endpoint="http://x/v1", endpoint_model="m", **local)
    with pytest.raises(ValidationError):
        ChatModelConfig(path="m", unknown_key=1)  # unknown keys are errors


def test_training_model_config_rejects_an_endpoint():
    with pytest.raises(ValidationError, match="needs the weights themselves"):
        ModelConfig(endpoint="http://x/v1", endpoint_model="m")
    with pytest.raises(ValidationError, match="either model.path or model.from_config"):
        ModelConfig(path="m", from_config={})
    with pytest.raises(ValidationError, match="not on model.from_config"):
        ModelConfig(adapter="a", from_config={})
    assert ModelConfig(from_config={"num_layers": 2}).from_config.num_layers == 2


def test_no_adapter_to_load_and_starts_from_trained():
    no_adapter_to_load(ModelConfig(path="m"), "sft")
    with pytest.raises(ValueError, match=r"sft trains a new adapter .*\(runs/a\)"):
        no_adapter_to_load(ModelConfig(path="m", adapter="runs/a"), "sft")
    starts_from_trained(ModelConfig(), "dpo")
    with pytest.raises(ValueError, match="dpo starts from a trained model"):
        starts_from_trained(ModelConfig(from_config={}), "dpo")
    with pytest.raises(ValueError, match="takes no model.adapter"):
        starts_from_trained(ModelConfig(adapter="a"), "dpo")


def test_scratch_model_heads_must_divide():
    with pytest.raises(ValidationError, match="multiple of num_heads"):
        ScratchModelConfig(hidden_size=100, num_heads=3)
    with pytest.raises(ValidationError, match="multiple of num_kv_heads"):
        ScratchModelConfig(hidden_size=64, num_heads=4, num_kv_heads=3)
    assert ScratchModelConfig(hidden_size=64, num_heads=4, num_kv_heads=2).num_kv_heads == 2
    with pytest.raises(ValidationError):
        AdapterConfig(method="prefix")
