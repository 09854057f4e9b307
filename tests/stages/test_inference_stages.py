"""generate, chat and merge on tiny models: files in, files out, lineage recorded."""

from __future__ import annotations

import io
import json

import pytest
import torch

from honing.config import ChatConfig, GenerateConfig, MergeConfig, load_config
from honing.errors import DataError
from honing.data.prompts import read_prompts
from honing.models.chat import ChatModel
from honing.stages.chat import chat_loop
from honing.stages.generate import generate_file
from honing.stages.merge import merge


def test_generate_stage_writes_a_response_per_record(tiny_model_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    rows = [
        {"prompt": "Add 2 and 3.", "id": 1},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "old answer"}], "id": 2},
        {"instruction": "Convert hours to minutes.", "input": "3 hours", "id": 3},
        {"conversations": [{"from": "human", "value": "Name a colour."}, {"from": "chatgpt", "value": "Red."}], "id": 4},
    ]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out" / "answers.jsonl"
    cfg = load_config(GenerateConfig, None, [f"model.path={tiny_model_dir}", f"prompts={prompts}", f"output={out}",
                                             "sampling.max_new_tokens=5", "batch_size=3"])
    result = generate_file(cfg)
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [w["id"] for w in written] == [1, 2, 3, 4] and result["prompts"] == 4
    assert all(isinstance(w["response"], str) for w in written)
    assert not list(out.parent.glob(".*tmp"))


def test_prompt_files_report_file_and_line(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("first\n\nsecond\n")
    assert [p for _, p in read_prompts(txt)] == ["first", "second"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"question": "where is the prompt?"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: no prompt found"):
        read_prompts(bad)
    with pytest.raises(DataError, match="does not exist"):
        read_prompts(tmp_path / "missing.txt")


def test_chat_loop_keeps_the_conversation(tiny_model, tokenizer):
    cfg = ChatConfig(sampling={"max_new_tokens": 4, "temperature": 0.0})
    stdin = io.StringIO("hello\n/system be terse\nhi again\nand more\n/exit\n")
    stdout = io.StringIO()
    conversation = chat_loop(ChatModel.wrap(tiny_model, tokenizer, batch_size=1), cfg, stdin, stdout)
    assert [m["role"] for m in conversation] == ["user", "assistant", "user", "assistant"]
    assert conversation[0]["content"] == "hi again"  # /system cleared the first exchange
    text = stdout.getvalue()
    assert text.count("model> ") == 3 and "system prompt set" in text


def test_chat_loop_ends_on_eof(tiny_model, tokenizer):
    assert chat_loop(ChatModel.wrap(tiny_model, tokenizer), ChatConfig(), io.StringIO(""), io.StringIO()) == []


def test_merge_stage_writes_loadable_model_with_lineage(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from honing.config import AdapterConfig, ModelConfig
    from honing.models.adapters import apply_adapter
    from honing.models.load import load_model
    from honing.models.save import save_model

    loaded = load_model(ModelConfig(path=str(tiny_model_dir)))
    model = apply_adapter(loaded.model, AdapterConfig(rank=4))
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.05)
    save_model(model, loaded.tokenizer, tmp_path / "run", save="adapter")
    out = tmp_path / "merged"
    merge(load_config(MergeConfig, None, [f"model.adapter={tmp_path / 'run'}", f"output={out}"]))
    merged = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([[1, 5, 9, 13]])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, model(input_ids=ids).logits, atol=1e-5, rtol=1e-4)
    record = json.loads((out / "run.json").read_text())
    inputs = {i["role"]: i for i in record["inputs"]}
    assert inputs["adapter"]["sha256"] and inputs["base_model"]["sha256"]
    assert record["status"] == "completed"
