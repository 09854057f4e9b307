"""Data parallelism on torch.distributed: DDP, or FSDP2 (`fully_shard`) for models that do not fit one device.

Both average gradients over processes; the engine scales the loss by the world size so the
result is the sum over all target tokens divided by their number, whichever is used.
"""

from __future__ import annotations

import contextlib

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from honing.train.distributed import Dist
from honing.train.objectives.causal_lm import causal_lm_of


def is_fsdp(module: nn.Module) -> bool:
    return hasattr(module, "set_requires_gradient_sync")


def block_modules(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks: each becomes one FSDP unit (gathered just before it runs)."""
    lm = causal_lm_of(model)
    names = set(getattr(lm, "_no_split_modules", None) or [])
    blocks = [m for m in lm.modules() if type(m).__name__ in names]
    if not blocks:
        raise ValueError(f"cannot find the transformer blocks of {type(lm).__name__} to shard")
    return blocks


def wrap(module: nn.Module, strategy: str, ctx: Dist) -> nn.Module:
    """`module` ready for `ctx`: unchanged in one process, DDP- or FSDP2-wrapped under torchrun."""
    if not ctx.enabled:
        return module
    if strategy == "ddp":
        return DistributedDataParallel(module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    for block in block_modules(module.model):
        fully_shard(block, mesh=mesh)
    fully_shard(module, mesh=mesh)  # the rest: embeddings, final norm, head
    return module


def gradient_sync(module: nn.Module, sync: bool):
    """Skip the gradient all-reduce / reduce-scatter on all but the last micro-batch of a step."""
    if isinstance(module, DistributedDataParallel):
        return contextlib.nullcontext() if sync else module.no_sync()
    if is_fsdp(module):
        module.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def as_float(value) -> float:
    """A scalar that may be a DTensor (FSDP2's gradient norm) as a Python float."""
    return float(value.full_tensor()) if hasattr(value, "full_tensor") else float(value)


def full_state_dict(model: nn.Module, ctx: Dist, strategy: str) -> dict | None:
    """The whole model's tensors on the main process, gathered from FSDP2 shards (a collective:
    every process must call it); None when the model is not sharded."""
    if not (ctx.enabled and strategy == "fsdp"):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
