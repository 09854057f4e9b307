"""honing.evals.runner: one model on one task on a tiny random model. Raw outputs match a direct
computation (generation through ChatModel, log-likelihoods and losses through plain transformers),
and a second run is answered from the cache without loading the model."""

from __future__ import annotations

import json

import pytest
import torch

from honing.config import EvalConfig, EvalModelConfig, EvalTaskConfig
from honing.evals.cache import AnswerCache
from honing.evals.runner import ModelUnderTest, model_fingerprint, run_task, task_key
from honing.evals.tasks import load_examples
from honing.models.chat import ChatModel


def _task(tmp_path, records, **fields) -> EvalTaskConfig:
    path = tmp_path / f"{fields['name']}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return EvalTaskConfig(data=str(path), **fields)


def _cfg(model_cfg, task, **update) -> EvalConfig:
    return EvalConfig(models=[model_cfg], tasks=[task], sampling={"max_new_tokens": 4}, batch_size=2, **update)


def test_generation_matches_chat_model_and_is_reused_from_the_cache(tiny_model_dir, tmp_path):
    model_cfg = EvalModelConfig(name="tiny", path=str(tiny_model_dir))
    task = _task(tmp_path, [{"prompt": "hello", "reference": "x"}, {"prompt": "two plus two", "reference": "4"},
                            {"prompt": "bye", "reference": "y"}], name="gen", metrics=["exact_match"])
    cfg = _cfg(model_cfg, task)
    examples = load_examples(task)
    cache = AnswerCache(tmp_path / "cache.sqlite")

    first = run_task(ModelUnderTest(model_cfg), task, examples, cfg, cache)
    expected = ChatModel.load(model_cfg, role="reference").complete([e.prompt for e in examples], cfg.sampling)
    assert [r["answer"] for r in first.raw] == [c.text for c in expected]
    assert first.cached == 0 and all(r["new_tokens"] <= 4 for r in first.raw)

    again = ModelUnderTest(model_cfg)
    second = run_task(again, task, examples, cfg, cache)
    assert second.raw == first.raw and second.cached == 3 and second.seconds == 0.0
    assert again._chat is None  # nothing was asked of the model

    longer = _cfg(model_cfg, task.model_copy(update={"max_new_tokens": 5}))
    assert task_key(task, cfg) != task_key(longer.tasks[0], longer)
    third = run_task(again, longer.tasks[0], examples, longer, cache)
    assert third.cached == 0  # another task setting is another cache entry
    cache.close()


def test_scoring_settings_do_not_change_the_task_key(tmp_path):
    task = EvalTaskConfig(name="g", data="x.jsonl", metrics=["exact_match"])
    cfg = EvalConfig(tasks=[task])
    rescored = task.model_copy(update={"metrics": ["token_f1"], "min": {"token_f1": 0.5}})
    assert task_key(task, cfg) == task_key(rescored, cfg)
    assert task_key(task, cfg) != task_key(task.model_copy(update={"system_prompt": "be brief"}), cfg)


def test_fingerprint_follows_weight_content(tiny_model_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    same = model_fingerprint(EvalModelConfig(name="a", path=str(tiny_model_dir)))
    assert model_fingerprint(EvalModelConfig(name="b", path=str(copy))) == same  # content, not the path
    # Loaded another way, the same weights may answer differently: not the same cached answers.
    assert model_fingerprint(EvalModelConfig(name="c", path=str(copy), dtype="bfloat16")) != same
    from safetensors.torch import load_file, save_file

    weights = next(copy.glob("*.safetensors"))
    tensors = load_file(weights)
    first = next(iter(tensors))
    tensors[first] = tensors[first] + 1.0
    save_file(tensors, weights, metadata={"format": "pt"})
    assert model_fingerprint(EvalModelConfig(name="b", path=str(copy))) != same
    endpoint = EvalModelConfig(name="e", endpoint="http://localhost:1/v1", endpoint_model="m")
    assert model_fingerprint(endpoint) != model_fingerprint(endpoint.model_copy(update={"endpoint_model": "n"}))


def _logprob(model, context_ids: list[int], continuation_ids: list[int]) -> float:
    ids = torch.tensor([context_ids + continuation_ids])
    with torch.no_grad():
        logits = model(ids).logits.float().log_softmax(-1)[0]  # (T, V)
    start = len(context_ids)
    return sum(logits[start + i - 1, token].item() for i, token in enumerate(continuation_ids))


def test_multiple_choice_logprobs_match_a_plain_forward_pass(tiny_model_dir, tiny_model, tokenizer, tmp_path):
    model_cfg = EvalModelConfig(name="tiny", path=str(tiny_model_dir), dtype="float32")
    task = _task(tmp_path, [{"question": "The sky is", "choices": ["blue", "green"], "answer": 0}],
                 name="mc", kind="multiple_choice")
    cfg = _cfg(model_cfg, task)
    out = run_task(ModelUnderTest(model_cfg), task, load_examples(task), cfg, AnswerCache(enabled=False))
    context = tokenizer("The sky is")["input_ids"]
    expected = []
    for choice in ("blue", "green"):
        full = tokenizer("The sky is " + choice)["input_ids"]
        assert full[:len(context)] == context
        expected.append(_logprob(tiny_model, context, full[len(context):]))
    assert out.raw[0]["logprobs"] == pytest.approx(expected, abs=1e-4)


def test_perplexity_loss_sum_matches_transformers_loss(tiny_model_dir, tiny_model, tokenizer, tmp_path):
    model_cfg = EvalModelConfig(name="tiny", path=str(tiny_model_dir), dtype="float32")
    text = "the quick brown fox jumps over the lazy dog"
    task = _task(tmp_path, [{"text": text}], name="ppl", kind="perplexity")
    out = run_task(ModelUnderTest(model_cfg), task, load_examples(task), _cfg(model_cfg, task),
                   AnswerCache(enabled=False))
    ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    with torch.no_grad():
        mean_loss = tiny_model(torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
    [raw] = out.raw
    assert raw["tokens"] == len(ids) - 1
    assert raw["loss_sum"] == pytest.approx(mean_loss * (len(ids) - 1), rel=1e-4)
    assert not raw["truncated"]
