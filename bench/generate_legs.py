"""The generation benchmark's legs: one timed run of each framework over the same token-id prompts.

Every leg gets all the prompts at once (they all "arrive" at t = 0) and keeps at most `concurrency` of them
in flight. Each returns a Timed: per request its new token ids (cut after the first stop token, which is
kept), seconds from the run's start to its first new token and to its last, its prompt tokens and how many
of them the framework took from a prefix cache instead of computing; and the run's wall seconds.

    honing_leg        honing.engine.Engine(max_batch=C).run(requests) with the default settings (prompt-lookup
                      guesses on); a fresh Engine is a cold prefix cache, a second run on the same one is warm
    generate_leg      transformers `model.generate` in static batches of C, sorted by length and left-padded
                      (what honing's backend=transformers does); a request's first token exists when its
                      batch's first LogitsProcessor call happens, and it is done when its batch is
    continuous_leg    transformers' continuous batching (ContinuousBatchingManager, what `generate_batch` and
                      `transformers serve` run) with max_requests_per_batch=C, a fresh manager per run
    vllm_leg          vllm.LLM(max_num_seqs=C, enable_prefix_caching=True).generate(TokensPrompt...)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Timed:
    token_ids: list[list[int]]
    first_token_s: list[float]
    latency_s: list[float]
    prompt_tokens: list[int]
    cached_tokens: list[int]
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)


def cut_at_stop(tokens: list[int], stops: set[int]) -> list[int]:
    for position, token in enumerate(tokens):
        if token in stops:
            return tokens[:position + 1]
    return tokens


# --------------------------------------------------------------------------- honing


def honing_leg(model, tokenizer, prompts: list[list[int]], max_new: int, stops: set[int], concurrency: int,
               engine=None) -> tuple[Timed, Any]:
    """One run of honing's engine; pass the returned engine back in for a warm (prefix-cached) run."""
    from honing.config import GenerationConfig
    from honing.engine import Engine, Request, Sampling

    engine = engine or Engine(model, tokenizer, max_batch=concurrency)
    drafts = GenerationConfig().draft_tokens  # the engine as every stage runs it (prompt-lookup guesses on)
    requests = [Request(list(p), max_new, Sampling(), seed=i, stop_token_ids=frozenset(stops), draft_tokens=drafts)
                for i, p in enumerate(prompts)]
    _sync(model)
    started = time.perf_counter()
    results = engine.run(requests)
    _sync(model)
    wall = time.perf_counter() - started
    stats = engine.last
    return Timed([r.token_ids for r in results], [r.first_token_s for r in results], [r.total_s for r in results],
                 [r.prompt_tokens for r in results], [r.cached_tokens for r in results], wall,
                 {"decode_steps": stats.decode_steps, "rows_per_step": stats.rows_per_step,
                  "engine_seconds": stats.seconds, "drafted": stats.drafted, "accepted": stats.accepted}), engine


# --------------------------------------------------------------------------- transformers generate


def generate_leg(model, tokenizer, prompts: list[list[int]], max_new: int, stops: set[int],
                 concurrency: int) -> Timed:
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    from honing.config import SamplingConfig
    from honing.generate import _left_pad, generation_kwargs

    class FirstCall(LogitsProcessor):
        def __init__(self):
            self.at: float | None = None

        def __call__(self, input_ids, scores):
            if self.at is None:
                _sync(model)
                self.at = time.perf_counter()
            return scores

    kwargs = generation_kwargs(SamplingConfig(max_new_tokens=max_new), tokenizer, model)
    kwargs["eos_token_id"] = sorted(stops)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    n = len(prompts)
    tokens: list[list[int]] = [[] for _ in range(n)]
    first, done = [0.0] * n, [0.0] * n
    device = next(model.parameters()).device
    padded_tokens = 0
    _sync(model)
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, n, concurrency):
            chunk = order[start:start + concurrency]
            batch = _left_pad(tokenizer, [prompts[i] for i in chunk])
            input_ids = batch["input_ids"].to(device)  # (B, T) left-padded
            padded_tokens += input_ids.numel()
            hook = FirstCall()
            output = model.generate(input_ids=input_ids, attention_mask=batch["attention_mask"].to(device),
                                    logits_processor=LogitsProcessorList([hook]), **kwargs)  # (B, T + new)
            _sync(model)
            now = time.perf_counter() - started
            for row, index in enumerate(chunk):
                tokens[index] = cut_at_stop(output[row, input_ids.shape[1]:].tolist(), stops)
                first[index], done[index] = hook.at - started, now
    wall = time.perf_counter() - started
    return Timed(tokens, first, done, [len(p) for p in prompts], [0] * n, wall,
                 {"padded_prompt_tokens": padded_tokens, "batches": math.ceil(n / concurrency)})


# --------------------------------------------------------------------------- transformers continuous batching


def continuous_settings(prompts: list[list[int]], max_new: int, concurrency: int) -> dict[str, Any]:
    """ContinuousBatchingConfig arguments. Left to itself the manager sizes its paged cache to 60 % of the
    machine's RAM on a CPU (90 % of free memory on a GPU): 45 s of zero-filling for a 2-layer model on the
    2-core machine. Sized here to hold `concurrency` requests of the longest prompt plus max_new tokens."""
    page = 256  # transformers' default page_size
    per_request = math.ceil((max(len(p) for p in prompts) + max_new) / page)
    return {"page_size": page, "num_blocks": concurrency * per_request + 1, "max_batch_tokens": 1024,
            "max_requests_per_batch": concurrency}


def continuous_leg(model, tokenizer, prompts: list[list[int]], max_new: int, stops: set[int],
                   concurrency: int) -> Timed:
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    settings = continuous_settings(prompts, max_new, concurrency)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else sorted(stops)[0]
    config = GenerationConfig(max_new_tokens=max_new, do_sample=False, eos_token_id=sorted(stops), pad_token_id=pad)
    setup = time.perf_counter()
    manager = model.init_continuous_batching(generation_config=config,
                                             continuous_batching_config=ContinuousBatchingConfig(**settings))
    manager.warmup()  # untimed, like a server's start-up (CUDA graphs on a GPU; a no-op-ish pass on a CPU)
    manager.start()
    setup = time.perf_counter() - setup
    try:
        _sync(model)
        started = time.perf_counter()
        ids = manager.add_requests(inputs=[list(p) for p in prompts], max_new_tokens=max_new, record_timestamps=True)
        outputs: dict[str, Any] = {}
        while len(outputs) < len(ids):
            result = manager.get_result(timeout=1)
            if result is not None and result.is_finished():
                outputs[result.request_id] = result
            elif result is None and not manager.is_running():
                raise RuntimeError("transformers' continuous batching thread stopped before every request finished")
        wall = time.perf_counter() - started
    finally:
        manager.stop(block=True, timeout=10)
        manager.destroy()  # a fresh manager (and an empty prefix cache) for the next run
    errors = [o.error for o in outputs.values() if o.error]
    if errors:
        raise RuntimeError(f"continuous batching failed a request: {errors[0]}")
    ordered = [outputs[i] for i in ids]
    return Timed([cut_at_stop(list(o.generated_tokens), stops) for o in ordered],
                 [(o.timestamps[0] if o.timestamps else o.lifespan[1]) - started for o in ordered],
                 [o.lifespan[1] - started for o in ordered], [len(p) for p in prompts], [0] * len(prompts), wall,
                 {"settings": settings, "setup_s": round(setup, 3),
                  "attn_implementation": getattr(model.config, "_attn_implementation", None)})


# --------------------------------------------------------------------------- vLLM


def vllm_unavailable() -> str | None:
    import importlib.util

    import torch

    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (pip install vllm, on a CUDA machine)"
    if not torch.cuda.is_available():
        return "vLLM needs a CUDA GPU and none is visible"
    return None


def vllm_leg(model_dir: str, dtype: str, prompts: list[list[int]], max_new: int, stops: set[int], concurrency: int,
             memory_fraction: float, llm=None) -> tuple[Timed, Any]:
    """One run of vLLM; pass the returned LLM back in (same concurrency) to skip its start-up. The prefix cache
    is reset before the timed run (cold, like honing's reported leg)."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    if llm is None:
        llm = LLM(model=model_dir, dtype=dtype, enable_prefix_caching=True, max_num_seqs=concurrency,
                  gpu_memory_utilization=memory_fraction, skip_tokenizer_init=True, seed=0,
                  max_model_len=max(len(p) for p in prompts) + max_new + 16)
    params = SamplingParams(max_tokens=max_new, temperature=0, stop_token_ids=sorted(stops), detokenize=False)
    llm.reset_prefix_cache()
    started = time.perf_counter()
    outputs = llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False)
    wall = time.perf_counter() - started
    first, done = [], []
    for output in outputs:
        metrics = getattr(output, "metrics", None)
        # vLLM's per-request stats, where this version fills them (monotonic clock; vLLM v1 RequestStateStats)
        arrival = getattr(metrics, "arrival_time", None)
        first_ts, last_ts = getattr(metrics, "first_token_ts", None), getattr(metrics, "last_token_ts", None)
        if arrival is not None and first_ts and last_ts and abs(last_ts - arrival) < 10 * wall + 60:
            first.append(first_ts - arrival)
            done.append(last_ts - arrival)
        else:
            first.append(float("nan"))
            done.append(float("nan"))
    cached = [int(getattr(o, "num_cached_tokens", 0) or 0) for o in outputs]
    return Timed([cut_at_stop(list(o.outputs[0].token_ids), stops) for o in outputs], first, done,
                 [len(p) for p in prompts], cached, wall,
                 {"per_request_times": "vLLM RequestOutput.metrics (arrival → first/last token)"
                  if not any(math.isnan(x) for x in first) else "not reported by this vLLM version"}), llm


def _sync(model) -> None:
    import torch

    if next(model.parameters()).device.type == "cuda":
        torch.cuda.synchronize()
