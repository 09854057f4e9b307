"""The head + loss kernels against the plain reference: loss, gradients, memory, selection."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from honing.config import TrainConfig
from honing.data.packing import collate_padded
from honing.errors import HoningError
from honing.train import kernels
from honing.train.kernels import linear_cross_entropy, plain_linear_cross_entropy, select_loss_kernel
from honing.train.objectives.causal_lm import TargetedCausalLM
from tests.train.helpers import random_examples, tiny_llama

N, H, V = 37, 16, 50  # N is prime: no chunk size but 1 and N divides it


def head_problem(seed: int = 0, bias: bool = False):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, H, generator=gen)
    weight = torch.randn(V, H, generator=gen) * 0.5
    targets = torch.randint(0, V, (N,), generator=gen)
    b = torch.randn(V, generator=gen) if bias else None
    return hidden, weight, targets, b


def loss_and_grads(fn, hidden, weight, targets, bias, *, weight_trainable, bf16=False, chunk_size=8):
    hidden = hidden.clone().requires_grad_()
    weight = weight.clone().requires_grad_(weight_trainable)
    bias = bias.clone().requires_grad_() if bias is not None else None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = fn(hidden, weight, targets, bias=bias, chunk_size=chunk_size)
    (loss * 0.37).backward()  # a grad_output other than 1 must scale the stored gradients
    return loss.detach(), hidden.grad, weight.grad, bias.grad if bias is not None else None


@pytest.mark.parametrize("chunk_size", [1, 8, N, 1000])
@pytest.mark.parametrize("weight_trainable", [True, False])
@pytest.mark.parametrize("bias", [False, True])
def test_chunked_matches_plain_fp32(chunk_size, weight_trainable, bias):
    problem = head_problem(bias=bias)
    ref = loss_and_grads(plain_linear_cross_entropy, *problem, weight_trainable=weight_trainable)
    out = loss_and_grads(linear_cross_entropy, *problem, weight_trainable=weight_trainable, chunk_size=chunk_size)
    assert out[0].dtype == torch.float32
    for expected, actual in zip(ref, out):
        if expected is None:
            assert actual is None  # a frozen head gets no gradient
        else:
            torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [8, N])
@pytest.mark.parametrize("weight_trainable", [True, False])
def test_chunked_matches_plain_under_bf16_autocast(chunk_size, weight_trainable):
    problem = head_problem(seed=1, bias=True)
    ref = loss_and_grads(plain_linear_cross_entropy, *problem, weight_trainable=weight_trainable, bf16=True)
    out = loss_and_grads(linear_cross_entropy, *problem, weight_trainable=weight_trainable, bf16=True, chunk_size=chunk_size)
    assert out[0].dtype == torch.float32
    torch.testing.assert_close(out[0], ref[0], rtol=1e-4, atol=1e-3)  # same bf16 logits, fp32 loss
    for expected, actual in zip(ref[1:], out[1:]):
        if expected is None:
            assert actual is None
        else:  # bf16 gradient matmuls; chunked sums weight/bias gradients in fp32, plain in bf16
            assert actual.dtype == expected.dtype
            torch.testing.assert_close(actual, expected, rtol=2e-2, atol=2e-2)


def test_no_grad_needed_computes_only_the_loss():
    hidden, weight, targets, _ = head_problem()
    with torch.no_grad():
        torch.testing.assert_close(
            linear_cross_entropy(hidden, weight, targets), plain_linear_cross_entropy(hidden, weight, targets)
        )


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any aten op produces, forward and backward."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("bf16", [False, True])
def test_chunked_never_makes_the_whole_logits(bf16):
    n, hidden_size, vocab, chunk = 64, 8, 1000, 16  # vocab dominates: chunk × V is the largest allowed
    hidden = torch.randn(n, hidden_size, requires_grad=True)
    weight = torch.randn(vocab, hidden_size, requires_grad=True)
    targets = torch.randint(0, vocab, (n,))
    sizes = {}
    for name, fn in [("plain", plain_linear_cross_entropy), ("chunked", linear_cross_entropy)]:
        with LargestTensor() as probe, torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            fn(hidden, weight, targets, chunk_size=chunk).backward()
        sizes[name] = probe.largest
    assert sizes["plain"] >= n * vocab  # the probe sees the (N, V) logits when they exist
    assert sizes["chunked"] <= chunk * vocab


def test_tied_head_targeted_lm_chunked_matches_plain():
    """On a tiny Llama with tied embeddings, the chunked kernel gives plain's loss and gradients."""
    batch = collate_padded(random_examples(4, 97, seed=3), pad_id=0)
    results = {}
    for kernel in ("plain", "chunked"):
        model = tiny_llama(97)
        model.config.tie_word_embeddings = True
        model.tie_weights()
        assert model.lm_head.weight is model.model.embed_tokens.weight
        module = TargetedCausalLM(model, loss_kernel=kernel)
        loss_sum, n = module(**batch)
        (loss_sum / n).backward()
        results[kernel] = (loss_sum.detach(), {k: p.grad.clone() for k, p in model.named_parameters()})
    (loss_plain, grads_plain), (loss_chunked, grads_chunked) = results["plain"], results["chunked"]
    torch.testing.assert_close(loss_chunked, loss_plain, rtol=1e-5, atol=1e-5)
    assert grads_chunked.keys() == grads_plain.keys()
    for name in grads_plain:
        torch.testing.assert_close(grads_chunked[name], grads_plain[name], rtol=1e-5, atol=1e-6, msg=name)


def test_lora_wrapped_head_falls_back_to_its_own_forward():
    """A head that LoRA adapts is not a plain Linear: the loss must include the adapter."""
    from peft import LoraConfig, get_peft_model

    batch = collate_padded(random_examples(4, 97, seed=5), pad_id=0)
    model = get_peft_model(tiny_llama(97), LoraConfig(r=4, target_modules=["lm_head", "q_proj"], init_lora_weights=False))
    reference = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    loss_sum, n = TargetedCausalLM(model, loss_kernel="chunked")(**batch)
    torch.testing.assert_close(loss_sum / n, reference, rtol=1e-5, atol=1e-6)


def test_selection():
    assert select_loss_kernel("plain", "cpu") is plain_linear_cross_entropy
    assert select_loss_kernel("chunked", "cpu") is linear_cross_entropy
    assert select_loss_kernel("auto", "cpu") is linear_cross_entropy
    assert TrainConfig().loss_kernel == "auto"
    with pytest.raises(HoningError, match="one of"):
        select_loss_kernel("fused", "cpu")


def test_liger_on_cpu_says_what_is_missing():
    with pytest.raises(HoningError, match="loss_kernel=liger needs a CUDA GPU and liger-kernel"):
        select_loss_kernel("liger", "cpu")
    with pytest.raises(HoningError, match="liger"):
        TargetedCausalLM(tiny_llama(97), loss_kernel="liger")


@pytest.mark.gpu
@pytest.mark.skipif(not kernels.liger_available()[0], reason="needs CUDA and liger-kernel: " + kernels.liger_available()[1])
@pytest.mark.parametrize("bf16", [False, True])
def test_liger_matches_plain_on_gpu(bf16):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(300, 64, generator=gen).cuda()
    weight = (torch.randn(1000, 64, generator=gen) * 0.5).cuda()
    targets = torch.randint(0, 1000, (300,), generator=gen).cuda()
    results = []
    for fn in (plain_linear_cross_entropy, kernels.liger_linear_cross_entropy, linear_cross_entropy):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = fn(h, w, targets)
        loss.backward()
        results.append((loss.detach(), h.grad, w.grad))
    tol = dict(rtol=2e-2, atol=2e-2) if bf16 else dict(rtol=1e-4, atol=1e-4)
    for other in results[1:]:
        for expected, actual in zip(results[0], other):
            torch.testing.assert_close(actual.float(), expected.float(), **tol)
