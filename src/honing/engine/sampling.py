"""Choosing each row's next token, with each request's own settings and its own random stream.

The logits go through the steps transformers' `generate` applies, in its order: repetition penalty
(divide a positive logit of a token already in the sequence by the penalty, multiply a negative one),
then temperature, top-k and top-p (the smallest set of most likely tokens whose probability reaches
top_p). Temperature 0 is greedy: the most likely token after the penalty.

Every request draws from its own `torch.Generator`, seeded with the request's seed, one draw per token, so
a request's answer does not depend on which other requests share its batch or when it joined.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    """One request's settings (honing.config.SamplingConfig's fields, per request)."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def penalise(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """transformers' repetition penalty on one row: `seen` are the ids already in the sequence."""
    if penalty == 1.0 or seen.numel() == 0:
        return logits
    scores = logits.gather(-1, seen)
    scores = torch.where(scores < 0, scores * penalty, scores / penalty)
    return logits.scatter(-1, seen, scores)


def filtered(logits: torch.Tensor, settings: Sampling) -> torch.Tensor:
    """One row's logits after temperature, top-k and top-p; removed tokens are -inf."""
    logits = logits / settings.temperature
    vocab = logits.shape[-1]
    if settings.top_k and settings.top_k < vocab:
        kth = torch.topk(logits, settings.top_k).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if settings.top_p < 1.0:
        ordered, order = torch.sort(logits, descending=False)
        cumulative = ordered.softmax(-1).cumsum(-1)
        remove = cumulative <= (1 - settings.top_p)
        remove[..., -1] = False  # the most likely token always stays
        logits = logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
    return logits


CANDIDATES = 1024
"""Top-p draws look among this many most likely tokens first (exact whenever they hold the top-p set, which
a language model's next-token distribution almost always does; else the whole vocabulary is sorted)."""


def candidates(logits: torch.Tensor, setting: Sampling) -> tuple[torch.Tensor, torch.Tensor] | None:
    """For (n, V) logits: the most likely tokens (n, K) and their probabilities (n, K) under `filtered`'s
    distribution (temperature, top-k, then top-p), found without sorting the whole vocabulary. None when the
    support is the whole vocabulary or some row's top-p set is not inside the K candidates."""
    scaled = logits / setting.temperature
    vocab = scaled.shape[-1]
    count = min(vocab, setting.top_k or CANDIDATES, CANDIDATES)
    if (setting.top_p >= 1.0 and not setting.top_k) or setting.top_k > CANDIDATES:
        return None  # the support (or the top-k set) is wider than the candidates
    values, index = torch.topk(scaled, count, dim=-1)  # (n, K), most likely first
    if setting.top_k and setting.top_k < vocab:
        kth = values[:, setting.top_k - 1:setting.top_k]
        values = values.masked_fill(values < kth, float("-inf"))  # ties with the k-th stay, as in `filtered`
    if setting.top_p < 1.0:
        if setting.top_k and setting.top_k < vocab:
            full = values  # top-k already removed everything outside the candidates
        else:
            full = scaled
        probs = values.softmax(-1) if full is values else (values - full.logsumexp(-1, keepdim=True)).exp()
        before = probs.cumsum(-1) - probs  # the mass of the tokens ranked above each one
        if full is not values and bool((probs.sum(-1) < setting.top_p).any()):
            return None  # some row needs more than the candidates to reach top_p
        values = values.masked_fill(before >= setting.top_p, float("-inf"))  # the first token always stays
    return index, values.softmax(-1)


def next_tokens(logits: torch.Tensor, settings: list[Sampling], seen: list[torch.Tensor | None],
                generators: list[torch.Generator | None]) -> list[int]:
    """The next token of each row of (B, V) float32 logits."""
    if all(s.greedy and s.repetition_penalty == 1.0 for s in settings):  # the common case: one argmax
        return logits.argmax(-1).tolist()
    chosen: list[int | None] = [None] * len(settings)
    alike: dict[Sampling, list[int]] = {}  # sampled rows without a penalty, by their settings: filtered together
    for row, setting in enumerate(settings):
        if seen[row] is not None and setting.repetition_penalty != 1.0:
            scores = penalise(logits[row], seen[row], setting.repetition_penalty)
            if setting.greedy:
                chosen[row] = int(scores.argmax())
            else:
                probs = filtered(scores, setting).softmax(-1)
                chosen[row] = int(torch.multinomial(probs, 1, generator=generators[row]))
        elif setting.greedy:
            chosen[row] = int(logits[row].argmax())
        else:
            alike.setdefault(setting, []).append(row)
    for setting, rows in alike.items():
        found = candidates(logits[rows], setting)
        if found is not None:  # draw among the candidates only
            index, weights = found
            drawn = [int(index[k, torch.multinomial(weights[k], 1, generator=generators[row])])
                     for k, row in enumerate(rows)]
        else:
            probs = filtered(logits[rows], setting).softmax(-1)  # (n, V)
            drawn = [int(torch.multinomial(probs[k], 1, generator=generators[row])) for k, row in enumerate(rows)]
        for row, token in zip(rows, drawn):  # each row drew from its own stream
            chosen[row] = token
    return chosen  # type: ignore[return-value]  (every row is chosen)
