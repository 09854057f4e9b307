"""Generation of a local model: the door behind honing.models.chat.ChatModel (and RL's sampler).

Prompts are rendered with the tokenizer's chat template (ChatML when it has none) and answered by
honing's engine (honing.engine: continuous batching, shared prefixes prefilled once) where it runs the
model's family, else, or with generation.backend=transformers, by transformers' `generate`: sorted by
length so each batch wastes little padding, padded on the LEFT, generated with the KV cache. Either way
the answers come back in the caller's order with only the new text, special tokens removed.

Seeds. With the engine, prompt i of a call draws from its own random stream seeded with seed + i (and
sample j of prompt i with seed + i·samples + j), so an answer does not depend on what else is in the
batch. transformers' path seeds one stream for the whole call.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from honing.config import GenerationConfig, SamplingConfig
from honing.data.prompts import Prompt, encode_prompts

# End-of-turn markers of common chat templates; generation stops at whichever the template uses.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>")


def stop_token_ids(tokenizer: Any, model: Any = None) -> list[int]:
    """eos (tokenizer and model) plus the end-of-turn token the chat template uses."""
    ids: list[int] = []

    def add(value: Any) -> None:
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, int) and item not in ids:
                ids.append(item)

    add(tokenizer.eos_token_id)
    if model is not None and getattr(model, "generation_config", None) is not None:
        add(model.generation_config.eos_token_id)
    from honing.data.templating import chat_template

    template = chat_template(tokenizer)
    vocab = tokenizer.get_vocab()
    for token in END_OF_TURN_TOKENS:
        if token in template and token in vocab:
            add(vocab[token])
    return ids


def generation_kwargs(sampling: SamplingConfig, tokenizer: Any, model: Any = None) -> dict[str, Any]:
    """Arguments for model.generate: greedy at temperature 0, else sampling."""
    stops = stop_token_ids(tokenizer, model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops[0] if stops else None)
    kwargs: dict[str, Any] = {
        "max_new_tokens": sampling.max_new_tokens,
        "eos_token_id": stops or None,
        "pad_token_id": pad,
        "repetition_penalty": sampling.repetition_penalty,
        "use_cache": True,
    }
    if sampling.temperature == 0:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
    return kwargs


def _requests(model: Any, tokenizer: Any, prompt_ids: Sequence[list[int]], sampling: SamplingConfig, seed: int,
              samples: int = 1, generation: GenerationConfig | None = None) -> list[Any]:
    from honing.engine import Request, Sampling

    settings = Sampling(sampling.temperature, sampling.top_p, sampling.top_k, sampling.repetition_penalty)
    stops = frozenset(stop_token_ids(tokenizer, model))
    drafts = (generation or GenerationConfig()).draft_tokens
    return [Request(list(ids), sampling.max_new_tokens, settings, seed + i * samples + j, tuple(sampling.stop), stops,
                    draft_tokens=drafts)
            for i, ids in enumerate(prompt_ids) for j in range(samples)]


def _engine(model: Any, tokenizer: Any, prompt_ids: Sequence[list[int]], sampling: SamplingConfig,
            generation: GenerationConfig | None, batch_size: int) -> Any:
    """The engine for this call, or None when transformers generates."""
    from honing.engine import backend_for, engine_for

    generation = generation or GenerationConfig()
    longest = max(len(ids) for ids in prompt_ids) + sampling.max_new_tokens
    backend, _ = backend_for(model, generation, longest)
    return engine_for(model, tokenizer, generation, batch_size) if backend == "torch" else None


def sample_tokens(model: Any, tokenizer: Any, prompt_ids: Sequence[list[int]], sampling: SamplingConfig, *,
                  samples: int = 1, batch_size: int = 8, seed: int | None = None,
                  generation: GenerationConfig | None = None) -> list[list[list[int]]]:
    """`samples` completions of each tokenised prompt, as token ids: result[i][j] is prompt i's
    j-th sample, cut after its first stop token (which is kept, so a trainer sees the model
    learning to stop) or at max_new_tokens. The samples of one prompt share its prefilled prompt
    (engine) or are generated together (transformers: left-padded, longest first). `seed`
    overrides sampling.seed."""
    import torch

    if not prompt_ids:
        return []
    engine = _engine(model, tokenizer, prompt_ids, sampling, generation, batch_size)
    if engine is not None:
        results = engine.run(_requests(model, tokenizer, prompt_ids, sampling,
                                       sampling.seed if seed is None else seed, samples, generation))
        return [[results[i * samples + j].token_ids for j in range(samples)] for i in range(len(prompt_ids))]
    stops = set(stop_token_ids(tokenizer, model))
    kwargs = generation_kwargs(sampling, tokenizer, model)
    if sampling.stop:
        kwargs.update(stop_strings=list(sampling.stop), tokenizer=tokenizer)
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]), reverse=True)
    per_batch = max(1, batch_size // samples)
    result: list[list[list[int]]] = [[] for _ in prompt_ids]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), _seeded(sampling.seed if seed is None else seed, device):
            for start in range(0, len(order), per_batch):
                chunk = order[start:start + per_batch]
                rows = [prompt_ids[i] for i in chunk for _ in range(samples)]
                batch = _left_pad(tokenizer, rows)
                input_ids = batch["input_ids"].to(device)  # (b·samples, P)
                output = model.generate(input_ids=input_ids, attention_mask=batch["attention_mask"].to(device),
                                        **kwargs)  # (b·samples, P + new)
                new_tokens = output[:, input_ids.shape[1]:].tolist()
                for k, index in enumerate(chunk):
                    result[index] = [_cut_at_stop(new_tokens[k * samples + j], stops) for j in range(samples)]
    finally:
        model.train(was_training)
    return result


def _cut_at_stop(tokens: list[int], stops: set[int]) -> list[int]:
    for position, token in enumerate(tokens):
        if token in stops:
            return tokens[:position + 1]
    return tokens


def generate(model: Any, tokenizer: Any, prompts: Sequence[Prompt], sampling: SamplingConfig, *,
             batch_size: int = 8, chat_template: bool = True, system_prompt: str | None = None,
             progress: bool = True, streamer: Any = None, generation: GenerationConfig | None = None) -> list[str]:
    """One answer per prompt, in the prompts' order. A streamer (transformers TextStreamer)
    needs a single prompt."""
    return [answer.text for answer in generate_answers(
        model, tokenizer, prompts, sampling, batch_size=batch_size, chat_template=chat_template,
        system_prompt=system_prompt, progress=progress, streamer=streamer, generation=generation)]


@dataclass
class Answer:
    """One generated answer: its text (special tokens removed, stripped), its new token ids cut after
    the first stop token (kept), whether it stopped (else it ran into max_new_tokens), its prompt's length."""

    text: str
    token_ids: list[int]
    stopped: bool
    prompt_tokens: int
    cached_tokens: int = 0


def generate_answers(model: Any, tokenizer: Any, prompts: Sequence[Prompt], sampling: SamplingConfig, *,
                     batch_size: int = 8, chat_template: bool = True, system_prompt: str | None = None,
                     progress: bool = True, streamer: Any = None,
                     generation: GenerationConfig | None = None) -> list[Answer]:
    """`generate`, with each answer's token ids, how it ended and its prompt's length."""
    import torch

    if not prompts:
        return []
    if streamer is not None and len(prompts) != 1:
        raise ValueError("a streamer can follow only one prompt at a time")
    encoded = encode_prompts(tokenizer, prompts, chat_template=chat_template, system_prompt=system_prompt)
    engine = _engine(model, tokenizer, encoded, sampling, generation, batch_size)
    if engine is not None:
        return _engine_answers(engine, model, tokenizer, encoded, sampling, progress, streamer, generation)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)  # longest first: OOM shows at once
    kwargs = generation_kwargs(sampling, tokenizer, model)
    if sampling.stop:
        kwargs.update(stop_strings=list(sampling.stop), tokenizer=tokenizer)
    stops = set(stop_token_ids(tokenizer, model))
    answers: list[Answer | None] = [None] * len(prompts)
    device = next(model.parameters()).device

    was_training = model.training
    model.eval()
    try:
        with _progress(len(prompts), progress) as advance, torch.inference_mode(), _seeded(sampling.seed, device):
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                batch = _left_pad(tokenizer, [encoded[i] for i in chunk])
                input_ids = batch["input_ids"].to(device)  # (B, T)
                output = model.generate(
                    input_ids=input_ids,
                    attention_mask=batch["attention_mask"].to(device),
                    streamer=streamer,
                    **kwargs,
                )  # (B, T + new)
                new_tokens = output[:, input_ids.shape[1]:]
                for index, tokens in zip(chunk, new_tokens):
                    kept = _cut_at_stop(tokens.tolist(), stops)
                    text, cut = before_stop(tokenizer.decode(tokens, skip_special_tokens=True), sampling.stop)
                    answers[index] = Answer(text.strip(), kept, cut or (bool(kept) and kept[-1] in stops),
                                            len(encoded[index]))
                advance(len(chunk))
    finally:
        model.train(was_training)
    return answers  # type: ignore[return-value]  (every slot is filled)


def before_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """The text before the first stop string, and whether there was one."""
    found = [text.find(s) for s in stops if s and s in text]
    return (text[:min(found)], True) if found else (text, False)


def _engine_answers(engine: Any, model: Any, tokenizer: Any, encoded: list[list[int]], sampling: SamplingConfig,
                    progress: bool, streamer: Any, generation: GenerationConfig | None) -> list[Answer]:
    import torch

    requests = _requests(model, tokenizer, encoded, sampling, sampling.seed, generation=generation)
    if streamer is not None:
        streamer.put(torch.tensor([encoded[0]]))  # the prompt (a TextStreamer with skip_prompt skips it)
        requests[0].on_token = lambda token: streamer.put(torch.tensor([token]))
    try:
        with _progress(len(encoded), progress) as advance:
            results = engine.run(requests, progress=advance)
    finally:
        if streamer is not None:
            streamer.end()
    answers = []
    for result in results:
        text = tokenizer.decode(result.token_ids, skip_special_tokens=True)
        if result.stop_text is not None:
            text = text[:result.stop_text]
        answers.append(Answer(text.strip(), result.token_ids, result.finish_reason == "stop", result.prompt_tokens,
                              result.cached_tokens))
    return answers


def _left_pad(tokenizer: Any, sequences: list[list[int]]) -> dict[str, Any]:
    saved = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        return tokenizer.pad({"input_ids": sequences}, padding=True, return_tensors="pt", return_attention_mask=True)
    finally:
        tokenizer.padding_side = saved


class _seeded:
    """Seed sampling without disturbing the caller's RNG state."""

    def __init__(self, seed: int, device: Any):
        import torch

        devices = [device] if device.type == "cuda" else []
        self._fork = torch.random.fork_rng(devices=devices)
        self._seed = seed

    def __enter__(self) -> None:
        import torch

        self._fork.__enter__()
        torch.manual_seed(self._seed)

    def __exit__(self, *exc: Any) -> None:
        self._fork.__exit__(*exc)


class _progress:
    """A rich bar with prompts/s; a no-op when disabled."""

    def __init__(self, total: int, enabled: bool):
        self.total = total
        self.enabled = enabled
        self.bar: Any = None

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from honing.ui import console

        self.start = time.perf_counter()
        self.bar = Progress(
            TextColumn("[bold]generating"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.2f} prompts/s"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.bar.__enter__()
        task = self.bar.add_task("generate", total=self.total, rate=0.0)

        def advance(n: int) -> None:
            done = self.bar.tasks[0].completed + n
            rate = done / max(time.perf_counter() - self.start, 1e-9)
            self.bar.update(task, advance=n, rate=rate)

        return advance

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
