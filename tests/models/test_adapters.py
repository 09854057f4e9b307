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


# --------------------------------------------------------------------------- exactly which layers, and how many parameters

IDS = torch.tensor([[1, 17, 230, 4000, 42, 9, 77], [1, 3, 3, 500, 600, 700, 800]])


def _logits(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits  # (B, T, V)


def _block_linears(model) -> dict[str, torch.nn.Linear]:
    return {name: m for name, m in model.model.layers.named_modules() if isinstance(m, torch.nn.Linear)}


def test_all_linear_adapts_every_block_linear_and_counts_match(tiny_model):
    from peft.tuners.lora import LoraLayer

    linears = {name: (m.in_features, m.out_features) for name, m in _block_linears(tiny_model).items()}
    base_total = sum(p.numel() for p in tiny_model.parameters())
    rank = 3
    model = apply_adapter(tiny_model, AdapterConfig(rank=rank))

    blocks = model.get_base_model().model.layers
    adapted = {name for name, m in blocks.named_modules() if isinstance(m, LoraLayer)}
    assert adapted == set(linears) and len(linears) == 2 * 7  # q k v o gate up down, in both blocks
    assert not isinstance(model.get_base_model().lm_head, LoraLayer)
    assert not isinstance(model.get_base_model().model.embed_tokens, LoraLayer)

    # r × (in + out) per adapted layer, and nothing else trainable
    expected_trainable = sum(rank * (fan_in + fan_out) for fan_in, fan_out in linears.values())
    total, trainable = count_parameters(model)
    assert trainable == expected_trainable == sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert total == base_total + trainable


def test_listed_targets_leave_the_other_linears_plain(tiny_model):
    from peft.tuners.lora import LoraLayer

    model = apply_adapter(tiny_model, AdapterConfig(rank=2, target_modules=["q_proj", "v_proj"]))
    adapted = {name for name, m in model.get_base_model().model.layers.named_modules() if isinstance(m, LoraLayer)}
    assert adapted == {f"{i}.self_attn.{proj}" for i in range(2) for proj in ("q_proj", "v_proj")}
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any("k_proj" in n for n in frozen) and any("mlp.down_proj" in n for n in frozen)


# --------------------------------------------------------------------------- save -> reload -> merge


def _perturb_adapter(model, method: str) -> None:
    """lora_B starts at zero (and DoRA's magnitude at the weight norm), so an untrained adapter is
    the identity and a broken save/merge would go unnoticed; move both off their start."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn_like(param) * 0.1)
            elif "lora_magnitude_vector" in name:
                param.mul_(1 + 0.2 * torch.rand_like(param))
    if method == "dora":
        assert any("lora_magnitude_vector" in name for name, _ in model.named_parameters())


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_saved_adapter_reloads_and_merges_to_the_same_logits(tiny_model_dir, tmp_path, method):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from honing.models.load import load_adapter_model, load_model
    from honing.models.save import merge_adapter, save_model

    base_cfg = ModelConfig(path=str(tiny_model_dir))
    loaded = load_model(base_cfg)
    base_logits = _logits(loaded.model)
    model = apply_adapter(loaded.model, AdapterConfig(method=method, rank=4, dropout=0.0))
    _perturb_adapter(model, method)
    expected = _logits(model)
    assert (expected - base_logits).abs().max() > 1e-2, "the adapter must change the outputs, or this test cannot fail"

    save_model(model, loaded.tokenizer, tmp_path, save="both")
    adapter_dir = tmp_path / "adapter"
    merged_dir = merge_adapter(base_cfg, adapter_dir, tmp_path / "merged")
    reloaded = {
        "load_adapter_model": load_adapter_model(base_cfg, adapter_dir).model,
        "plain PeftModel": PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter_dir),
        "save='both' model/": AutoModelForCausalLM.from_pretrained(tmp_path / "model"),
        "merge_adapter": AutoModelForCausalLM.from_pretrained(merged_dir),
    }
    for how, candidate in reloaded.items():
        torch.testing.assert_close(_logits(candidate), expected, atol=1e-5, rtol=0, msg=lambda m, how=how: f"{how}: {m}")


def test_in_memory_adapter_keeps_training_after_save(tiny_model_dir, tmp_path):
    from honing.models.load import load_model
    from honing.models.save import save_model

    loaded = load_model(ModelConfig(path=str(tiny_model_dir)))
    model = apply_adapter(loaded.model, AdapterConfig(rank=4, dropout=0.0))
    model.train()
    params_before = dict(model.named_parameters())
    trainable_before = {n for n, p in params_before.items() if p.requires_grad}

    save_model(model, loaded.tokenizer, tmp_path, save="both")

    params_after = dict(model.named_parameters())
    assert params_after.keys() == params_before.keys()
    assert all(params_after[n] is params_before[n] for n in params_before), "save must not swap the parameters"
    assert {n for n, p in params_after.items() if p.requires_grad} == trainable_before
    assert model.training and not any(getattr(m, "merged", False) for m in model.modules())

    snapshot = {n: p.detach().clone() for n, p in params_after.items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(input_ids=IDS, labels=IDS).loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, snapshot[n])}
    assert changed and changed <= trainable_before
    assert any("lora_B" in n for n in changed)  # B=0 at the start, so the first step moves B (A's gradient is zero)
