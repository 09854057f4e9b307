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
    chosen = []
    greedy_rows = [i for i, s in enumerate(settings) if s.greedy and s.repetition_penalty == 1.0]
    if len(greedy_rows) == len(settings):  # the common case: one argmax for the whole batch
        return logits.argmax(-1).tolist()
    plain = dict(zip(greedy_rows, logits[greedy_rows].argmax(-1).tolist())) if greedy_rows else {}
    for row, settings_row in enumerate(settings):
        if row in plain:
            chosen.append(plain[row])
            continue
        scores = logits[row]
        if seen[row] is not None:
            scores = penalise(scores, seen[row], settings_row.repetition_penalty)
        if settings_row.greedy:
            chosen.append(int(scores.argmax()))
            continue
        probs = filtered(scores, settings_row).softmax(-1)
        chosen.append(int(torch.multinomial(probs, 1, generator=generators[row])))
    return chosen
