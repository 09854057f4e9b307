"""`torch.compile` of the transformer blocks (regional compilation), behind one door.

Compiling each block in place (`nn.Module.compile`) rather than the whole model keeps three
things: the parameter names (checkpoints and saved models are unchanged), FSDP2's per-block
sharding, and a short compile, because every block has the same code and shapes and so shares
one compiled graph. The eager model is the fallback and the reference: a test trains both and
compares the losses.
"""

from __future__ import annotations

import shutil

import torch
from torch import nn

from honing.errors import HoningError


def compile_available(device: torch.device) -> tuple[bool, str]:
    """Whether torch.compile can generate code for `device`, and why not."""
    if not hasattr(torch, "compile"):
        return False, f"torch {torch.__version__} has no torch.compile"
    if device.type == "cpu" and not any(shutil.which(cc) for cc in ("cc", "gcc", "g++", "clang")):
        return False, "torch.compile on CPU needs a C++ compiler (install gcc), or set train.compile=false"
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return False, "torch.compile on CUDA needs triton (it ships with the CUDA builds of torch)"
    return True, ""


def compile_blocks(blocks: list[nn.Module], device: torch.device) -> int:
    """Compile each block in place; returns how many were compiled."""
    ok, why = compile_available(device)
    if not ok:
        raise HoningError(f"train.compile=true, but {why}")
    for block in blocks:
        block.compile()
    return len(blocks)
