"""Saving adapters and models, reloading them, merging: the outputs must not change."""

from __future__ import annotations

import json

import pytest
import torch

from honing.config import AdapterConfig, MergeConfig, ModelConfig
from honing.models.adapters import apply_adapter
from honing.models.load import load_adapter_model, load_model
from honing.models.save import merge_adapter, save_model

IDS = torch.tensor([[1, 17, 230, 4000, 42, 9, 77], [1, 3, 3, 500, 600, 700, 800]])


def logits(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits  # (B, T, V)


def trained_adapter(tiny_model, method: str):
    """A LoRA/DoRA model whose adapter actually changes the outputs (lora_B starts at zero)."""
    model = apply_adapter(tiny_model, AdapterConfig(method=method, rank=4, dropout=0.0))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return model


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_adapter_save_load_merge_same_outputs(tiny_model_dir, tiny_model, tokenizer, tmp_path, method):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_logits = logits(tiny_model)
    model = trained_adapter(tiny_model, method)
    expected = logits(model)
    assert not torch.allclose(expected, base_logits, atol=1e-3), "the adapter should change the outputs"

    outputs = save_model(model, tokenizer, tmp_path / "run", save="both")
    assert set(outputs) == {"adapter", "model"}
    adapter_dir = tmp_path / "run" / "adapter"
    assert (adapter_dir / "adapter_config.json").is_file() and (adapter_dir / "adapter_model.safetensors").is_file()
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir.resolve())

    # the in-memory model is untouched and still trainable
    assert isinstance(model, PeftModel)
    torch.testing.assert_close(logits(model), expected, atol=1e-5, rtol=0)
    assert any(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)

    reloaded = load_adapter_model(ModelConfig(path=str(tiny_model_dir)), adapter_dir)
    torch.testing.assert_close(logits(reloaded.model), expected, atol=1e-5, rtol=0)
    assert len(reloaded.source["adapter_sha256"]) == 64

    # plain libraries read what we wrote
    plain_base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    plain_peft = PeftModel.from_pretrained(plain_base, adapter_dir)
    torch.testing.assert_close(logits(plain_peft), expected, atol=1e-5, rtol=0)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    assert "quantization_config" not in json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    torch.testing.assert_close(logits(merged), expected, atol=1e-5, rtol=0)

    # a run directory holding only an adapter loads as base + adapter
    (tmp_path / "run" / "run.json").write_text("{}")
    import shutil

    shutil.rmtree(tmp_path / "run" / "model")
    from_run = load_model(ModelConfig(path=str(tmp_path / "run")))
    torch.testing.assert_close(logits(from_run.model), expected, atol=1e-5, rtol=0)
    assert from_run.source["adapter"] == str(adapter_dir)


def test_merged_only_and_merge_adapter(tiny_model_dir, tiny_model, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    model = trained_adapter(tiny_model, "lora")
    expected = logits(model)
    outputs = save_model(model, tokenizer, tmp_path / "run", save="merged")
    assert set(outputs) == {"model"} and not (tmp_path / "run" / "adapter").exists()
    assert not any(p.name.startswith(".") for p in (tmp_path / "run").iterdir()), "no temporary leftovers"
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(outputs["model"])), expected, atol=1e-5, rtol=0)

    save_model(model, tokenizer, tmp_path / "run2", save="adapter")
    # model.path unset: the base named in adapter_config.json is used; the run dir is accepted too
    out = merge_adapter(ModelConfig(), tmp_path / "run2", tmp_path / "merged", dtype="bfloat16")
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert merged.dtype == torch.bfloat16
    torch.testing.assert_close(logits(merged.float()), expected, atol=0.1, rtol=0.05)


def test_full_model_save(tiny_model, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = apply_adapter(tiny_model, AdapterConfig(method="full"))
    expected = logits(model)
    outputs = save_model(model, tokenizer, tmp_path / "run", save="adapter")
    assert outputs == {"model": str(tmp_path / "run" / "model")}
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(outputs["model"])), expected)
    assert AutoTokenizer.from_pretrained(outputs["model"]).chat_template == tokenizer.chat_template
    # saving again replaces the directory atomically
    save_model(model, tokenizer, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["model"]


def test_merge_stage(tiny_model_dir, tiny_model, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    from honing.stages.merge import run

    model = trained_adapter(tiny_model, "lora")
    expected = logits(model)
    save_model(model, tokenizer, tmp_path / "sft", save="adapter")
    out = tmp_path / "merged"
    result = run(MergeConfig(model=ModelConfig(path=str(tiny_model_dir), adapter=str(tmp_path / "sft" / "adapter")),
                             output=str(out)))
    assert result["output"] == str(out)
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(out)), expected, atol=1e-5, rtol=0)
    record = json.loads((out / "run.json").read_text())
    roles = {entry["role"]: entry for entry in record["inputs"]}
    assert roles["base_model"]["path"] == str(tiny_model_dir) and len(roles["base_model"]["sha256"]) == 64
    assert roles["adapter"]["path"] == str(tmp_path / "sft" / "adapter") and len(roles["adapter"]["sha256"]) == 64
    # the merged directory (which now holds run.json) still loads through honing
    again = load_model(ModelConfig(path=str(out)))
    torch.testing.assert_close(logits(again.model), expected, atol=1e-5, rtol=0)
