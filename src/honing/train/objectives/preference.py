"""Direct preference objectives: DPO (sigmoid, label smoothing), IPO, SimPO and ORPO.

A preference example is one prompt with two answers. Both are rendered with the chat
template and trained on the answer tokens only; a batch holds the B chosen rows first and
the B rejected rows after them (2B rows, right-padded), so one forward pass scores both.

The log-probability of an answer is the *sum* of its tokens' log-probabilities (prompt and
padding excluded), computed in fp32 from the logits at target positions only: the head is
never applied where no answer token is predicted.

The reference model is the frozen starting policy. With a PEFT (LoRA) policy it is the same
weights with the adapter disabled, never a second copy in memory; with a full model it is a
separate frozen module passed in. Its log-probabilities can also be precomputed once
(`precompute_reference`) and carried in the batch as `reference_logps`.

Losses are per pair; `PreferenceObjective.forward` returns their *sum* and the number of
pairs, so the engine divides by the pairs of the whole optimiser step (as it divides by
target tokens for causal LM) and gradient accumulation does not change the result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from honing.data.packing import collate_padded
from honing.data.templating import tokenize_conversation
from honing.data.types import IGNORE_INDEX, TokenizedExample
from honing.train.objectives.causal_lm import _LOGIT_TRANSFORMS, causal_lm_of
from honing.train.shared_prefix import PrefixPlan, backbone_with_shared_prefix, plan_prefix, whole_batch_or_pairs

PreferenceLoss = Literal["sigmoid", "ipo", "simpo", "orpo"]
"""sigmoid: DPO (Rafailov et al. 2023), with optional label smoothing (conservative DPO);
ipo: Azar et al. 2023; simpo: reference-free, length-normalised (Meng et al. 2024);
orpo: reference-free, SFT plus an odds-ratio term (Hong et al. 2024)."""
PREFERENCE_LOSSES: tuple[str, ...] = ("sigmoid", "ipo", "simpo", "orpo")
IpoNormalize = Literal["mean", "sum"]
"""How IPO turns each answer's token log-ratios into one number: their per-token mean, or their sum."""
REFERENCE_FREE: tuple[str, ...] = ("simpo", "orpo")
METRICS = ("chosen_reward", "rejected_reward", "margin", "accuracy")


@dataclass
class PreferenceExample:
    """One prompt with its chosen and rejected answers, each a full tokenised conversation."""

    chosen: TokenizedExample
    rejected: TokenizedExample
    reference_logps: tuple[float, float] | None = None
    """(chosen, rejected) summed log-probabilities under the reference model, when precomputed."""


# --------------------------------------------------------------------------- data


def tokenize_preference(tokenizer: Any, record: dict[str, Any], max_length: int) -> PreferenceExample:
    """`record` as `normalize(record, "preference")` gives it: {"prompt", "chosen", "rejected"} message lists.

    The loss mask covers the last assistant turn (its content and end-of-turn token); earlier
    turns of a multi-turn answer are context, like the prompt.
    """
    chosen, rejected = (
        tokenize_conversation(tokenizer, record["prompt"] + record[key], train_on="last_assistant", max_length=max_length)
        for key in ("chosen", "rejected")
    )
    return PreferenceExample(chosen=chosen, rejected=rejected)


def collate_preference(examples: Sequence[PreferenceExample], pad_id: int) -> dict[str, torch.Tensor]:
    """One right-padded batch of 2B rows: the B chosen answers, then the B rejected ones.

    Adds `reference_logps` (2B,) in the same row order when every example carries precomputed ones.
    """
    batch = collate_padded([e.chosen for e in examples] + [e.rejected for e in examples], pad_id)
    if examples and all(e.reference_logps is not None for e in examples):
        chosen = [e.reference_logps[0] for e in examples]
        rejected = [e.reference_logps[1] for e in examples]
        batch["reference_logps"] = torch.tensor(chosen + rejected, dtype=torch.float32)  # (2B,)
    return batch


# --------------------------------------------------------------------------- log-probabilities


def sequence_logps(
    model: nn.Module, batch: dict[str, torch.Tensor], plan: PrefixPlan | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each row's target tokens (shifted; IGNORE_INDEX excluded), and their count.

    Returns (logp_sum (R,) float32, n_tokens (R,) int64) for the R rows of the batch. With a `plan`
    the rows' shared prefixes are computed once (honing.train.shared_prefix); the model must then
    not transform its logits.
    """
    input_ids, labels = batch["input_ids"], batch["labels"]  # (R, T)
    n_tokens = (labels[:, 1:] != IGNORE_INDEX).sum(dim=1)  # (R,)
    lm = causal_lm_of(model)
    if plan is not None:
        backbone = getattr(lm, lm.base_model_prefix)
        hidden, labels = backbone_with_shared_prefix(backbone, plan, input_ids, labels, batch["attention_mask"],
                                                     batch.get("position_ids"))  # (R, S, H), (R, S): each row's suffix
        targets = labels[:, 1:]
        mask = targets != IGNORE_INDEX
        return _summed_logps(lm.get_output_embeddings()(hidden[:, :-1][mask]), targets, mask), n_tokens
    targets = labels[:, 1:]  # (R, T-1): token t+1 is predicted at position t
    mask = targets != IGNORE_INDEX
    inputs = dict(
        input_ids=input_ids,
        attention_mask=batch.get("attention_mask"),
        position_ids=batch.get("position_ids"),
        use_cache=False,
    )
    if any(getattr(lm.config, name, None) for name in _LOGIT_TRANSFORMS):
        logits = model(**inputs).logits[:, :-1][mask]  # (N, V): the model's own logit transform applies
    else:
        backbone = getattr(lm, lm.base_model_prefix)
        hidden = backbone(**inputs).last_hidden_state  # (R, T, H)
        logits = lm.get_output_embeddings()(hidden[:, :-1][mask])  # (N, V): head only where a target is
    return _summed_logps(logits, targets, mask), n_tokens


def _summed_logps(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(R,) float32 sums of the target tokens' log-probs; `logits` (N, V) are those of mask's True entries."""
    token_logps = -F.cross_entropy(logits.float(), targets[mask], reduction="none")  # (N,)
    rows = torch.arange(len(targets), device=targets.device).unsqueeze(1).expand_as(targets)[mask]  # (N,)
    logp_sum = torch.zeros(len(targets), dtype=torch.float32, device=token_logps.device)
    return logp_sum.index_add(0, rows.to(token_logps.device), token_logps)  # (R,)


@torch.no_grad()
def reference_logps(
    model: nn.Module, batch: dict[str, torch.Tensor], reference_model: nn.Module | None = None,
    plan: PrefixPlan | None = None,
) -> torch.Tensor:
    """Summed answer log-probabilities (R,) under the reference: `reference_model` when given,
    else `model` itself with its PEFT adapter disabled (no second copy of the weights); with the
    rows' shared prefixes computed once where `plan` says.

    Computed in eval mode (no dropout), so the reference is deterministic; the training mode
    of the module is restored afterwards.
    """
    scorer = reference_model if reference_model is not None else model
    if reference_model is None and not hasattr(model, "disable_adapter"):
        raise ValueError(
            "a full (non-PEFT) policy needs a reference_model, or reference log-probs precomputed with precompute_reference"
        )
    modes = {module: module.training for module in scorer.modules()}
    scorer.eval()
    try:
        if reference_model is not None:
            logps, _ = sequence_logps(reference_model, batch, plan)
        else:
            with model.disable_adapter():
                logps, _ = sequence_logps(model, batch, plan)
    finally:
        for module, training in modes.items():
            module.training = training
    return logps


_reference_logps = reference_logps  # PreferenceObjective.forward's argument of the same name shadows it


def precompute_reference(
    model: nn.Module,
    examples: Sequence[PreferenceExample],
    pad_id: int,
    *,
    reference_model: nn.Module | None = None,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    advance: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Reference log-probs of every example, once: a CPU float32 tensor (N, 2) whose row i is
    (chosen, rejected) of `examples[i]`. Attach them with `with_reference`.

    A full (non-PEFT) policy that has not been updated yet is its own reference: pass it as
    `reference_model` too (`precompute_reference(policy, examples, pad, reference_model=policy)`).
    `advance(n)` is called after each batch of n examples (a progress bar)."""
    scorer = reference_model if reference_model is not None else model
    device = torch.device(device) if device is not None else next(scorer.parameters()).device
    cache = torch.empty((len(examples), 2), dtype=torch.float32)
    for start in range(0, len(examples), batch_size):
        chunk = [replace(e, reference_logps=None) for e in examples[start : start + batch_size]]
        batch = {k: v.to(device) for k, v in collate_preference(chunk, pad_id).items()}
        logps = reference_logps(model, batch, reference_model).float().cpu()  # (2b,)
        cache[start : start + len(chunk), 0] = logps[: len(chunk)]
        cache[start : start + len(chunk), 1] = logps[len(chunk) :]
        if advance is not None:
            advance(len(chunk))
    return cache


def with_reference(examples: Sequence[PreferenceExample], cache: torch.Tensor) -> list[PreferenceExample]:
    """The examples carrying their precomputed reference log-probs (`cache` row i for example i)."""
    if len(cache) != len(examples):
        raise ValueError(f"reference cache has {len(cache)} rows for {len(examples)} examples")
    return [replace(e, reference_logps=(float(c), float(r))) for e, (c, r) in zip(examples, cache.tolist())]


# --------------------------------------------------------------------------- losses
# Each takes per-pair tensors (B,) and returns (per-pair losses (B,), metrics of (B,) tensors).


def _metrics(chosen_reward: torch.Tensor, rejected_reward: torch.Tensor) -> dict[str, torch.Tensor]:
    chosen_reward, rejected_reward = chosen_reward.detach(), rejected_reward.detach()
    return {
        "chosen_reward": chosen_reward,
        "rejected_reward": rejected_reward,
        "margin": chosen_reward - rejected_reward,
        "accuracy": (chosen_reward > rejected_reward).float(),
    }


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO sigmoid loss: −(1−ε)·logσ(β·x) − ε·logσ(−β·x), x = (π_c − ref_c) − (π_r − ref_r).

    ε = label_smoothing is the assumed probability that a label is flipped (conservative DPO);
    ε = 0 is plain DPO. Rewards are β·(π − ref).
    """
    chosen_ratio = policy_chosen - reference_chosen  # (B,)
    rejected_ratio = policy_rejected - reference_rejected  # (B,)
    logits = beta * (chosen_ratio - rejected_ratio)
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return losses, _metrics(beta * chosen_ratio, beta * rejected_ratio)


def ipo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
    chosen_tokens: torch.Tensor | None = None,
    rejected_tokens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IPO (Azar et al. 2023): (x − 1/(2β))², x = (π_c − ref_c) − (π_r − ref_r).

    With `chosen_tokens` and `rejected_tokens` (B,) given, each side's log-ratio is divided by
    its answer's token count, x = (π_c − ref_c)/|y_c| − (π_r − ref_r)/|y_r|: the per-token form
    the IPO authors confirmed and TRL uses (`ipo_normalize: mean`). Without them the summed
    log-ratios are used (`ipo_normalize: sum`), so the target 1/(2β) is a margin on the whole
    answer and β means something else. Rewards are β·(log-ratio), as for DPO, on the same scale as x.
    """
    chosen_ratio = policy_chosen - reference_chosen  # (B,)
    rejected_ratio = policy_rejected - reference_rejected  # (B,)
    if (chosen_tokens is None) != (rejected_tokens is None):
        raise ValueError("ipo_loss takes both chosen_tokens and rejected_tokens (mean), or neither (sum)")
    if chosen_tokens is not None:
        chosen_ratio, rejected_ratio = chosen_ratio / chosen_tokens, rejected_ratio / rejected_tokens
    losses = (chosen_ratio - rejected_ratio - 1 / (2 * beta)) ** 2
    return losses, _metrics(beta * chosen_ratio, beta * rejected_ratio)


def simpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    chosen_tokens: torch.Tensor,
    rejected_tokens: torch.Tensor,
    beta: float,
    gamma: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SimPO (reference-free): −logσ(β·(π_c/|y_c| − π_r/|y_r|) − γ); rewards are β·π/|y|."""
    chosen_reward = beta * policy_chosen / chosen_tokens
    rejected_reward = beta * policy_rejected / rejected_tokens
    losses = -F.logsigmoid(chosen_reward - rejected_reward - gamma)
    return losses, _metrics(chosen_reward, rejected_reward)


def orpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    chosen_tokens: torch.Tensor,
    rejected_tokens: torch.Tensor,
    lam: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ORPO (Hong et al. 2024): −π_c/|y_c| + λ·(−logσ(log odds_c − log odds_r)).

    The first term is the chosen answer's per-token NLL (the SFT term); odds = P/(1 − P) with
    P = exp(π/|y|), the length-normalised probability. Rewards are λ·π/|y| (as in TRL).
    """
    chosen_mean = policy_chosen / chosen_tokens  # (B,) mean token log-prob, < 0
    rejected_mean = policy_rejected / rejected_tokens
    # log odds = log P − log(1 − P), with log(1 − P) = log1p(−exp(log P)); stable for log P < 0
    log_odds = (chosen_mean - rejected_mean) - (torch.log1p(-torch.exp(chosen_mean)) - torch.log1p(-torch.exp(rejected_mean)))
    losses = -chosen_mean - lam * F.logsigmoid(log_odds)
    metrics = _metrics(lam * chosen_mean, lam * rejected_mean)
    metrics["log_odds_ratio"] = log_odds.detach()
    return losses, metrics


# --------------------------------------------------------------------------- objective


class PreferenceObjective(nn.Module):
    """Wraps a policy so that forward returns (summed loss over pairs, pair count, summed metrics).

    Metrics are summed over the pairs too (divide by the pair count, like the loss). Wrap this
    module (not the policy) in DDP. A `reference_model` is held without registering it as a
    submodule, so it is not in this module's parameters, state dict or optimiser.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: PreferenceLoss = "sigmoid",
        *,
        beta: float = 0.1,
        label_smoothing: float = 0.0,
        simpo_gamma: float = 0.5,
        orpo_lambda: float = 0.1,
        ipo_normalize: IpoNormalize = "mean",
        reference_model: nn.Module | None = None,
    ):
        super().__init__()
        if loss not in PREFERENCE_LOSSES:
            raise ValueError(f"loss must be one of {', '.join(PREFERENCE_LOSSES)}, not {loss!r}")
        if not 0.0 <= label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), not {label_smoothing}")
        if beta <= 0:
            raise ValueError(f"beta must be positive, not {beta}")
        if ipo_normalize not in ("mean", "sum"):
            raise ValueError(f"ipo_normalize must be mean or sum, not {ipo_normalize!r}")
        self.model = model
        self.loss = loss
        self.beta, self.label_smoothing = beta, label_smoothing
        self.simpo_gamma, self.orpo_lambda = simpo_gamma, orpo_lambda
        self.ipo_normalize = ipo_normalize
        self.shared_prefix = False  # set by the engine where train.shared_prefix applies
        if reference_model is not None:
            reference_model.requires_grad_(False).eval()
        self.__dict__["reference_model"] = reference_model  # not a submodule: never trained, never saved

    # What the engine needs from an objective: the batch keys it takes, and its units (pairs),
    # by which the step's summed loss and metrics are divided; they are logged as `pairs`, and
    # the answers' real target tokens as `target_tokens`. No perplexity: the loss is not an NLL.
    input_keys = ("input_ids", "labels", "attention_mask", "position_ids", "reference_logps")
    unit = "pairs"

    @staticmethod
    def count(batch: dict[str, torch.Tensor]) -> int:
        return int(batch["input_ids"].shape[0]) // 2  # chosen rows, then rejected rows

    def prefix_plan(self, batch: dict[str, torch.Tensor]) -> PrefixPlan | None:
        """The rows that share a prefix: all of them (a common system prompt) or each pair (its prompt),
        whichever saves more; None where sharing is off or nothing is common."""
        if not self.shared_prefix or any(getattr(causal_lm_of(self.model).config, name, None) for name in _LOGIT_TRANSFORMS):
            return None
        return plan_prefix(batch["input_ids"], batch["labels"], batch.get("attention_mask"),
                           whole_batch_or_pairs(len(batch["input_ids"])))

    def forward(
        self,
        input_ids: torch.Tensor,  # (2B, T): chosen rows, then rejected rows
        labels: torch.Tensor,  # (2B, T)
        attention_mask: torch.Tensor | None = None,  # (2B, T)
        position_ids: torch.Tensor | None = None,  # (2B, T)
        reference_logps: torch.Tensor | None = None,  # (2B,), precomputed
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask, "position_ids": position_ids}
        pairs = len(input_ids) // 2
        plan = self.prefix_plan(batch)
        policy, n_tokens = sequence_logps(self.model, batch, plan)  # (2B,), (2B,)
        policy_chosen, policy_rejected = policy[:pairs], policy[pairs:]
        n_tokens = n_tokens.to(policy.dtype).clamp(min=1)
        chosen_tokens, rejected_tokens = n_tokens[:pairs], n_tokens[pairs:]
        if self.loss == "simpo":
            losses, metrics = simpo_loss(policy_chosen, policy_rejected, chosen_tokens, rejected_tokens, self.beta, self.simpo_gamma)
        elif self.loss == "orpo":
            losses, metrics = orpo_loss(policy_chosen, policy_rejected, chosen_tokens, rejected_tokens, self.orpo_lambda)
        else:
            if reference_logps is None:
                reference_logps = _reference_logps(self.model, batch, self.reference_model, plan)
            reference_logps = reference_logps.to(policy.device, policy.dtype)
            reference_chosen, reference_rejected = reference_logps[:pairs], reference_logps[pairs:]
            if self.loss == "sigmoid":
                losses, metrics = dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, self.beta, self.label_smoothing)
            elif self.ipo_normalize == "mean":
                losses, metrics = ipo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, self.beta,
                                           chosen_tokens, rejected_tokens)
            else:
                losses, metrics = ipo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, self.beta)
        summed = {name: value.sum() for name, value in metrics.items()}
        return losses.sum(), torch.tensor(pairs, device=losses.device), summed
