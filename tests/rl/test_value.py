"""honing.rl.value: the value head starts at zero (first advantages are plain returns) and saves whole."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from honing.rl.value import VALUE_HEAD_FILE, build_value_head, save_value_head


def test_value_head_is_zero_initialised_on_the_hidden_size(tiny_model):
    head = build_value_head(tiny_model, torch.device("cpu"))
    assert head.in_features == tiny_model.config.hidden_size == 64 and head.out_features == 1
    assert torch.count_nonzero(head.weight) == 0 and torch.count_nonzero(head.bias) == 0
    hidden = torch.randn(2, 5, 64)  # (B, T, H)
    assert torch.equal(head(hidden), torch.zeros(2, 5, 1))


def test_value_head_reads_the_base_model_under_a_peft_wrapper(tiny_model):
    from peft import LoraConfig, get_peft_model

    wrapped = get_peft_model(tiny_model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert build_value_head(wrapped, torch.device("cpu")).in_features == 64


def test_save_round_trip(tiny_model, tmp_path):
    head = build_value_head(tiny_model, torch.device("cpu"))
    with torch.no_grad():
        head.weight.copy_(torch.arange(64, dtype=torch.float32).unsqueeze(0) / 10)
        head.bias.fill_(0.5)
    path = save_value_head(head, tmp_path)
    assert path == tmp_path / VALUE_HEAD_FILE
    assert sorted(p.name for p in tmp_path.iterdir()) == [VALUE_HEAD_FILE]  # no temporary file left
    saved = load_file(str(path))
    assert set(saved) == {"weight", "bias"}
    fresh = build_value_head(tiny_model, torch.device("cpu"))
    fresh.load_state_dict(saved)
    hidden = torch.randn(3, 64)
    assert torch.equal(fresh(hidden), head(hidden))
    assert fresh(torch.ones(1, 64)).item() == pytest.approx(sum(range(64)) / 10 + 0.5, rel=1e-6)
