"""honing.train.parallel: one process leaves the model alone; under a 2-process gloo group DDP averages
gradients, and gradient_sync(False) really skips the all-reduce (the no_sync micro-batches of a step)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import torch
from torch import nn

from honing.train.distributed import Dist
from honing.train.parallel import as_float, block_modules, full_state_dict, gradient_sync, is_fsdp, wrap


def test_single_process_is_unchanged():
    module = nn.Linear(2, 2)
    assert wrap(module, "ddp", Dist()) is module and wrap(module, "fsdp", Dist()) is module
    assert full_state_dict(module, Dist(), "fsdp") is None
    assert not is_fsdp(module)
    with gradient_sync(module, False):
        pass
    assert as_float(torch.tensor(2.5)) == 2.5


def test_block_modules_are_the_decoder_layers():
    from transformers import LlamaConfig, LlamaForCausalLM

    tiny_model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                              num_attention_heads=2, num_key_value_heads=1))
    blocks = block_modules(tiny_model)
    assert blocks == list(tiny_model.model.layers)
    assert len(blocks) == 2 and {type(b).__name__ for b in blocks} == {"LlamaDecoderLayer"}


def test_block_modules_needs_a_transformer():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {})()
            self.lin = nn.Linear(2, 2)

    try:
        block_modules(Plain())
    except ValueError as err:
        assert "transformer blocks" in str(err)
    else:
        raise AssertionError("no blocks should be an error")


WORKER = textwrap.dedent('''
    import json, os, sys
    import torch, torch.distributed as dist
    import torch.multiprocessing as mp
    from torch import nn
    from honing.train.distributed import Dist
    from honing.train.parallel import gradient_sync, wrap

    def work(rank, port, out):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=2)
        torch.manual_seed(0)
        module = nn.Linear(1, 1, bias=False)
        ddp = wrap(module, "ddp", Dist(rank=rank, world_size=2))
        x = torch.tensor([[float(rank + 1)]])  # rank 0 sees 1, rank 1 sees 2: d(w·x)/dw = x
        with gradient_sync(ddp, False):
            ddp(x).sum().backward()
        unsynced = module.weight.grad.item()
        module.weight.grad = None
        with gradient_sync(ddp, True):
            ddp(x).sum().backward()
        synced = module.weight.grad.item()
        with open(os.path.join(out, f"{rank}.json"), "w") as f:
            json.dump({"type": type(ddp).__name__, "unsynced": unsynced, "synced": synced}, f)
        dist.destroy_process_group()

    if __name__ == "__main__":
        import socket
        s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
        mp.start_processes(work, args=(port, sys.argv[1]), nprocs=2, start_method="fork")
''')


def test_ddp_averages_and_no_sync_skips_the_all_reduce(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    results = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["type"] for r in results] == ["DistributedDataParallel"] * 2
    assert [r["unsynced"] for r in results] == [1.0, 2.0]  # each process kept its own gradient
    assert [r["synced"] for r in results] == [1.5, 1.5]  # the mean over processes
