"""`honing export`: the GGUF reads back into the same model (logits, tokens, chat template), adapters are merged
first, the HF directory reloads, the run record reaches the files, and every refusal is one line with nothing
written.

Measured on the tiny models here: f32 GGUF logits equal the source exactly (max |Δ| 0.0); f16 max |Δ| 2.5e-4 on
the 400-token model (logits up to 0.65; 3.8e-4 on the 49k-vocabulary one, logits up to 1.2). The slow test on the
embedded model: f16 max |Δ| 0.041 (logits up to 38), every greedy token the same.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from honing.config import AdapterConfig, ModelConfig
from honing.config.export import ExportConfig
from honing.errors import HoningError, ModelError
from honing.models.gguf_export import (chatml_default_system, modelfile, pre_tokenizer_name, rotary_permute,
                                       vocabulary, write_gguf)
from honing.stages.export import export

IDS = torch.tensor([[1, 17, 230, 4000, 42, 9, 77, 2, 500, 600], [3, 3, 3, 500, 600, 700, 800, 1, 2, 5]])
SMALL_IDS = torch.tensor([[0, 17, 230, 42, 9, 77, 300, 5], [3, 3, 100, 200, 250, 1, 2, 5]])
TEXTS = ["hello world", "Hello, World! 123 ünïcödé 🦙", "<|im_start|>user\nhi<|im_end|>\n", "  spaces  x\n\nend"]
F32_ATOL = 1e-5
F16_ATOL = 2e-3
"""f16 rounding of every matrix; measured 2.5e-4 on the small model (logits up to 0.65)."""


def logits(model, ids=IDS) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits  # (B, T, V)


def read_back(directory: Path, name: str = "model.gguf"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(directory, gguf_file=name)


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny ChatML model exported in both formats, GGUF in f32."""
    out = tmp_path_factory.mktemp("export") / "tiny"
    export(ExportConfig(model=ModelConfig(path=str(tiny_model_dir)), output=str(out), gguf_dtype="f32"))
    return out


@pytest.fixture(scope="module")
def exported_back(exported):
    return read_back(exported)


@pytest.fixture(scope="module")
def small_model_dir(bare_tokenizer_dir, tmp_path_factory) -> Path:
    """A llama with the 400-token tokenizer (fast to read back) and an untied output head."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(bare_tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                         tie_word_embeddings=False, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(1)
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("small-model")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# --------------------------------------------------------------------------- round trip


def test_f32_gguf_reads_back_with_the_same_logits_tokens_and_chat_template(exported, exported_back, tiny_model,
                                                                            tokenizer):
    model, back_tokenizer = exported_back
    assert model.config.tie_word_embeddings and model.config.num_key_value_heads == 2
    torch.testing.assert_close(logits(model), logits(tiny_model), atol=F32_ATOL, rtol=0)
    for text in TEXTS:
        assert back_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"], text
    assert back_tokenizer.chat_template == tokenizer.chat_template
    chat = [{"role": "user", "content": "Where is my order?"}]
    assert back_tokenizer.apply_chat_template(chat, add_generation_prompt=True) == \
        tokenizer.apply_chat_template(chat, add_generation_prompt=True)
    for special in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(back_tokenizer, special) == getattr(tokenizer, special), special


def test_gguf_tensors_are_named_and_permuted_for_llama_cpp(exported, tiny_model):
    from gguf import GGUFReader

    reader = GGUFReader(exported / "model.gguf")
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    assert "output.weight" not in tensors, "a tied head is not written twice"
    assert {"token_embd.weight", "output_norm.weight", "blk.1.attn_q.weight", "blk.1.ffn_down.weight"} <= set(tensors)
    fields = {key: reader.fields[key].contents() for key in ("llama.block_count", "llama.attention.head_count_kv",
                                                             "llama.rope.dimension_count", "tokenizer.ggml.pre")}
    assert fields == {"llama.block_count": 2, "llama.attention.head_count_kv": 2, "llama.rope.dimension_count": 16,
                      "tokenizer.ggml.pre": "gpt-2"}
    q = tiny_model.model.layers[0].self_attn.q_proj.weight.detach()
    stored = torch.from_numpy(tensors["blk.0.attn_q.weight"].data.copy()).reshape(q.shape)
    assert not torch.equal(stored, q), "Q rows must be in llama.cpp's interleaved order"
    torch.testing.assert_close(stored, rotary_permute(q, heads=4), atol=0, rtol=0)


def test_rotary_permutation_is_what_transformers_gguf_loader_undoes():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    processor = LlamaTensorProcessor(config={"num_attention_heads": 4, "num_key_value_heads": 2})
    q, k = torch.randn(4 * 16, 64), torch.randn(2 * 16, 64)
    undone_q = processor.process(rotary_permute(q, 4).numpy(), "blk.0.attn_q.weight").weights
    undone_k = processor.process(rotary_permute(k, 2).numpy(), "blk.0.attn_k.weight").weights
    torch.testing.assert_close(torch.from_numpy(undone_q), q, atol=0, rtol=0)
    torch.testing.assert_close(torch.from_numpy(undone_k), k, atol=0, rtol=0)


def test_f16_gguf_is_within_the_measured_tolerance_and_keeps_norms_f32(small_model_dir, tmp_path):
    from gguf import GGMLQuantizationType, GGUFReader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = AutoModelForCausalLM.from_pretrained(small_model_dir, dtype=torch.float32)
    write_gguf(source, AutoTokenizer.from_pretrained(small_model_dir), tmp_path / "small.gguf", dtype="f16")
    types = {tensor.name: tensor.tensor_type for tensor in GGUFReader(tmp_path / "small.gguf").tensors}
    assert types["output.weight"] == GGMLQuantizationType.F16, "an untied head is its own tensor"
    assert types["blk.0.attn_k.weight"] == GGMLQuantizationType.F16
    assert types["blk.0.attn_norm.weight"] == GGMLQuantizationType.F32
    model, _ = read_back(tmp_path, "small.gguf")
    assert not model.config.tie_word_embeddings
    difference = (logits(model, SMALL_IDS) - logits(source, SMALL_IDS)).abs().max().item()
    assert 0 < difference < F16_ATOL


def test_hf_directory_reloads_with_the_same_logits_and_chat_template(exported, tiny_model, tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(exported / "model", dtype=torch.float32)
    torch.testing.assert_close(logits(model), logits(tiny_model), atol=0, rtol=0)
    assert AutoTokenizer.from_pretrained(exported / "model").chat_template == tokenizer.chat_template


def test_run_record_names_the_inputs_and_lineage_reaches_the_gguf(exported, tiny_model_dir):
    from honing.models.source import resolve_model_source, weight_files, weights_sha256
    from honing.registry.lineage import build_lineage
    from honing.runs import file_sha256

    record = json.loads((exported / "run.json").read_text())
    assert record["stage"] == "export" and record["status"] == "completed"
    base = next(entry for entry in record["inputs"] if entry["role"] == "base_model")
    assert base["sha256"] == weights_sha256(weight_files(tiny_model_dir))
    assert set(record["outputs"]) == {"model", "gguf", "modelfile"}
    assert Path(record["outputs"]["gguf"]) == exported / "model.gguf"
    assert record["output_sha256"]["gguf"] == file_sha256(exported / "model.gguf")
    assert record["gguf"]["tied_embeddings"] and record["gguf"]["modelfile_template"] == "chatml"
    assert resolve_model_source(ModelConfig(path=str(exported)))["path"] == str(exported / "model")
    graph = build_lineage(str(exported / "model.gguf"))
    run_node = next(node for node in graph.nodes.values() if node.kind == "run")
    assert run_node.stage == "export"
    assert any(node.kind == "model" and node.sha256 == base["sha256"] for node in graph.nodes.values())


def test_lora_adapter_is_merged_before_export(small_model_dir, bare_tokenizer_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from honing.models.adapters import apply_adapter
    from honing.models.save import save_model

    base = AutoModelForCausalLM.from_pretrained(small_model_dir, dtype=torch.float32)
    base_logits = logits(base, SMALL_IDS)
    peft_model = apply_adapter(base, AdapterConfig(method="lora", rank=4, dropout=0.0))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    expected = logits(peft_model, SMALL_IDS)
    assert not torch.allclose(expected, base_logits, atol=1e-3), "the adapter should change the outputs"
    adapter = save_model(peft_model, AutoTokenizer.from_pretrained(bare_tokenizer_dir), tmp_path / "sft")["adapter"]

    out = tmp_path / "exported"
    export(ExportConfig(model=ModelConfig(path=str(small_model_dir), adapter=adapter), output=str(out),
                        format="gguf", gguf_dtype="f32"))
    model, _ = read_back(out)
    torch.testing.assert_close(logits(model, SMALL_IDS), expected, atol=F32_ATOL, rtol=0)
    record = json.loads((out / "run.json").read_text())
    assert next(entry for entry in record["inputs"] if entry["role"] == "adapter")["sha256"]
    assert not (out / "model").exists(), "format=gguf writes no HF directory"


# --------------------------------------------------------------------------- refusals


def test_non_llama_model_is_refused_in_one_line_and_format_hf_works(bare_tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(bare_tokenizer_dir)
    qwen = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    qwen.save_pretrained(tmp_path / "qwen")
    tokenizer.save_pretrained(tmp_path / "qwen")
    out = tmp_path / "out"
    with pytest.raises(ModelError) as caught:
        export(ExportConfig(model=ModelConfig(path=str(tmp_path / "qwen")), output=str(out), format="gguf"))
    message = str(caught.value)
    assert "\n" not in message and "Qwen2ForCausalLM" in message and "format=hf" in message
    assert not out.exists() and not list(tmp_path.glob(".out*")), "nothing written"
    export(ExportConfig(model=ModelConfig(path=str(tmp_path / "qwen")), output=str(out), format="hf"))
    assert (out / "model" / "config.json").is_file() and not (out / "model.gguf").exists()


def test_existing_output_is_refused_unless_overwrite(small_model_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    cfg = ExportConfig(model=ModelConfig(path=str(small_model_dir)), output=str(out), format="hf")
    with pytest.raises(HoningError, match="already exists and is not empty.*overwrite=true"):
        export(cfg)
    assert (out / "keep.txt").read_text() == "mine"
    export(cfg.model_copy(update={"overwrite": True}))
    assert not (out / "keep.txt").exists() and (out / "model" / "config.json").is_file()
    with pytest.raises(HoningError, match="holds the model being exported"):
        export(ExportConfig(model=ModelConfig(path=str(out)), output=str(out), format="hf", overwrite=True))


def test_a_failed_export_leaves_nothing_behind(small_model_dir, tmp_path, monkeypatch):
    import honing.models.save

    def fail(*args, **kwargs):
        raise HoningError("cannot write: no space left on device")

    monkeypatch.setattr(honing.models.save, "save_model", fail)  # after the GGUF, while writing model/
    out = tmp_path / "out"
    with pytest.raises(HoningError, match="no space left"):
        export(ExportConfig(model=ModelConfig(path=str(small_model_dir)), output=str(out)))
    assert list(tmp_path.iterdir()) == [], "no output and no temporary directory"


def test_cli_refusal_is_one_line(small_model_dir, tmp_path, monkeypatch, capsys):
    from honing.cli import main
    from honing.errors import EXIT_USAGE

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    monkeypatch.setattr(sys, "argv", ["honing", "export", str(small_model_dir), "-o", str(tmp_path / "out"),
                                      "format=gguf"])
    with pytest.raises(SystemExit) as exit_code:
        main()
    err = capsys.readouterr().err
    assert exit_code.value.code == EXIT_USAGE and "Traceback" not in err
    assert len([line for line in err.splitlines() if "already exists" in line]) == 1


# --------------------------------------------------------------------------- tokenizer and Modelfile


def test_pre_tokenizer_names(tokenizer):
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
    assert pre_tokenizer_name(json.loads(tokenizer.backend_tokenizer.to_str())["pre_tokenizer"]) == "gpt-2"
    digits = {"type": "Digits", "individual_digits": True}
    assert pre_tokenizer_name({"type": "Sequence", "pretokenizers": [digits, byte_level]}) == "smollm"
    split = {"type": "Split", "pattern": {"Regex": GGUF_PRE_TOKENIZER_SPLITS["llama3"]}, "behavior": "Isolated",
             "invert": False}
    assert pre_tokenizer_name({"type": "Sequence", "pretokenizers": [split, {**byte_level, "use_regex": False}]}) \
        == "llama3"
    with pytest.raises(ModelError, match="Metaspace.*format=hf"):
        pre_tokenizer_name({"type": "Metaspace", "replacement": "▁"})
    with pytest.raises(ModelError, match="pre-tokenizer"):
        pre_tokenizer_name({**byte_level, "add_prefix_space": True})


def test_vocabulary_is_padded_to_the_embedding(bare_tokenizer_dir):
    from gguf import TokenType
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bare_tokenizer_dir)
    vocab = vocabulary(tokenizer, len(tokenizer) + 3)
    assert vocab.padded == 3 and vocab.tokens[-1] == f"[PAD{len(tokenizer) + 2}]"
    assert vocab.types[-3:] == [TokenType.UNUSED] * 3
    assert vocab.types[tokenizer.eos_token_id] == TokenType.CONTROL
    assert len(vocab.merges) > 0 and all(len(merge.split(" ")) == 2 for merge in vocab.merges)
    with pytest.raises(ModelError, match="embeds only"):
        vocabulary(tokenizer, len(tokenizer) - 1)


def test_modelfile_translates_chatml_with_its_default_system_prompt(exported, tokenizer):
    text = (exported / "Modelfile").read_text()
    assert text == modelfile(tokenizer, "model.gguf").text
    assert text.splitlines()[1] == "FROM ./model.gguf"
    assert ('TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n'
            '{{ end }}<|im_start|>assistant\n"""') in text
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in text
    assert 'PARAMETER stop "<|im_end|>"' in text and 'PARAMETER stop "<|im_start|>"' in text
    assert chatml_default_system(tokenizer) == (True, "You are a helpful AI assistant named SmolLM, trained by "
                                                      "Hugging Face")


def test_modelfile_leaves_other_templates_to_ollama(bare_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bare_tokenizer_dir)
    plain = modelfile(tokenizer, "model.gguf")
    assert plain.template == "none" and "TEMPLATE" not in plain.text and "no chat template" in plain.text
    tokenizer.chat_template = ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                               "{{ m['content'] }}<|eot_id|>{% endfor %}")
    other = modelfile(tokenizer, "model.gguf")
    assert other.template == "gguf" and "not ChatML-like" in other.text
    assert not any(line.startswith("TEMPLATE") for line in other.text.splitlines())
    assert 'PARAMETER stop "<eos>"' in other.text


# --------------------------------------------------------------------------- the embedded model


@pytest.mark.slow
def test_embedded_model_exports_to_gguf_f16(tmp_path):
    from honing.models.load import load_model

    source = load_model(ModelConfig(), dtype="float32")
    out = tmp_path / "smollm2"
    export(ExportConfig(output=str(out), format="gguf"))
    model, back_tokenizer = read_back(out)
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    ids = torch.tensor([source.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                                             return_dict=True)["input_ids"]])
    assert back_tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                              return_dict=True)["input_ids"] == ids[0].tolist()
    expected, got = logits(source.model, ids), logits(model, ids)
    assert (got - expected).abs().max().item() < 0.1  # measured 0.041 (logits up to 38)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
    assert "SmolLM" in (out / "Modelfile").read_text()


def test_registry_reference_to_an_adapter_run_is_exported_merged(small_model_dir, tmp_path, monkeypatch):
    from honing.config import SFTConfig, load_config
    from honing.models.load import load_model
    from honing.registry import actions
    from honing.registry.store import Registry
    from honing.stages.sft import sft

    monkeypatch.setenv("HONING_REGISTRY", str(tmp_path / "registry.sqlite"))
    monkeypatch.setenv("HONING_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"say {word}"},
                                                     {"role": "assistant", "content": word}]}) + "\n"
                            for word in ("hello", "world", "thanks", "fine")))
    sft(load_config(SFTConfig, None, [f"model.path={small_model_dir}", f"data.train={data}",
                                      f"output.dir={tmp_path / 'sft'}", "data.max_length=128", "train.max_steps=2",
                                      "train.micro_batch_size=4", "train.lr=0.05", "adapter.rank=4",
                                      "output.tensorboard=false"]))
    with Registry() as registry:
        actions.register(registry, tmp_path / "sft", "bot", alias="prod")
    out = tmp_path / "exported"
    export(ExportConfig(model=ModelConfig(path="registry:bot@prod"), output=str(out), format="gguf", gguf_dtype="f32"))
    expected = load_model(ModelConfig(path="registry:bot@prod"), dtype="float32").model  # base + adapter, merged
    base_model = load_model(ModelConfig(path=str(small_model_dir)), dtype="float32").model
    assert not torch.allclose(logits(expected, SMALL_IDS), logits(base_model, SMALL_IDS), atol=1e-4), "trained"
    model, _ = read_back(out)
    torch.testing.assert_close(logits(model, SMALL_IDS), logits(expected, SMALL_IDS), atol=F32_ATOL, rtol=0)
    record = json.loads((out / "run.json").read_text())
    base = next(entry for entry in record["inputs"] if entry["role"] == "base_model")
    assert base["registry"]["ref"] == "registry:bot@prod" and Path(base["run"]).resolve() == tmp_path / "sft"
    assert any(entry["role"] == "adapter" for entry in record["inputs"])
    assert record["parent"]["stage"] == "sft"


def test_weights_beyond_float16_are_refused_for_f16_and_export_in_f32(small_model_dir, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    big = tmp_path / "big"
    shutil.copytree(small_model_dir, big)
    [weights] = list(big.glob("*.safetensors"))
    state = load_file(weights)
    name = next(k for k in state if k.endswith("mlp.down_proj.weight"))
    state[name] = state[name].clone()
    state[name][0, 0] = 1e5  # finite in float32, inf in float16
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(HoningError, match="beyond float16's range.*gguf_dtype=f32"):
        export(ExportConfig(model=ModelConfig(path=str(big)), output=str(tmp_path / "f16"), format="gguf"))
    assert not (tmp_path / "f16").exists()
    export(ExportConfig(model=ModelConfig(path=str(big)), output=str(tmp_path / "f32"), format="gguf",
                        gguf_dtype="f32"))
    assert torch.isfinite(state[name]).all() and (tmp_path / "f32" / "model.gguf").is_file()
