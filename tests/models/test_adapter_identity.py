"""An adapter names its base portably: trained on the embedded model (de-quantised into this
machine's cache), it records the upstream id and the hash, not the cache path, and it opens on
another machine (another HONING_CACHE, another working directory)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from honing.config import AdapterConfig, ModelConfig
from honing.errors import ModelError
from honing.models.adapters import BASE_FILE, apply_adapter, read_adapter_base
from honing.models.load import load_adapter_model, load_model
from honing.models.save import save_model
from honing.models.source import EMBEDDED_MODEL_ID, embedded_gguf, gguf_model_cache, resolve_base

IDS = torch.tensor([[1, 17, 230, 4000, 42, 9, 77]])


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits  # (B, T, V)


def simulate_embedded_cache(tiny_model_dir, cache, monkeypatch):
    """The tiny model stands in for the embedded GGUF's de-quantised cache under `cache`."""
    monkeypatch.setenv("HONING_CACHE", str(cache))
    target = gguf_model_cache(embedded_gguf())
    shutil.copytree(tiny_model_dir, target)
    return target


@pytest.fixture()
def embedded_adapter(tiny_model_dir, tmp_path, monkeypatch):
    """(adapter directory, the logits it gives) of an adapter trained on the 'embedded' model."""
    cache = simulate_embedded_cache(tiny_model_dir, tmp_path / "alice-cache", monkeypatch)
    monkeypatch.chdir(tmp_path)
    loaded = load_model(ModelConfig())
    assert loaded.source["kind"] == "embedded"
    model = apply_adapter(loaded.model, AdapterConfig(rank=4, dropout=0.0))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(0)) * 0.1)
    expected = logits(model)
    assert model.get_base_model().config._name_or_path == str(cache)  # what PEFT alone would record
    save_model(model, loaded.tokenizer, tmp_path / "alice" / "sft", save="adapter")
    return tmp_path / "alice" / "sft" / "adapter", expected, loaded.source["sha256"]


def test_adapter_on_the_embedded_model_records_no_local_path(embedded_adapter, tmp_path):
    adapter_dir, _, base_sha = embedded_adapter
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == EMBEDDED_MODEL_ID
    identity = json.loads((adapter_dir / BASE_FILE).read_text())
    assert identity == {"model_id": EMBEDDED_MODEL_ID, "path": None, "sha256": base_sha}
    for name in ("adapter_config.json", BASE_FILE):
        text = (adapter_dir / name).read_text()
        assert str(tmp_path) not in text and ".cache" not in text, name


def test_adapter_opens_with_another_cache_and_working_directory(embedded_adapter, tiny_model_dir, tmp_path, monkeypatch):
    adapter_dir, expected, _ = embedded_adapter
    colleague = tmp_path / "bob"
    shutil.copytree(adapter_dir, colleague / "adapter")
    shutil.rmtree(tmp_path / "alice-cache")  # nothing of the first machine is left
    simulate_embedded_cache(tiny_model_dir, tmp_path / "bob-cache", monkeypatch)
    monkeypatch.chdir(colleague)

    loaded = load_adapter_model(ModelConfig(), "adapter")
    torch.testing.assert_close(logits(loaded.model), expected, atol=1e-5, rtol=0)
    assert loaded.source["kind"] == "embedded"
    (colleague / "run.json").write_text("{}")  # as a run directory holding only an adapter
    from_run = load_model(ModelConfig(path=str(colleague)))
    torch.testing.assert_close(logits(from_run.model), expected, atol=1e-5, rtol=0)


def test_old_adapter_naming_a_cache_path_still_opens(embedded_adapter, tiny_model_dir, tmp_path, monkeypatch):
    adapter_dir, expected, _ = embedded_adapter
    (adapter_dir / BASE_FILE).unlink()
    config_file = adapter_dir / "adapter_config.json"
    config = json.loads(config_file.read_text())
    old_cache_path = f"/home/alice/.cache/honing/models/{gguf_model_cache(embedded_gguf()).name}"
    config["base_model_name_or_path"] = old_cache_path
    config_file.write_text(json.dumps(config))
    assert read_adapter_base(adapter_dir) == {"model_id": None, "path": old_cache_path, "sha256": None}
    simulate_embedded_cache(tiny_model_dir, tmp_path / "bob-cache", monkeypatch)
    torch.testing.assert_close(logits(load_adapter_model(ModelConfig(), adapter_dir).model), expected, atol=1e-5, rtol=0)


def test_a_hash_finds_the_local_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HONING_CACHE", str(tmp_path / "cache"))
    from honing.models.source import weights_sha256

    sha = weights_sha256([embedded_gguf()])
    assert resolve_base({"model_id": None, "path": "/elsewhere/smollm2.gguf", "sha256": sha}, tmp_path) is None  # the embedded model


def test_an_unknown_base_is_one_line_that_says_how_to_pass_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HONING_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelError) as caught:
        resolve_base({"model_id": None, "path": "/elsewhere/llama-1b", "sha256": "ab" * 32}, tmp_path / "adapter")
    message = str(caught.value)
    assert "\n" not in message and "/elsewhere/llama-1b" in message and "abababababab" in message
    assert "model.path=" in message
