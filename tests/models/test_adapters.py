"""apply_adapter: what becomes trainable for each method, and QLoRA's availability check."""

from __future__ import annotations

import pytest
import torch

from honing.config import AdapterConfig, ModelConfig
from honing.errors import ModelError
from honing.models.adapters import apply_adapter, count_parameters, qlora_available, quantization_config_for


def test_full_trains_everything(tiny_model):
    tiny_model.requires_grad_(False)
    model = apply_adapter(tiny_model, AdapterConfig(method="full"))
    total, trainable = count_parameters(model)
    assert total == trainable == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_lora_trains_only_the_adapter(tiny_model, method):
    model = apply_adapter(tiny_model, AdapterConfig(method=method, rank=4))
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    # all-linear: every projection of every block, not the head
    assert any("q_proj.lora_A" in n for n in trainable) and any("down_proj.lora_B" in n for n in trainable)
    assert not any("lm_head" in n for n in trainable)
    assert any("lora_magnitude_vector" in n for n in trainable) == (method == "dora")
    total, n_trainable = count_parameters(model)
    assert 0 < n_trainable < total


def test_lora_target_modules_list(tiny_model):
    model = apply_adapter(tiny_model, AdapterConfig(rank=2, target_modules=["q_proj", "v_proj"]))
    modules = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad}
    assert modules == {"q_proj", "v_proj"}


def test_unknown_target_module_is_a_model_error(tiny_model):
    with pytest.raises(ModelError, match="target_modules"):
        apply_adapter(tiny_model, AdapterConfig(target_modules=["no_such_proj"]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error path")
def test_qlora_errors_without_cuda(tiny_model, tiny_model_dir):
    ok, reason = qlora_available()
    assert not ok and reason
    expected = r"adapter.method=qlora needs a CUDA GPU and bitsandbytes \(pip install bitsandbytes\): .*; use adapter.method=lora on this machine"
    with pytest.raises(ModelError, match=expected):
        apply_adapter(tiny_model, AdapterConfig(method="qlora"))
    with pytest.raises(ModelError, match=expected):
        quantization_config_for(AdapterConfig(method="qlora"))
    from honing.models.load import load_model

    with pytest.raises(ModelError, match=expected):
        load_model(ModelConfig(path=str(tiny_model_dir)), adapter=AdapterConfig(method="qlora"))
    assert quantization_config_for(AdapterConfig(method="lora")) is None


@pytest.mark.gpu
@pytest.mark.skipif(not qlora_available()[0], reason=f"QLoRA needs CUDA + bitsandbytes: {qlora_available()[1]}")
def test_qlora_on_gpu(tiny_model_dir):
    from honing.models.load import load_model

    cfg = AdapterConfig(method="qlora", rank=4)
    loaded = load_model(ModelConfig(path=str(tiny_model_dir)), device="cuda", adapter=cfg)
    assert loaded.model.is_loaded_in_4bit
    model = apply_adapter(loaded.model, cfg)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    ids = torch.tensor([[1, 5, 9]], device="cuda")
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
