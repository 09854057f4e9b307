"""The output head and its cross-entropy, behind one door: plain, chunked, or Liger's fused kernel.

All three take the hidden states at target positions (N, H), the head's weight (V, H), the
targets (N,) and an optional bias (V,), and return the *summed* cross-entropy as an fp32
scalar. Every target counts (the caller has already selected the positions that have one).

- `plain_linear_cross_entropy`: the reference. Materialises the whole (N, V) logits, and
  autograd keeps them (and their fp32 copy) for the backward pass.
- `linear_cross_entropy` (chunked): walks N in chunks; each chunk's logits are made in fp32,
  reduced to a loss, and turned at once into that chunk's gradients (softmax − one-hot), so
  no more than (chunk, V) logits ever exist. Backward only scales the stored gradients.
- Liger's `LigerFusedLinearCrossEntropyLoss`: the same idea as Triton kernels; CUDA only,
  optional (`pip install liger-kernel`), checked once in `liger_available`.

`select_loss_kernel` picks one; the test `tests/train/test_kernels.py` holds them to agree.
"""

from __future__ import annotations

import functools
from typing import Callable, Protocol

import torch
import torch.nn.functional as F

from honing.errors import HoningError

MIN_LIGER = "0.5"
DEFAULT_CHUNK_SIZE = 1024  # rows; (1024, V) fp32 logits ≈ 200 MB at V = 49k, 500 MB at V = 128k.
# On CPU 256-1024 all ran as fast as plain; 1024 was the fastest under bf16 autocast.
KERNELS = ("auto", "plain", "chunked", "liger")


class LossKernel(Protocol):
    def __call__(
        self,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        *,
        bias: torch.Tensor | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> torch.Tensor: ...


# --------------------------------------------------------------------------- reference


def plain_linear_cross_entropy(
    hidden: torch.Tensor,  # (N, H)
    weight: torch.Tensor,  # (V, H)
    targets: torch.Tensor,  # (N,)
    *,
    bias: torch.Tensor | None = None,  # (V,)
    chunk_size: int = DEFAULT_CHUNK_SIZE,  # unused; the same signature as the others
) -> torch.Tensor:
    """Summed cross-entropy of hidden @ weight.T (+ bias) against targets, with whole logits."""
    logits = F.linear(hidden, weight, bias)  # (N, V), autocast dtype if autocast is on
    return F.cross_entropy(logits.float(), targets, reduction="sum")


# --------------------------------------------------------------------------- chunked


def _compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype the head's matmul runs in: autocast's if it is on here, as F.linear would."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.promote_types(hidden.dtype, weight.dtype)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Forward computes the loss and, chunk by chunk, the gradients; backward scales them."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size, compute_dtype, need_hidden, need_weight, need_bias):
        n_rows = hidden.shape[0]
        # Autocast is off inside: the casts below are the ones F.linear would make under it.
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(compute_dtype)  # (V, H); a copy only under autocast, as with F.linear
            b = bias.to(compute_dtype) if bias is not None else None
            loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad_hidden = torch.empty_like(hidden) if need_hidden else None  # (N, H)
            grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
            grad_bias = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if need_bias else None
            for start in range(0, n_rows, chunk_size):
                end = min(start + chunk_size, n_rows)
                h = hidden[start:end].to(compute_dtype)  # (c, H)
                t = targets[start:end]  # (c,)
                logits = F.linear(h, w, b).float()  # (c, V) fp32
                lse = torch.logsumexp(logits, dim=-1)  # (c,)
                loss += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
                if not (need_hidden or need_weight or need_bias):
                    continue
                grad_logits = logits.sub_(lse[:, None]).exp_()  # (c, V) softmax, in place
                grad_logits[torch.arange(end - start, device=t.device), t] -= 1.0  # − one-hot
                grad_logits_mm = grad_logits.to(compute_dtype)  # (c, V); the matmuls run as the forward's
                if need_hidden:
                    grad_hidden[start:end] = grad_logits_mm @ w  # (c, H)
                if need_weight:
                    if compute_dtype == torch.float32:
                        grad_weight.addmm_(grad_logits_mm.T, h)  # (V, H)
                    else:  # low-precision matmul, fp32 accumulation across chunks
                        grad_weight += grad_logits_mm.T @ h
                if need_bias:
                    grad_bias += grad_logits.sum(0)
        ctx.save_for_backward(
            grad_hidden,
            grad_weight.to(weight.dtype) if need_weight else None,
            grad_bias.to(bias.dtype) if need_bias else None,
        )
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        scale = grad_output  # () fp32; scaling by a tensor keeps this free of host syncs
        return (
            grad_hidden * scale.to(grad_hidden.dtype) if grad_hidden is not None else None,
            grad_weight * scale.to(grad_weight.dtype) if grad_weight is not None else None,
            grad_bias * scale.to(grad_bias.dtype) if grad_bias is not None else None,
            None, None, None, None, None, None,
        )


def linear_cross_entropy(
    hidden: torch.Tensor,  # (N, H)
    weight: torch.Tensor,  # (V, H)
    targets: torch.Tensor,  # (N,)
    *,
    bias: torch.Tensor | None = None,  # (V,)
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """Summed cross-entropy of hidden @ weight.T (+ bias) against targets, never holding more
    than (chunk_size, V) logits. Gradients are made in the forward pass, and only for the
    inputs that need them (a frozen head, as under LoRA, costs no weight gradient)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    grad_on = torch.is_grad_enabled()
    need = [grad_on and x is not None and x.requires_grad for x in (hidden, weight, bias)]
    return _ChunkedLinearCrossEntropy.apply(
        hidden, weight, bias, targets, chunk_size, _compute_dtype(hidden, weight), *need
    )


# --------------------------------------------------------------------------- Liger


@functools.lru_cache(maxsize=1)
def liger_available() -> tuple[bool, str]:
    """(True, "") when Liger's fused linear cross-entropy can run here, else (False, why not)."""
    from packaging.version import Version

    if not torch.cuda.is_available():
        return False, "no CUDA device is available"
    try:
        import liger_kernel
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss  # noqa: F401
    except Exception as err:  # ImportError, or triton failing at import
        return False, f"liger-kernel does not import ({type(err).__name__}: {err}); pip install 'liger-kernel>={MIN_LIGER}'"
    from importlib.metadata import PackageNotFoundError, version as dist_version

    try:
        found = dist_version("liger-kernel")
    except PackageNotFoundError:
        found = getattr(liger_kernel, "__version__", "0")
    if Version(found) < Version(MIN_LIGER):
        return False, f"liger-kernel {found} is older than {MIN_LIGER}"
    return True, ""


@functools.lru_cache(maxsize=1)
def _liger_loss() -> Callable:
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    return LigerFusedLinearCrossEntropyLoss(reduction="sum")


def liger_linear_cross_entropy(
    hidden: torch.Tensor,  # (N, H)
    weight: torch.Tensor,  # (V, H)
    targets: torch.Tensor,  # (N,)
    *,
    bias: torch.Tensor | None = None,  # (V,)
    chunk_size: int = DEFAULT_CHUNK_SIZE,  # unused: Liger sizes its own chunks
) -> torch.Tensor:
    """Liger's fused kernel with the same contract as the others (CUDA; see liger_available)."""
    dtype = _compute_dtype(hidden, weight)  # cast as F.linear would under autocast
    out = _liger_loss()(
        weight.to(dtype), hidden.to(dtype), targets, bias.to(dtype) if bias is not None else None
    )
    if isinstance(out, tuple):  # newer versions can also return z-loss / accuracy
        out = out[0]
    return out.float()


# --------------------------------------------------------------------------- the door


def select_loss_kernel(name: str, device: torch.device | str) -> LossKernel:
    """The head + loss function to use on `device`.

    auto: Liger on CUDA when it is installed; otherwise chunked. Measured on a 2-core CPU
    (N=4096, H=576, V=49152, forward + backward), chunked runs within ±10 % of plain's time in
    fp32 and under bf16 autocast, at 1/3 to 1/7 of its peak memory (plain holds ~2.3 GiB of
    logits and their gradients), so it is never the worse choice there.
    """
    device = torch.device(device)
    if name not in KERNELS:
        raise HoningError(f"train.loss_kernel must be one of {', '.join(KERNELS)}, not {name!r}")
    if name == "plain":
        return plain_linear_cross_entropy
    if name == "chunked":
        return linear_cross_entropy
    if device.type == "cuda" and liger_available()[0]:
        return liger_linear_cross_entropy
    if name == "liger":
        why = liger_available()[1] if device.type == "cuda" else f"the model is on {device.type}, not CUDA"
        raise HoningError(
            f"train.loss_kernel=liger needs a CUDA GPU and liger-kernel>={MIN_LIGER} "
            f"(pip install 'honing[gpu]'): {why}; use train.loss_kernel=chunked (or auto) here"
        )
    return linear_cross_entropy
