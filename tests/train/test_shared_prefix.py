"""Shared-prefix training against the per-row computation: the same losses and gradients, for a full
model and for LoRA, SFT and DPO; the planning rules (never a target in a shared prefix, packed rows
never shared); and a tiny `honing sft` run with train.shared_prefix auto against off.

Tolerance: fp32 on CPU, losses and every trainable parameter's gradient agree to rtol 1e-5 and
atol 1e-6 (the shared path sums the rows' prefix gradients in another order and its attention runs
with an explicit mask; measured differences are about 1e-7 relative). DPO's rewards, differences of
summed log-probs of about -50, agree to 1e-5 absolute."""

from __future__ import annotations

import json
import random

import pytest
import torch

from honing.config import AdapterConfig, SFTConfig, load_config
from honing.data.packing import collate_packed, collate_padded, pack
from honing.data.types import IGNORE_INDEX, TokenizedExample
from honing.train.objectives.causal_lm import TargetedCausalLM
from honing.train.objectives.preference import PreferenceExample, PreferenceObjective, collate_preference
from honing.train.shared_prefix import backbone_with_shared_prefix, plan_prefix, whole_batch
from tests.train.helpers import tiny_llama

TOLERANCE = dict(rtol=1e-5, atol=1e-6)
VOCAB = 97


def tokens(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(3, VOCAB) for _ in range(n)]


def sft_rows(prefix_len: int = 24, tails=(5, 12, 9, 30), prompt_tail: int = 2, seed: int = 0) -> list[TokenizedExample]:
    """Rows that begin with the same `prefix_len` prompt tokens, then `prompt_tail` more prompt tokens of
    their own and an answer; different lengths, so the batch is right-padded."""
    rng = random.Random(seed)
    prefix = tokens(rng, prefix_len)
    rows = []
    for n in tails:
        ids = prefix + tokens(rng, prompt_tail + n)
        rows.append(TokenizedExample(ids, [IGNORE_INDEX] * (prefix_len + prompt_tail) + ids[prefix_len + prompt_tail :]))
    return rows


def lora(model):
    """A LoRA policy whose B matrices are not zero, so every adapter matrix has a gradient."""
    from honing.models.adapters import apply_adapter

    torch.manual_seed(1)
    model = apply_adapter(model, AdapterConfig(method="lora", rank=4, alpha=8, dropout=0.0, target_modules="all-linear"))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(std=0.1)
    return model


def build(kind: str):
    model = tiny_llama(VOCAB)
    return lora(model) if kind == "lora" else model


def loss_and_grads(model, objective, batch):
    model.zero_grad(set_to_none=True)
    out = objective(**batch)
    out[0].backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return out, grads


def assert_same(reference, shared):
    (ref_out, ref_grads), (out, grads) = reference, shared
    torch.testing.assert_close(out[0], ref_out[0], **TOLERANCE)
    assert int(out[1]) == int(ref_out[1])
    assert ref_grads.keys() == grads.keys() and ref_grads
    assert all(float(g.abs().sum()) > 0 for g in ref_grads.values())
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], **TOLERANCE, msg=lambda m: f"{name}: {m}")


# --------------------------------------------------------------------------- SFT


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_sft_loss_and_gradients_equal_per_row(kind):
    batch = collate_padded(sft_rows(), pad_id=0)
    model = build(kind)
    objective = TargetedCausalLM(model, loss_kernel="plain")
    reference = loss_and_grads(model, objective, batch)
    objective.shared_prefix = True
    plan = objective.prefix_plan(batch)
    assert plan is not None and plan.computed_once == 23 and plan.per_row == 4 * 23  # 24 common tokens, less one
    assert_same(reference, loss_and_grads(model, objective, batch))


def test_sft_equal_with_the_chunked_kernel_and_rows_that_share_everything():
    rows = sft_rows(tails=(7, 7, 7))
    rows = [rows[0], rows[0], rows[1]]  # two identical rows: each still predicts its first target itself
    batch = collate_padded(rows, pad_id=0)
    model = build("full")
    objective = TargetedCausalLM(model, loss_kernel="chunked")
    reference = loss_and_grads(model, objective, batch)
    objective.shared_prefix = True
    assert objective.prefix_plan(batch).computed_once == 23
    assert_same(reference, loss_and_grads(model, objective, batch))


def test_wrong_positions_or_mask_would_differ():
    """The equality above can fail: the suffix with positions restarting at 0, or attending to none of
    the prefix, gives another loss."""
    batch = collate_padded(sft_rows(), pad_id=0)
    model = build("full")
    backbone = model.model
    with torch.no_grad():
        plan = plan_prefix(batch["input_ids"], batch["labels"], batch["attention_mask"], whole_batch(4))
        right, labels = backbone_with_shared_prefix(backbone, plan, batch["input_ids"], batch["labels"],
                                                    batch["attention_mask"], batch["position_ids"])
        restarted = torch.zeros_like(batch["position_ids"])
        restarted[:, plan.computed_once :] = torch.arange(batch["input_ids"].shape[1] - plan.computed_once)
        shifted, _ = backbone_with_shared_prefix(backbone, plan, batch["input_ids"], batch["labels"],
                                                 batch["attention_mask"], restarted)
        whole = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         position_ids=batch["position_ids"]).last_hidden_state
        alone = backbone(input_ids=batch["input_ids"][:, 23:], attention_mask=batch["attention_mask"][:, 23:],
                         position_ids=batch["position_ids"][:, 23:]).last_hidden_state
    real = batch["attention_mask"][:, 23:].bool()
    torch.testing.assert_close(right[real], whole[:, 23:][real], **TOLERANCE)
    assert torch.equal(labels, batch["labels"][:, 23:])
    assert not torch.allclose(shifted[real], whole[:, 23:][real], atol=1e-3)
    assert not torch.allclose(alone[real], whole[:, 23:][real], atol=1e-3)


def test_a_target_inside_the_would_be_prefix_is_not_shared():
    rows = sft_rows()
    early = rows[2]
    labels = list(early.labels)
    labels[10] = early.input_ids[10]  # a target predicted from position 9
    rows[2] = TokenizedExample(early.input_ids, labels)
    batch = collate_padded(rows, pad_id=0)
    plan = plan_prefix(batch["input_ids"], batch["labels"], batch["attention_mask"], whole_batch(4), min_tokens=4)
    assert plan.computed_once == 9  # positions 0..8; position 9 predicts the target, so the row computes it
    assert plan_prefix(batch["input_ids"], batch["labels"], batch["attention_mask"], whole_batch(4)) is None  # < 16
    model = build("full")
    objective = TargetedCausalLM(model, loss_kernel="plain")
    reference = loss_and_grads(model, objective, batch)
    objective.shared_prefix = True
    assert objective.prefix_plan(batch) is None
    assert_same(reference, loss_and_grads(model, objective, batch))


def test_rows_without_a_common_start_or_packed_rows_are_not_shared():
    rows = sft_rows()
    rows[1] = TokenizedExample([5] + rows[1].input_ids[1:], rows[1].labels)  # differs at token 0
    batch = collate_padded(rows, pad_id=0)
    assert plan_prefix(batch["input_ids"], batch["labels"], batch["attention_mask"], whole_batch(4)) is None
    packed = collate_packed(pack(sft_rows(), 128, pad_id=0))
    objective = TargetedCausalLM(build("full"), loss_kernel="plain", shared_prefix=True)
    assert "attention_mask" not in packed and objective.prefix_plan(packed) is None


# --------------------------------------------------------------------------- DPO


def preference_pairs(common: int, prompt: int, pairs: int = 3, seed: int = 0) -> list[PreferenceExample]:
    """Pairs whose prompts start with `common` tokens shared by all pairs and `prompt` of their own."""
    rng = random.Random(seed)
    system = tokens(rng, common)
    out = []
    for i in range(pairs):
        context = system + tokens(rng, prompt)
        chosen, rejected = (context + tokens(rng, rng.randint(3, 12)) for _ in range(2))
        out.append(PreferenceExample(*(TokenizedExample(ids, [IGNORE_INDEX] * len(context) + ids[len(context) :])
                                       for ids in (chosen, rejected))))
    return out


@pytest.mark.parametrize("kind,loss,common,prompt,groups", [
    ("lora", "sigmoid", 0, 24, 3),  # each pair shares its own prompt (reference: the adapter switched off)
    ("lora", "sigmoid", 30, 4, 1),  # a system prompt common to every row saves more than the pairs' prompts
    ("full", "simpo", 0, 20, 3),
])
def test_preference_loss_and_gradients_equal_per_row(kind, loss, common, prompt, groups):
    batch = collate_preference(preference_pairs(common, prompt), pad_id=0)
    model = build(kind)
    objective = PreferenceObjective(model, loss, beta=0.5)
    reference = loss_and_grads(model, objective, batch)
    objective.shared_prefix = True
    plan = objective.prefix_plan(batch)
    assert plan is not None and len(plan.leaders) == groups
    shared = loss_and_grads(model, objective, batch)
    assert_same(reference, shared)
    for name in reference[0][2]:  # rewards are differences of summed log-probs (about -50): compared absolutely
        torch.testing.assert_close(shared[0][2][name], reference[0][2][name], rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- the engine and a run


def write_chat(path, n: int = 16) -> None:
    system = ("You are the support assistant of a small shop. Answer in one short sentence, politely, and never "
              "promise a refund that the policy does not allow.")
    rng = random.Random(0)
    topics = ["my parcel", "the invoice", "a broken lamp", "my password", "the opening hours", "a gift card"]
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            topic = rng.choice(topics)
            record = {"messages": [{"role": "system", "content": system},
                                   {"role": "user", "content": f"Question {i} about {topic}?"},
                                   {"role": "assistant", "content": f"Here is the answer about {topic}, number {i}."}]}
            handle.write(json.dumps(record) + "\n")


def test_sft_run_auto_equals_off_and_records_the_saving(tiny_model_dir, tmp_path, monkeypatch):
    from honing.stages.sft import sft

    monkeypatch.setenv("HONING_CACHE", str(tmp_path / "cache"))
    write_chat(tmp_path / "chat.jsonl")
    records = {}
    for mode in ("off", "auto"):
        out = tmp_path / mode
        sft(load_config(SFTConfig, None, [
            f"model.path={tiny_model_dir}", f"data.train={tmp_path / 'chat.jsonl'}", f"output.dir={out}",
            "data.validation_split=0.25", "data.max_length=128", "train.max_steps=3", "train.micro_batch_size=4",
            "train.eval_every=3", "train.save_every=3", "train.lr=1e-2", "adapter.rank=4", "adapter.dropout=0",
            "output.tensorboard=false", f"train.shared_prefix={mode}",
        ]))
        records[mode] = json.loads((out / "run.json").read_text())
    off, auto = records["off"], records["auto"]
    assert off["plan"]["shared_prefix"] == "off" and auto["plan"]["shared_prefix"].startswith("auto")
    assert auto["metrics"]["train_loss"] == pytest.approx(off["metrics"]["train_loss"], rel=1e-4)
    assert auto["metrics"]["val_loss"] == pytest.approx(off["metrics"]["val_loss"], rel=1e-4)
    assert "prefix_tokens_computed_once" not in off["metrics"]
    once, per_row = auto["metrics"]["prefix_tokens_computed_once"], auto["metrics"]["prefix_tokens_per_row"]
    assert once >= 3 * 16 and per_row == 4 * once  # 3 steps of one micro-batch of 4 rows
    share = auto["metrics"]["prefix_tokens_saved_share"]
    assert share == pytest.approx((per_row - once) / auto["metrics"]["tokens_seen"], abs=1e-4) and share > 0.2


def test_auto_does_not_apply_with_activation_checkpointing():
    from honing.config import TrainConfig
    from honing.train.distributed import Dist
    from honing.train.engine import enable_shared_prefix

    model = tiny_llama(VOCAB)
    objective = TargetedCausalLM(model, loss_kernel="plain")
    said = enable_shared_prefix(objective, model, TrainConfig(activation_checkpointing=True), Dist())
    assert said.startswith("off: train.activation_checkpointing") and not objective.shared_prefix
    assert enable_shared_prefix(objective, model, TrainConfig(), Dist()).startswith("auto") and objective.shared_prefix
    assert enable_shared_prefix(objective, model, TrainConfig(shared_prefix="off"), Dist()) == "off"
    assert not objective.shared_prefix


def test_grpo_group_prompt_computed_once_equals_per_row(tiny_model):
    """Rows of two GRPO groups (each group: one prompt, different completions, right-padded): log-probs,
    entropies and the gradient of a policy-style loss equal the per-row computation."""
    from honing.train.objectives.policy import SamplingTransform, _group_plan, token_outputs

    torch.manual_seed(3)
    vocab = tiny_model.config.vocab_size
    prompts = [torch.randint(5, vocab, (24,)).tolist(), torch.randint(5, vocab, (30,)).tolist()]
    rows, masks = [], []
    for prompt in prompts:
        for length in (5, 9, 3):
            completion = torch.randint(5, vocab, (length,)).tolist()
            rows.append(prompt + completion)
            masks.append([0] * len(prompt) + [1] * length)
    width = max(len(r) for r in rows)
    input_ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    response = torch.tensor([m + [0] * (width - len(m)) for m in masks])
    plan = _group_plan(input_ids, attention, response.bool())
    assert plan is not None and plan.computed_once == 23 + 29 and plan.per_row == 3 * 23 + 3 * 29
    transform = SamplingTransform(temperature=0.9, top_k=50)
    results = []
    for share in (False, True):
        tiny_model.zero_grad()
        out = token_outputs(tiny_model, input_ids, attention, response.float(), transform, share_prefix=share)
        (out.logps * torch.linspace(-1, 1, out.logps.numel()).view_as(out.logps)).sum().backward()
        grads = {n: p.grad.clone() for n, p in tiny_model.named_parameters() if p.grad is not None}
        results.append((out.logps.detach(), out.entropy.detach(), grads))
    (plain_logps, plain_entropy, plain_grads), (shared_logps, shared_entropy, shared_grads) = results
    torch.testing.assert_close(shared_logps, plain_logps, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(shared_entropy, plain_entropy, rtol=1e-5, atol=1e-6)
    assert shared_grads.keys() == plain_grads.keys()
    for name in plain_grads:
        torch.testing.assert_close(shared_grads[name], plain_grads[name], rtol=1e-5, atol=1e-6, msg=name)
