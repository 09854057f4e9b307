"""Log-likelihoods and held-out losses against explicit computations on a tiny model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from honing.data.templating import tokenize_conversation
from honing.data.types import IGNORE_INDEX
from honing.evals.loglik import continuation_logprobs, encode_pair, example_losses

PAIRS = [
    ("Q: What is two plus two?\nA:", " four"),
    ("hi", " there, friend"),
    ("The capital of France is a city called", " Paris"),
    ("Q: x ", "y"),  # trailing space: moved to the continuation
    ("Count: one two three four five six seven eight nine ten eleven twelve", " thirteen fourteen"),
]


@pytest.fixture()
def model(tiny_model):
    return tiny_model.eval()


def explicit_logprob(model, context_ids: list[int], continuation_ids: list[int]) -> tuple[float, bool]:
    """Σ log p(token | full prefix), one forward pass per token, no batching, no padding."""
    total, greedy = 0.0, True
    with torch.no_grad():
        for j, target in enumerate(continuation_ids):
            prefix = torch.tensor([context_ids + continuation_ids[:j]])  # (1, T)
            logprobs = F.log_softmax(model(input_ids=prefix).logits[0, -1].float(), dim=-1)  # (V,)
            total += float(logprobs[target])
            greedy &= int(logprobs.argmax()) == target
    return total, greedy


def test_continuation_logprobs_equal_explicit_computation(model, tokenizer):
    got = continuation_logprobs(model, tokenizer, PAIRS, batch_size=3)
    for (context, continuation), result in zip(PAIRS, got):
        context_ids, continuation_ids = encode_pair(tokenizer, context, continuation, add_special_tokens=True)
        expected, greedy = explicit_logprob(model, context_ids, continuation_ids)
        assert result.logprob == pytest.approx(expected, abs=1e-4)
        assert result.greedy == greedy and result.tokens == len(continuation_ids) and not result.truncated


def test_choices_sharing_a_context_equal_explicit_computation(model, tokenizer, monkeypatch):
    """A question's choices are scored together, their context computed once: the same numbers as one pass
    per token, and the shared path really runs (a group whose context is computed once)."""
    import honing.train.shared_prefix as shared

    planned = []
    real = shared.plan_prefix
    monkeypatch.setattr(shared, "plan_prefix", lambda *a, **k: planned.append(real(*a, **k)) or planned[-1])
    questions = ["Question: Which planet is known as the red planet, seen from the earth at night?\nAnswer:",
                 "Question: What is 7 times 6?\nAnswer:"]
    pairs = [(q, " " + c) for q in questions for c in ("Mars", "Venus", "the moon", "forty-two")]
    got = continuation_logprobs(model, tokenizer, pairs, batch_size=5)
    assert any(p is not None and p.computed_once > 0 for p in planned)
    for (context, continuation), result in zip(pairs, got):
        context_ids, continuation_ids = encode_pair(tokenizer, context, continuation, add_special_tokens=True)
        expected, greedy = explicit_logprob(model, context_ids, continuation_ids)
        assert result.logprob == pytest.approx(expected, abs=1e-4)
        assert result.greedy == greedy and result.tokens == len(continuation_ids)


def test_batching_and_padding_do_not_change_logprobs(model, tokenizer):
    one = continuation_logprobs(model, tokenizer, PAIRS, batch_size=1)
    three = continuation_logprobs(model, tokenizer, PAIRS, batch_size=3)  # padded to the longest in each batch
    for a, b in zip(one, three):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert (a.greedy, a.tokens) == (b.greedy, b.tokens)


def test_greedy_flag_matches_argmax(model, tokenizer):
    context = "hello"
    ids = tokenizer(context)["input_ids"]
    with torch.no_grad():
        argmax = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=3, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id)[0, len(ids):].tolist()
    greedy_text = tokenizer.decode(argmax)
    assert encode_pair(tokenizer, context, greedy_text, add_special_tokens=True)[1] == argmax  # round-trips
    # The same text with its last token changed is not the greedy continuation.
    other_text = tokenizer.decode(argmax[:-1] + [tokenizer.convert_tokens_to_ids("Ġdog")])
    greedy, other = continuation_logprobs(model, tokenizer, [(context, greedy_text), (context, other_text)])
    assert greedy.greedy and not other.greedy
    assert greedy.logprob > other.logprob
    assert explicit_logprob(model, ids, argmax) == (pytest.approx(greedy.logprob, abs=1e-4), True)


def test_truncated_context_is_flagged_and_scored_on_what_is_kept(model, tokenizer):
    context, continuation = PAIRS[-1]
    context_ids, continuation_ids = encode_pair(tokenizer, context, continuation, add_special_tokens=True)
    max_length = 8
    (result,) = continuation_logprobs(model, tokenizer, [(context, continuation)], max_length=max_length)
    kept = (context_ids + continuation_ids)[-(max_length + 1):]
    expected, _ = explicit_logprob(model, kept[: -len(continuation_ids)], continuation_ids)
    assert result.truncated and result.logprob == pytest.approx(expected, abs=1e-4)


def test_encode_pair_moves_trailing_space_to_the_continuation(tokenizer):
    context_ids, continuation_ids = encode_pair(tokenizer, "Q: x ", "y", add_special_tokens=True)
    assert context_ids == tokenizer("Q: x")["input_ids"]
    assert context_ids + continuation_ids == tokenizer("Q: x y")["input_ids"]
    assert tokenizer.decode(continuation_ids) == " y"
    # Without a trailing space nothing moves.
    assert encode_pair(tokenizer, "Q: x", " y", add_special_tokens=True) == (context_ids, continuation_ids)


def test_example_losses_equal_transformers_loss(model, tokenizer):
    conversations = [
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}],
        [{"role": "user", "content": "Name three colours, please."},
         {"role": "assistant", "content": "Red, green and a rather long blue."}],
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"},
         {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"},
         {"role": "assistant", "content": "6"}],
    ]
    examples = [tokenize_conversation(tokenizer, m, max_length=512) for m in conversations]
    assert len({len(e.input_ids) for e in examples}) == 3  # padding happens in a batch
    got = example_losses(model, examples, batch_size=2, pad_id=tokenizer.pad_token_id)
    for example, (loss_sum, tokens) in zip(examples, got):
        n_targets = sum(label != IGNORE_INDEX for label in example.labels[1:])
        assert 0 < n_targets < len(example.input_ids) - 1  # prompt tokens are masked
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([example.input_ids]), labels=torch.tensor([example.labels])).loss
        assert tokens == n_targets == example.target_tokens
        assert loss_sum == pytest.approx(float(loss) * n_targets, rel=1e-5)
