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
        probs = filtered(logits[rows], setting).softmax(-1)  # (n, V)
        for k, row in enumerate(rows):  # each row draws from its own stream
            chosen[row] = int(torch.multinomial(probs[k], 1, generator=generators[row]))
    return chosen  # type: ignore[return-value]  (every row is chosen)
