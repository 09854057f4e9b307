"""`honing merge`: fold a LoRA/DoRA adapter into its base and save a plain Hugging Face model,
with a run record naming the base and the adapter by content hash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from honing.config import MergeConfig
from honing.runs import Run, find_parent_run
from honing.ui import console


def merge(cfg: MergeConfig) -> dict[str, Any]:
    from honing.models.adapters import resolve_adapter_dir
    from honing.models.load import adapter_base_config
    from honing.models.save import merge_adapter
    from honing.models.source import resolve_model_source, source_sha256, weight_files, weights_sha256

    adapter_dir = resolve_adapter_dir(cfg.model.adapter)
    base_cfg = adapter_base_config(cfg.model, adapter_dir)
    source = resolve_model_source(base_cfg)
    out = merge_adapter(cfg.model, adapter_dir, cfg.output, dtype=cfg.dtype)
    run = Run.create("merge", cfg, out)
    run.add_input("base_model", source.get("path") or source["kind"], sha256=source_sha256(source), kind=source["kind"])
    run.add_input("adapter", adapter_dir, sha256=weights_sha256(weight_files(adapter_dir)))
    run.set("parent", find_parent_run(adapter_dir))
    run.add_output("model", out)
    run.finish()
    console.print(f"merged {adapter_dir} into {source.get('path') or source['kind']} → {Path(out)}")
    return {"output": str(out), "base": source.get("path"), "adapter": str(adapter_dir)}


run = merge
