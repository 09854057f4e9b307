"""One benchmark leg each: honing's `fit` and TRL's `SFTTrainer`, on the same model, data and optimiser.

Each runs in its own process (bench/worker.py), so peak memory belongs to that leg alone.
Timing: the window runs from the end of optimiser step `warmup` to the end of the last step; the
tokens in it are the real (non-padding) tokens of the micro-batches those steps consumed.
"""

from __future__ import annotations

import time
from typing import Any

from bench.workload import PAD_ID, Size, build_model, lora_adapter, make_examples, make_tokenizer, real_tokens


class StepClock:
    """Real tokens per collated micro-batch (in the order they are consumed) and the time at the end of each step."""

    def __init__(self, size: Size, device: str):
        self.size = size
        self.device = device
        self.batch_tokens: list[int] = []
        self.step_end: dict[int, float] = {}
        self.losses: dict[int, float] = {}

    def count(self, batch: dict[str, Any]) -> None:
        self.batch_tokens.append(real_tokens(batch["input_ids"]))

    def step_done(self, step: int) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        self.step_end[step] = time.perf_counter()

    def summary(self) -> dict[str, Any]:
        size = self.size
        first, last = size.warmup, size.total_steps
        if first not in self.step_end or last not in self.step_end:
            raise RuntimeError(f"steps {first} and {last} were not both reached: {sorted(self.step_end)}")
        seconds = self.step_end[last] - self.step_end[first]
        tokens = sum(self.batch_tokens[first * size.grad_accum : last * size.grad_accum])
        all_tokens = sum(self.batch_tokens[: last * size.grad_accum])
        per_step = []  # (real tokens, seconds) of each timed step
        for step in range(first + 1, last + 1):
            step_tokens = sum(self.batch_tokens[(step - 1) * size.grad_accum : step * size.grad_accum])
            per_step.append((step_tokens, self.step_end[step] - self.step_end[step - 1]))
        rates = sorted(t / s for t, s in per_step if s > 0)
        import torch

        return {
            "timed_seconds": seconds,
            "timed_real_tokens": tokens,
            "real_tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
            # Robust to a neighbour's burst on a shared machine: the median step's rate.
            "median_step_tokens_per_s": rates[len(rates) // 2] if rates else 0.0,
            "step_seconds": [round(s, 4) for _, s in per_step],
            "torch_threads": torch.get_num_threads(),
            "real_tokens_per_step": all_tokens / last,
            "losses": [self.losses[s] for s in sorted(self.losses)],
        }


def _parameter_counts(model) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"params_total": total, "params_trainable": trainable}


# --------------------------------------------------------------------------- honing


def run_honing(size: Size, mode: str, *, seed: int, device: str, precision: str, attn: str, model_dtype: str,
               run_dir: str, compile: bool = False) -> dict[str, Any]:
    from honing.config import AdapterConfig, TrainConfig
    from honing.data.packing import collate_packed, pack
    from honing.data.types import TokenizedExample
    from honing.models.adapters import apply_adapter
    from honing.runs import Run
    from honing.train.distributed import Dist
    from honing.train.engine import fit

    import torch

    rows = pack([TokenizedExample(ids, list(ids)) for ids in make_examples(size, seed)], size.seq, PAD_ID)
    model = build_model(size, seed, device, attn, model_dtype)
    adapter = lora_adapter() if mode == "lora" else AdapterConfig(method="full")
    torch.manual_seed(seed)  # the adapter's random init, as TRL's set_seed(args.seed) before get_peft_model
    model = apply_adapter(model, adapter)
    cfg = TrainConfig(
        lr=size.lr, schedule="constant", warmup_steps=0, weight_decay=0.0, max_steps=size.total_steps,
        micro_batch_size=size.micro_batch, grad_accum=size.grad_accum, max_grad_norm=1.0, precision=precision,
        seed=seed, eval_every=None, save_every=None, log_every=1, compile=compile,
    )
    clock = StepClock(size, device)

    def collate(batch_rows):
        batch = collate_packed(batch_rows)
        clock.count(batch)
        return batch

    def after_step(state) -> None:
        clock.losses[state.step] = state.last_train_loss
        clock.step_done(state.step)

    run = Run.create("bench", cfg, run_dir)
    counts = _parameter_counts(model)
    fit(model, rows, [], collate, cfg, run=run, ctx=Dist(device=torch.device(device)), show_progress=False,
        after_step=after_step)
    return {**clock.summary(), **counts, "rows": len(rows),
            "settings": {"train_config": cfg.model_dump(), "adapter": adapter.model_dump(),
                         "packing": "honing.data.packing.pack (first-fit decreasing) + collate_packed"}}


# --------------------------------------------------------------------------- TRL


def trl_settings(size: Size, *, seed: int, device: str, precision: str, liger: bool, out_dir: str) -> dict[str, Any]:
    """SFTConfig arguments: TRL's packed, padding-free path with the same batch, optimiser and schedule as honing."""
    return dict(
        output_dir=out_dir,
        max_steps=size.total_steps,
        per_device_train_batch_size=size.micro_batch,
        gradient_accumulation_steps=size.grad_accum,
        learning_rate=size.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        bf16=precision == "bf16",
        fp16=False,
        use_cpu=not device.startswith("cuda"),
        gradient_checkpointing=False,  # SFTConfig defaults to True; honing's engine does not checkpoint here
        max_length=size.seq,
        packing=True,
        packing_strategy="bfd",  # best-fit decreasing; implies padding_free (position ids restart per example)
        padding_free=True,
        completion_only_loss=False,
        assistant_only_loss=False,
        use_liger_kernel=liger,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def run_trl(size: Size, mode: str, *, seed: int, device: str, precision: str, attn: str, model_dtype: str,
            liger: bool, run_dir: str) -> dict[str, Any]:
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from honing.models.adapters import lora_config_for

    dataset = Dataset.from_dict({"input_ids": make_examples(size, seed)})
    model = build_model(size, seed, device, attn, model_dtype)
    peft_config = lora_config_for(lora_adapter()) if mode == "lora" else None
    settings = trl_settings(size, seed=seed, device=device, precision=precision, liger=liger, out_dir=run_dir)
    args = SFTConfig(**settings)
    clock = StepClock(size, device)

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.step_done(state.global_step)

    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=make_tokenizer(size.vocab),
                         peft_config=peft_config, callbacks=[Clock()])
    collator = trainer.data_collator

    def counting_collator(examples):
        batch = collator(examples)
        clock.count(batch)
        return batch

    trainer.data_collator = counting_collator
    counts = _parameter_counts(trainer.model)
    trainer.train()
    for entry in trainer.state.log_history:
        if "loss" in entry and "step" in entry:
            clock.losses[entry["step"]] = float(entry["loss"])
    settings = {k: v for k, v in settings.items() if k != "output_dir"}
    settings["optim"] = str(args.optim)
    settings["trl_version"] = trl.__version__
    return {**clock.summary(), **counts, "rows": len(trainer.train_dataset), "settings": settings}
