"""The vLLM backend: where it may run, the mapping from honing's settings to vLLM's (no vLLM needed), and on a
CUDA machine with vLLM, greedy answers of the embedded model equal to the torch engine's."""

from __future__ import annotations

import json

import pytest

from honing.config import ChatModelConfig, GenerationConfig, SamplingConfig
from honing.engine import vllm as backend
from honing.errors import HoningError


def _cfg(backend_name: str, **fields) -> ChatModelConfig:
    return ChatModelConfig(generation=GenerationConfig(backend=backend_name), **fields)


# --------------------------------------------------------------------------- where it runs


def test_unavailable_gives_a_reason_here():
    reason = backend.vllm_unavailable()
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    try:
        import vllm  # noqa: F401

        has_vllm = True
    except ImportError:
        has_vllm = False
    if has_cuda and has_vllm:
        assert reason is None
    else:
        assert reason and ("CUDA" in reason or "vLLM" in reason)


def test_wanted_follows_the_backend_setting():
    reason = backend.vllm_unavailable()
    if reason is None:
        pytest.skip("vLLM runs here: the unavailable branch cannot be checked")
    with pytest.raises(HoningError, match="generation.backend=vllm") as raised:
        backend.vllm_wanted(_cfg("vllm"))
    assert reason in str(raised.value)
    assert backend.vllm_wanted(_cfg("auto")) is False
    assert backend.vllm_wanted(_cfg("torch")) is False
    assert backend.vllm_wanted(_cfg("transformers")) is False


def test_an_endpoint_never_uses_vllm():
    for name in ("auto", "vllm"):
        assert backend.vllm_wanted(_cfg(name, endpoint="http://localhost:8000/v1", endpoint_model="m")) is False


# --------------------------------------------------------------------------- mapping


def test_seeds_follow_the_torch_engines_rule():
    assert backend.request_seeds(7, 3) == [7, 8, 9]
    # sample j of prompt i: seed + i*samples + j, prompt-major (as honing.generate._requests)
    assert backend.request_seeds(10, 2, samples=3) == [10, 11, 12, 13, 14, 15]


def test_sampling_kwargs_sampled():
    sampling = SamplingConfig(max_new_tokens=12, temperature=0.7, top_p=0.9, top_k=40, repetition_penalty=1.1,
                              stop=["\n\n", "END"])
    kwargs = backend.sampling_kwargs(sampling, [2, 5], seed=42)
    assert kwargs == {"n": 1, "max_tokens": 12, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
                      "repetition_penalty": 1.1, "seed": 42, "stop": ["\n\n", "END"], "stop_token_ids": [2, 5],
                      "skip_special_tokens": True}


def test_sampling_kwargs_greedy_and_top_k_off():
    kwargs = backend.sampling_kwargs(SamplingConfig(temperature=0.0, top_p=0.5, top_k=10), [2], seed=3)
    assert (kwargs["temperature"], kwargs["top_p"], kwargs["top_k"], kwargs["seed"], kwargs["stop"]) == (
        0.0, 1.0, -1, None, None)
    assert backend.sampling_kwargs(SamplingConfig(temperature=1.0, top_k=0), [], seed=0)["top_k"] == -1
    with pytest.raises(HoningError, match="at most 2"):
        backend.sampling_kwargs(SamplingConfig(temperature=2.5), [], seed=0)


def test_answer_tokens_cut_keep_and_restore_the_stop_token():
    stops = [2, 9]
    # V1 keeps the stop token: cut after it, kept
    assert backend.answer_tokens([5, 6, 2], "stop", None, stops) == ([5, 6, 2], "stop")
    assert backend.answer_tokens([5, 9, 7], "stop", 9, stops) == ([5, 9], "stop")
    # a release that leaves the stop_token_ids entry out: it is put back
    assert backend.answer_tokens([5, 6], "stop", 9, stops) == ([5, 6, 9], "stop")
    # a stop string ended it: nothing appended
    assert backend.answer_tokens([5, 6], "stop", "END", stops) == ([5, 6], "stop")
    assert backend.answer_tokens([5, 6, 7], "length", None, stops) == ([5, 6, 7], "length")
    with pytest.raises(HoningError, match="abort"):
        backend.answer_tokens([5], "abort", None, stops)


def test_engine_kwargs():
    generation = GenerationConfig(backend="vllm", max_batch=16, prefix_cache_mb=512, kv_cache_mb=1024)
    kwargs = backend.engine_kwargs("/m", "/t", "bfloat16", generation, adapter_rank=4, gpu_share=0.9,
                                   kv_cache_field=True)
    assert kwargs == {"model": "/m", "tokenizer": "/t", "dtype": "bfloat16", "enable_prefix_caching": True,
                      "gpu_memory_utilization": 0.9, "max_num_seqs": 16, "kv_cache_memory_bytes": 1024 * 2**20,
                      "enable_lora": True, "max_loras": 1, "max_lora_rank": 8}
    plain = backend.engine_kwargs("/m", "/m", "float16", GenerationConfig(prefix_cache_mb=0), adapter_rank=None,
                                  gpu_share=0.5, kv_cache_field=False)
    assert plain["enable_prefix_caching"] is False
    assert not {"max_num_seqs", "kv_cache_memory_bytes", "enable_lora", "max_lora_rank"} & set(plain)


def test_lora_rank_and_gpu_share():
    assert [backend.lora_rank(r) for r in (1, 8, 9, 64, 300, 512)] == [8, 8, 16, 64, 320, 512]
    with pytest.raises(HoningError, match="max_lora_rank"):
        backend.lora_rank(1024)
    assert backend.gpu_share(80, 80) == 0.9
    assert backend.gpu_share(40, 80) == pytest.approx(0.48)


def test_adapter_rank_reads_adapter_config(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 16,
                                                              "rank_pattern": {"q_proj": 32}}))
    assert backend._adapter_rank(tmp_path) == 32
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "use_dora": True}))
    with pytest.raises(HoningError, match="plain LoRA"):
        backend._adapter_rank(tmp_path)


@pytest.mark.slow
def test_loading_helpers_match_the_torch_path_on_the_embedded_model():
    """What VLLMModel reads before vLLM starts: the torch path's tokenizer, stop ids and weight hash."""
    from honing.generate import stop_token_ids
    from honing.models.chat import load_local

    cfg = _cfg("vllm")
    source, adapter_dir = backend._source_and_adapter(cfg)
    base = source.get("base") or source
    model_dir = backend._model_dir(base)
    tokenizer, tokenizer_dir = backend._tokenizer(cfg, source, adapter_dir, model_dir)
    loaded = load_local(cfg)
    assert adapter_dir is None and tokenizer_dir == model_dir and (model_dir / "config.json").is_file()
    assert tokenizer.get_vocab() == loaded.tokenizer.get_vocab()
    assert stop_token_ids(tokenizer, backend._GenerationConfigOf(model_dir)) == stop_token_ids(loaded.tokenizer,
                                                                                               loaded.model)
    identity = backend._identity(cfg, base, adapter_dir)
    assert identity["sha256"] == loaded.source["sha256"] and identity["backend"] == "vllm"


# --------------------------------------------------------------------------- on a CUDA machine with vLLM


@pytest.mark.slow
def test_greedy_answers_equal_the_torch_engine():
    """The embedded model, greedy, through vLLM and through honing's engine: the same tokens, except where the
    two kernels meet a near-tie (then the torch model's two best logits there are within bfloat16's error)."""
    reason = backend.vllm_unavailable()
    if reason is not None:
        pytest.skip(reason)
    import torch

    from honing.models.chat import ChatModel

    prompts = ["What is the capital of France?", "Name three primary colours.", "Write one sentence about rain."]
    sampling = SamplingConfig(max_new_tokens=24, temperature=0.0)
    vllm_chat = ChatModel.load(_cfg("vllm", dtype="bfloat16"), sampling, role="model")
    torch_chat = ChatModel.load(_cfg("torch", dtype="bfloat16"), sampling, role="model")
    assert vllm_chat.vllm is not None and vllm_chat.identity["backend"] == "vllm"
    assert vllm_chat.identity["sha256"] == torch_chat.identity["sha256"]
    from honing.data.prompts import encode_prompts
    from honing.generate import stop_token_ids

    assert vllm_chat.vllm.stop_ids == stop_token_ids(torch_chat.tokenizer, torch_chat.model)

    encoded = encode_prompts(torch_chat.tokenizer, prompts)
    assert encode_prompts(vllm_chat.tokenizer, prompts) == encoded
    for ids, ours, theirs in zip(encoded, vllm_chat.complete(prompts), torch_chat.complete(prompts)):
        common = 0
        while common < min(len(ours.token_ids), len(theirs.token_ids)) and \
                ours.token_ids[common] == theirs.token_ids[common]:
            common += 1
        if ours.token_ids == theirs.token_ids:
            assert (ours.text, ours.finish_reason) == (theirs.text, theirs.finish_reason)
            continue
        assert common >= 4, (ours.token_ids, theirs.token_ids)
        with torch.inference_mode():
            context = torch.tensor([ids + theirs.token_ids[:common]], device=torch_chat.model.device)
            logits = torch_chat.model(context).logits[0, -1].float()  # (V,)
        gap = (logits[theirs.token_ids[common]] - logits[ours.token_ids[common]]).abs().item()
        assert gap < 0.25, f"diverged at token {common} with a logit gap of {gap:.3f}"

    rows = vllm_chat.sample([encoded[0]], SamplingConfig(max_new_tokens=8, temperature=1.0), samples=2, seed=5)
    again = vllm_chat.sample([encoded[0]], SamplingConfig(max_new_tokens=8, temperature=1.0), samples=2, seed=5)
    assert [c.token_ids for c in rows[0]] == [c.token_ids for c in again[0]]  # per-request seeds reproduce
