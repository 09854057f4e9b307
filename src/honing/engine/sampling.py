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


def candidates(logits: torch.Tensor, setting: Sampling) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """For (n, V) logits: the most likely tokens (n, K), their probabilities (n, K) under `filtered`'s
    distribution (temperature, top-k, then top-p), and which rows this holds for (n,): a row's top-p set, and
    every token tied with its k-th, must lie inside the K candidates. Found without sorting the whole
    vocabulary. None when the support is the whole vocabulary or wider than the candidates for every row."""
    vocab = logits.shape[-1]
    if (setting.top_p >= 1.0 and not setting.top_k) or setting.top_k >= min(vocab, CANDIDATES):
        return None  # the support (or the top-k set) is as wide as the candidates could be
    scaled = logits / setting.temperature
    values, index = torch.topk(scaled, min(vocab, CANDIDATES), dim=-1)  # (n, K), most likely first
    fits = torch.ones(values.shape[0], dtype=torch.bool, device=values.device)
    if setting.top_k:
        kth = values[:, setting.top_k - 1:setting.top_k]
        fits &= values[:, -1] < kth[:, 0]  # a token tied with the k-th beyond the candidates: not this way
        values = values.masked_fill(values < kth, float("-inf"))  # ties with the k-th stay, as in `filtered`
    if setting.top_p < 1.0:
        if setting.top_k:  # top-p renormalises over the top-k set, which lies inside the candidates
            probs = values.softmax(-1)
        else:
            probs = (values - scaled.logsumexp(-1, keepdim=True)).exp()
            fits &= probs.sum(-1) >= setting.top_p  # else the top-p set reaches beyond the candidates
        before = probs.cumsum(-1) - probs  # the mass of the tokens ranked above each one
        values = values.masked_fill(before >= setting.top_p, float("-inf"))  # the first token always stays
    return index, values.softmax(-1), fits


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
        fits = found[2].tolist() if found is not None else [False] * len(rows)
        wide = [k for k, ok in enumerate(fits) if not ok]  # decided by each row's own logits, never its batch
        probs = filtered(logits[[rows[k] for k in wide]], setting).softmax(-1) if wide else None
        for k, row in enumerate(rows):  # each row draws from its own stream
            if fits[k]:
                index, weights, _ = found  # type: ignore[misc]
                chosen[row] = int(index[k, torch.multinomial(weights[k], 1, generator=generators[row])])
            else:
                chosen[row] = int(torch.multinomial(probs[wide.index(k)], 1, generator=generators[row]))
    return chosen  # type: ignore[return-value]  (every row is chosen)
