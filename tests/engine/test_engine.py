"""honing's generation engine against transformers: the same greedy tokens, the same sampling distribution,
prefix-cached answers equal to uncached ones, and answers that do not depend on their batch."""

from __future__ import annotations

import math

import pytest
import torch

from honing.config import GenerationConfig, SamplingConfig
from honing.engine import Engine, Request, Sampling, backend_for
from honing.engine.core import lookup_draft, shared_prefixes
from honing.engine.sampling import candidates, filtered
from honing.errors import HoningError
from honing.generate import generate_answers, stop_token_ids

SYSTEM = ("You are a support assistant. Read the customer's message and answer with one JSON object that has "
          "the fields category, urgency and sentiment, and nothing else.")
QUESTIONS = ["my parcel never came", "refund please, order 1234", "the app crashes at start", "thanks, all good",
             "how do I change my password?", "charged twice this month!!", "where is my invoice", "hello"]


def _prompts(tokenizer, n=len(QUESTIONS)):
    from honing.data.prompts import encode_prompts

    return encode_prompts(tokenizer, [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
                                      for q in QUESTIONS[:n]])


def _reference(model, tokenizer, prompt_ids, max_new_tokens, **kwargs):
    """transformers' generate, one prompt at a time (no padding): each answer cut after its stop token."""
    stops = stop_token_ids(tokenizer, model)
    answers = []
    with torch.inference_mode():
        for ids in prompt_ids:
            out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops,
                                 pad_token_id=tokenizer.pad_token_id, **kwargs)[0, len(ids):].tolist()
            cut = next((i + 1 for i, t in enumerate(out) if t in stops), len(out))
            answers.append(out[:cut])
    return answers


def _requests(tokenizer, model, prompt_ids, max_new_tokens, sampling=Sampling(), seeds=None, **kwargs):
    stops = frozenset(stop_token_ids(tokenizer, model))
    return [Request(ids, max_new_tokens, sampling, seeds[i] if seeds else i, stop_token_ids=stops, **kwargs)
            for i, ids in enumerate(prompt_ids)]


def test_greedy_tokens_equal_transformers_generate(tiny_model, tokenizer):
    prompts = _prompts(tokenizer)
    engine = Engine(tiny_model, tokenizer, max_batch=3)  # 8 requests through 3 slots: rows leave and join
    results = engine.run(_requests(tokenizer, tiny_model, prompts, 24))
    assert [r.token_ids for r in results] == _reference(tiny_model, tokenizer, prompts, 24)
    assert engine.last.cached_tokens > 0  # the system prompt was prefilled once and reused
    assert all(r.finish_reason == "length" or r.token_ids[-1] in stop_token_ids(tokenizer) for r in results)


def test_prompt_lookup_guesses_leave_greedy_answers_unchanged(tiny_model, tokenizer):
    """Guessed tokens checked in the same pass: the answers are plain greedy decoding's, in fewer steps
    (a random model repeats itself, so there is something to guess)."""
    prompts = _prompts(tokenizer)
    guessing = Engine(tiny_model, tokenizer, max_batch=3)
    results = guessing.run(_requests(tokenizer, tiny_model, prompts, 40, draft_tokens=4))
    plain = Engine(tiny_model, tokenizer, max_batch=3)
    expected = plain.run(_requests(tokenizer, tiny_model, prompts, 40))
    assert [r.token_ids for r in results] == [r.token_ids for r in expected]
    assert [r.token_ids for r in results] == _reference(tiny_model, tokenizer, prompts, 40)
    assert guessing.last.accepted > 0 and guessing.last.decode_steps < plain.last.decode_steps
    assert plain.last.drafted == 0


def test_lookup_draft_follows_the_latest_match():
    prompt = [5, 6, 7, 8, 9, 1, 2, 3, 4]
    assert lookup_draft(prompt, [6, 7], 3) == [8, 9, 1]  # "6 7" seen at 1..2: what followed it
    assert lookup_draft(prompt, [1, 2, 3], 2) == [4, 1]  # the 3-gram first; its continuation runs into the answer
    assert lookup_draft(prompt, [42], 4) == []  # a lone token is not matched
    assert lookup_draft(prompt, [6, 7], 0) == []


def test_prefix_cached_answers_equal_uncached(tiny_model, tokenizer):
    prompts = _prompts(tokenizer)
    cached = Engine(tiny_model, tokenizer, max_batch=4)
    plain = Engine(tiny_model, tokenizer, max_batch=4, prefix_cache_mb=0)
    first = cached.run(_requests(tokenizer, tiny_model, prompts, 16))
    again = cached.run(_requests(tokenizer, tiny_model, prompts, 16))  # every prefix now comes from the cache
    uncached = plain.run(_requests(tokenizer, tiny_model, prompts, 16))
    assert plain.last.cached_tokens == 0
    assert cached.last.cached_tokens >= len(prompts) * shared_prefixes(prompts)[0]
    assert [r.token_ids for r in first] == [r.token_ids for r in again] == [r.token_ids for r in uncached]


def test_changed_weights_drop_the_kept_prefixes(tiny_model, tokenizer):
    prompts = _prompts(tokenizer, 4)
    engine = Engine(tiny_model, tokenizer, max_batch=4)
    engine.run(_requests(tokenizer, tiny_model, prompts, 8))
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.mul_(1.5)  # in place, as an optimiser step writes
    after = engine.run(_requests(tokenizer, tiny_model, prompts, 8))
    fresh = Engine(tiny_model, tokenizer, max_batch=4, prefix_cache_mb=0).run(_requests(tokenizer, tiny_model, prompts, 8))
    assert [r.token_ids for r in after] == [r.token_ids for r in fresh]
    assert [r.token_ids for r in after] == _reference(tiny_model, tokenizer, prompts, 8)


def test_lora_model_generates_like_transformers(tiny_model, tokenizer):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    model = get_peft_model(tiny_model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    prompts = _prompts(tokenizer, 5)
    results = Engine(model, tokenizer, max_batch=2).run(_requests(tokenizer, model, prompts, 16))
    assert [r.token_ids for r in results] == _reference(model, tokenizer, prompts, 16)


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "mistral"])
def test_other_families_generate_like_transformers(family, tokenizer):
    import transformers

    config_class = {"qwen2": "Qwen2Config", "qwen3": "Qwen3Config", "mistral": "MistralConfig"}[family]
    model_class = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "mistral": "MistralForCausalLM"}[family]
    config = getattr(transformers, config_class)(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=512, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(config).eval()
    assert backend_for(model, GenerationConfig(), 256)[0] == "torch"
    prompts = _prompts(tokenizer, 4)
    results = Engine(model, tokenizer, max_batch=3).run(_requests(tokenizer, model, prompts, 12))
    assert [r.token_ids for r in results] == _reference(model, tokenizer, prompts, 12)


def test_repetition_penalty_matches_transformers(tiny_model, tokenizer):
    prompts = _prompts(tokenizer, 4)
    results = Engine(tiny_model, tokenizer, max_batch=4).run(
        _requests(tokenizer, tiny_model, prompts, 16, Sampling(repetition_penalty=1.3)))
    assert [r.token_ids for r in results] == _reference(tiny_model, tokenizer, prompts, 16, repetition_penalty=1.3)


def test_filtering_equals_transformers_warpers():
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    torch.manual_seed(0)
    logits = torch.randn(1, 500) * 3
    for temperature, top_k, top_p in [(0.7, 0, 1.0), (1.0, 20, 1.0), (0.8, 0, 0.9), (1.3, 50, 0.5)]:
        warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)]
                                      + ([TopKLogitsWarper(top_k)] if top_k else [])
                                      + ([TopPLogitsWarper(top_p)] if top_p < 1 else []))
        expected = warpers(torch.zeros(1, 1, dtype=torch.long), logits.clone()).softmax(-1)
        ours = filtered(logits[0], Sampling(temperature, top_p, top_k)).softmax(-1)
        torch.testing.assert_close(ours, expected[0], rtol=0, atol=1e-7)


def test_candidates_carry_the_filtered_distribution():
    """Drawing among the top tokens only is the same distribution as filtering the whole vocabulary."""
    torch.manual_seed(0)
    logits = torch.randn(3, 5000) * 4
    for setting in [Sampling(0.7, 0.9), Sampling(1.0, 1.0, 40), Sampling(1.2, 0.8, 300), Sampling(0.5, 0.95, 800)]:
        found = candidates(logits, setting)
        assert found is not None and bool(found[2].all())
        index, weights, _ = found
        dense = torch.zeros_like(logits).scatter(-1, index, weights)
        torch.testing.assert_close(dense, filtered(logits, setting).softmax(-1), rtol=0, atol=1e-6)
    assert candidates(logits, Sampling(1.0)) is None  # plain temperature: the whole vocabulary
    assert candidates(logits, Sampling(1.0, 0.9, 2000)) is None  # a top-k set wider than the candidates
    flat = torch.cat([logits[:1], torch.zeros(1, 5000)])  # top-p needs 4,500 of the flat row's tokens
    assert candidates(flat, Sampling(1.0, 0.9))[2].tolist() == [True, False]
    ties = torch.tensor([[3.0, 2.0, 2.0, 1.0, 0.0] + [-9.0] * 2000])  # top-k 2 keeps both tokens tied at 2.0
    index, weights, fits = candidates(ties, Sampling(1.0, 1.0, 2))
    torch.testing.assert_close(torch.zeros_like(ties).scatter(-1, index, weights),
                               filtered(ties, Sampling(1.0, 1.0, 2)).softmax(-1), rtol=0, atol=1e-6)


def test_sampled_tokens_follow_the_model_distribution(tiny_model, tokenizer):
    """2,000 one-token answers, each with its own seed: their frequencies against the filtered softmax of the
    model's logits (chi-square, 0.1% level), so the sampler draws from the distribution it claims."""
    from scipy.stats import chisquare

    prompt = _prompts(tokenizer, 1)[0]
    settings = Sampling(temperature=1.0, top_k=8)
    with torch.inference_mode():
        logits = tiny_model(torch.tensor([prompt])).logits[0, -1].float()
    expected = filtered(logits, settings).softmax(-1)
    draws = 2000
    requests = [Request(prompt, 1, settings, seed) for seed in range(draws)]
    results = Engine(tiny_model, tokenizer, max_batch=16).run(requests)
    support = torch.nonzero(expected > 0).flatten().tolist()
    counts = [sum(r.token_ids[0] == token for r in results) for token in support]
    assert sum(counts) == draws  # nothing outside top-k was ever drawn
    mass = sum(expected[t].item() for t in support)
    observed_test = chisquare(counts, [expected[t].item() / mass * draws for t in support])
    assert observed_test.pvalue > 1e-3, (counts, observed_test)


def test_a_flat_row_does_not_change_its_neighbours_draw():
    """Rows with the same settings are drawn together, but each by its own logits' rule: a row whose top-p
    set is too wide for the candidates does not move its neighbour onto another path."""
    from honing.engine.sampling import next_tokens

    torch.manual_seed(0)
    peaked, flat = torch.randn(1, 5000) * 4, torch.zeros(1, 5000)
    setting = Sampling(1.0, 0.9)
    for seed in range(20):
        alone = next_tokens(peaked, [setting], [None], [torch.Generator().manual_seed(seed)])
        beside = next_tokens(torch.cat([peaked, flat]), [setting, setting], [None, None],
                             [torch.Generator().manual_seed(seed), torch.Generator().manual_seed(99)])
        assert alone[0] == beside[0]


def test_sampled_answer_does_not_depend_on_its_batch(tiny_model, tokenizer):
    prompts = _prompts(tokenizer)
    settings = Sampling(temperature=0.9, top_p=0.95)
    together = Engine(tiny_model, tokenizer, max_batch=8).run(_requests(tokenizer, tiny_model, prompts, 12, settings))
    one_slot = Engine(tiny_model, tokenizer, max_batch=1).run(_requests(tokenizer, tiny_model, prompts, 12, settings))
    alone = Engine(tiny_model, tokenizer, max_batch=8).run(
        _requests(tokenizer, tiny_model, prompts[5:6], 12, settings, seeds=[5]))
    assert [r.token_ids for r in together] == [r.token_ids for r in one_slot]
    assert together[5].token_ids == alone[0].token_ids
    reseeded = Engine(tiny_model, tokenizer, max_batch=8).run(
        _requests(tokenizer, tiny_model, prompts, 12, settings, seeds=[100 + i for i in range(len(prompts))]))
    assert [r.token_ids for r in reseeded] != [r.token_ids for r in together]


def test_stop_strings_and_lengths(tiny_model, tokenizer):
    prompt = _prompts(tokenizer, 1)[0]
    [free] = Engine(tiny_model, tokenizer).run([Request(prompt, 12)])
    assert free.finish_reason == "length" and len(free.token_ids) == 12
    text = tokenizer.decode(free.token_ids, skip_special_tokens=True)
    stop = text[len(text) // 2:len(text) // 2 + 2]
    [stopped] = Engine(tiny_model, tokenizer).run([Request(prompt, 12, stop=(stop,))])
    assert stopped.finish_reason == "stop" and stopped.stop_text == text.find(stop)
    answers = generate_answers(tiny_model, tokenizer, [[{"role": "system", "content": SYSTEM},
                                                        {"role": "user", "content": QUESTIONS[0]}]],
                               SamplingConfig(max_new_tokens=12, stop=[stop]), progress=False)
    assert answers[0].text == text[:text.find(stop)].strip() and answers[0].stopped


def test_backend_choice(tiny_model, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    assert backend_for(tiny_model, GenerationConfig(), 100)[0] == "torch"
    assert backend_for(tiny_model, GenerationConfig(backend="transformers"), 100)[0] == "transformers"
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2)).eval()
    backend, reason = backend_for(gpt2, GenerationConfig(), 100)
    assert backend == "transformers" and "gpt2" in reason
    with pytest.raises(HoningError, match="cannot run this model"):
        backend_for(gpt2, GenerationConfig(backend="torch"), 100)
    # the fallback answers, through the same door
    answers = generate_answers(gpt2, tokenizer, ["hello"], SamplingConfig(max_new_tokens=4), progress=False)
    assert len(answers) == 1 and len(answers[0].token_ids) <= 4


def test_chat_model_streams_through_the_engine(tiny_model, tokenizer):
    from transformers import TextStreamer

    from honing.models.chat import ChatModel

    pieces = []

    class Collect(TextStreamer):
        def on_finalized_text(self, text, stream_end=False):
            pieces.append(text)

    chat = ChatModel.wrap(tiny_model, tokenizer, SamplingConfig(max_new_tokens=10), role="model")
    [completion] = chat.complete(["hello there"], streamer=Collect(tokenizer, skip_prompt=True, skip_special_tokens=True))
    assert "".join(pieces).strip() == completion.text and completion.completion_tokens > 0


def test_an_engine_does_not_keep_its_model_alive(tiny_model_dir, tokenizer):
    import gc
    import weakref

    from transformers import AutoModelForCausalLM

    from honing.engine import engine_for

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="float32")
    engine_for(model, tokenizer, GenerationConfig(), 2).run([Request(_prompts(tokenizer, 1)[0], 2)])
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


def test_engine_rejects_an_empty_prompt(tiny_model, tokenizer):
    with pytest.raises(ValueError, match="empty prompt"):
        Engine(tiny_model, tokenizer).run([Request([], 4)])


def test_shared_prefixes_never_take_the_last_token():
    a, b, c = [1] * 20 + [2, 3], [1] * 20 + [4], [9] * 30
    assert shared_prefixes([a, b, c]) == [20, 20, 0]
    assert shared_prefixes([a, a]) == [21, 21]  # identical prompts: all but the last token
    assert shared_prefixes([[1] * 5, [1] * 5 + [2]]) == [0, 0]  # under MIN_SHARED_PREFIX
    assert math.isclose(sum(shared_prefixes([])), 0)


@pytest.mark.slow
def test_embedded_model_greedy_equals_transformers():
    from honing.config import ModelConfig
    from honing.data.prompts import encode_prompts
    from honing.models.load import load_model
    from honing.quickstart import task

    loaded = load_model(ModelConfig())
    model, tokenizer = loaded.model, loaded.tokenizer
    records = task.load_split("test")[:6]
    prompts = encode_prompts(tokenizer, [[m for m in r["messages"] if m["role"] != "assistant"] for r in records])
    engine = Engine(model, tokenizer, max_batch=4)
    results = engine.run(_requests(tokenizer, model, prompts, 40, draft_tokens=GenerationConfig().draft_tokens))
    assert engine.last.accepted > 0  # as every stage runs it: prompt-lookup guesses on
    assert [r.token_ids for r in results] == _reference(model, tokenizer, prompts, 40)
