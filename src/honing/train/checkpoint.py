"""Resumable checkpoints, written atomically.

A checkpoint is a directory `checkpoints/step-00000042/` holding the trainable weights
(safetensors), the optimiser and scheduler state, the RNG states and the engine's counters.
It is written under a temporary name and renamed into place only when complete, and
`checkpoints/latest` (a one-line file, itself replaced atomically) names the newest; a crash at
any moment leaves the previous checkpoint whole and `latest` pointing at it.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from honing.errors import HoningError
from honing.io import fsync_dir, fsync_file, replace_dir, write_text_atomic
from honing.train.distributed import Dist, barrier
from honing.ui import console

if TYPE_CHECKING:
    from honing.config import TrainConfig
    from honing.runs import Run

State = TypeVar("State")

LATEST = "latest"
BEST = "best"


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters being trained (all of them in full fine-tuning, the adapter's with LoRA)."""
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, so weights created from here on are the same every run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _publish(root: Path, tmp: Path, name: str, extra: dict[str, Any], trainer_state: dict[str, Any],
             mark_latest: bool) -> Path:
    """Finish a checkpoint written in `tmp` (state.pt, trainer_state.json), make it durable, and
    rename it to `root/name`; then, optionally, point `latest` at it."""
    torch.save(extra, tmp / "state.pt")
    (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))
    for file in tmp.iterdir():
        fsync_file(file)
    fsync_dir(tmp)
    final = root / name
    replace_dir(tmp, final, old=root / f".old-{name}")  # an old checkpoint of that name is moved aside first
    fsync_dir(root)
    if mark_latest:
        write_text_atomic(root / LATEST, name + "\n")
    return final


def _fresh_tmp(root: Path, name: str) -> Path:
    """An empty `root/.tmp-<name>` to write checkpoint `name` into (what a crash left there is cleared)."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def save_checkpoint(
    root: Path,
    name: str,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    trainer_state: dict[str, Any],
    rng: dict[str, Any] | None = None,
    mark_latest: bool = True,
) -> Path:
    """Write checkpoint `root/name` atomically and (by default) point `latest` at it."""
    tmp = _fresh_tmp(root, name)
    save_file(trainable_state(model), str(tmp / "weights.safetensors"))
    extra = {"rng": rng if rng is not None else rng_state()}
    if optimizer is not None:
        extra["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        extra["scheduler"] = scheduler.state_dict()
    return _publish(root, tmp, name, extra, trainer_state, mark_latest)


def latest_checkpoint(root: Path) -> Path | None:
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    return path if (path / "trainer_state.json").is_file() else None


def load_checkpoint(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load weights (and, when given, optimiser/scheduler/RNG state); return the trainer state."""
    weights = load_file(str(path / "weights.safetensors"))
    params = dict(model.named_parameters())
    missing = [name for name in weights if name not in params]
    if missing:
        raise RuntimeError(f"checkpoint {path} has weights the model lacks: {missing[:3]}")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))
    extra = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    if optimizer is not None and "optimizer" in extra:
        optimizer.load_state_dict(extra["optimizer"])
    if scheduler is not None and "scheduler" in extra:
        scheduler.load_state_dict(extra["scheduler"])
    if restore_rng:
        set_rng_state(extra["rng"])
    return json.loads((path / "trainer_state.json").read_text())


def prune_checkpoints(root: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` step checkpoints (the best one is separate and kept)."""
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in steps[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


# --------------------------------------------------------------------------- sharded (FSDP2)


def _dcp_state(module: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(ignore_frozen_params=True)
    model_sd, optim_sd = get_state_dict(module, optimizer if optimizer is not None else [], options=options)
    state = {"model": model_sd}
    if optimizer is not None:
        state["optimizer"] = optim_sd
    return state


def save_sharded_checkpoint(
    root: Path,
    name: str,
    *,
    module: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    trainer_state: dict[str, Any],
    is_main: bool,
    barrier,
    mark_latest: bool = True,
) -> Path:
    """Every process writes its shards (torch.distributed.checkpoint) into a temporary directory;
    the main process adds the scheduler, RNG and counters and renames it into place. The
    shards are resharded on load, so a run saved on N processes resumes on any number."""
    import torch.distributed.checkpoint as dcp

    final, tmp = root / name, root / f".tmp-{name}"
    if is_main:
        _fresh_tmp(root, name)
    barrier()
    dcp.save(_dcp_state(module, optimizer), checkpoint_id=str(tmp))
    barrier()
    if is_main:
        extra = {"rng": rng_state()}
        if scheduler is not None:
            extra["scheduler"] = scheduler.state_dict()
        _publish(root, tmp, name, extra, {**trainer_state, "sharded": True}, mark_latest)
    barrier()
    return final


def load_sharded_checkpoint(
    path: Path,
    *,
    module: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load a sharded checkpoint into `module` (sharded or not, on any number of processes)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    state = _dcp_state(module, optimizer)
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(module, optimizer if optimizer is not None else [], model_state_dict=state["model"],
                   optim_state_dict=state.get("optimizer", {}), options=StateDictOptions(ignore_frozen_params=True))
    extra = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    if scheduler is not None and "scheduler" in extra:
        scheduler.load_state_dict(extra["scheduler"])
    if restore_rng:
        set_rng_state(extra["rng"])
    return json.loads((path / "trainer_state.json").read_text())


def is_sharded(path: Path) -> bool:
    return (path / ".metadata").is_file()


# --------------------------------------------------------------------------- a run's checkpoints


class Checkpoints:
    """Where and how a run's checkpoints are written: whole files from the main process (one
    process, DDP), or shards from every process (FSDP2) that reload on any world size. `state` is
    the loop's counters (a dataclass: the engine's TrainState, RL's RLState), saved as JSON."""

    def __init__(self, root: Path, module: nn.Module, model: nn.Module, cfg: TrainConfig, ctx: Dist):
        self.root, self.module, self.model, self.cfg, self.ctx = root, module, model, cfg, ctx
        self.sharded = cfg.distributed == "fsdp"

    def save(self, name: str, optimizer, scheduler, state: Any, *, mark_latest: bool = True) -> None:
        """Write checkpoint `name` atomically; a new latest one prunes all but train.keep_last."""
        trainer_state = dict(vars(state))
        if self.sharded:
            save_sharded_checkpoint(self.root, name, module=self.module, optimizer=optimizer, scheduler=scheduler,
                                    trainer_state=trainer_state, is_main=self.ctx.is_main,
                                    barrier=lambda: barrier(self.ctx), mark_latest=mark_latest)
        elif self.ctx.is_main:
            save_checkpoint(self.root, name, model=self.model, optimizer=optimizer, scheduler=scheduler,
                            trainer_state=trainer_state, mark_latest=mark_latest)
        if mark_latest and self.ctx.is_main:
            prune_checkpoints(self.root, self.cfg.keep_last)
        barrier(self.ctx)

    def load(self, path: Path, optimizer=None, scheduler=None, *, restore_rng: bool = False) -> dict[str, Any]:
        if is_sharded(path):
            return load_sharded_checkpoint(path, module=self.module, optimizer=optimizer, scheduler=scheduler,
                                           restore_rng=restore_rng)
        if self.sharded and self.ctx.enabled:
            raise HoningError(f"{path} was written without FSDP; resume it with train.distributed=ddp")
        return load_checkpoint(path, model=self.model, optimizer=optimizer, scheduler=scheduler, restore_rng=restore_rng)


def resume_latest(store: Checkpoints, optimizer, scheduler, run: Run, make_state: Callable[[dict[str, Any]], State]) -> State:
    """Load the latest checkpoint (weights, optimiser, scheduler, RNG) and return the loop's state,
    made by `make_state` from the saved counters (it may refuse them); drop the metric lines logged
    after the checkpoint, so the resumed run logs no step twice."""
    latest = latest_checkpoint(store.root)
    if latest is None:
        raise HoningError(f"no checkpoint to resume from in {store.root}")
    saved = store.load(latest, optimizer, scheduler, restore_rng=True)
    saved.pop("sharded", None)
    state = make_state(saved)
    if run.is_main:
        for log_file in ("metrics.jsonl", "samples.jsonl"):  # samples: RL's, each line with its step
            truncate_metrics(run.dir / log_file, state.step)
    console.print(f"resumed from {latest} (step {state.step})")
    return state


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the lines of a step log (metrics.jsonl, samples.jsonl) written after `step`, atomically. A line
    torn by a crash mid-append is dropped too: it belongs to a step after the checkpoint."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line)
    write_text_atomic(path, "".join(line + "\n" for line in kept))
