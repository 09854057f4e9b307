"""A benchmark leg in a fresh process: `python -m bench.worker SPEC.json OUT.json`.

SPEC: {"role": "leg"|"peak", "framework": "honing"|"trl"|"trl+liger", "mode": "full"|"lora",
"size": {...Size fields...}, "seed", "device", "precision", "attn", "model_dtype", "run_dir"}.
OUT gets the leg's result plus its peak memory; an out-of-memory error is a result ("oom"), not a crash.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def peak_memory(device: str) -> dict[str, Any]:
    if device.startswith("cuda"):
        import torch

        return {"peak_memory_bytes": torch.cuda.max_memory_allocated(), "memory_kind": "cuda max_memory_allocated"}
    return {"peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "memory_kind": "peak RSS"}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from bench.workload import Size, matmul_peak

    if spec["role"] == "peak":
        return matmul_peak(spec["device"], spec["dtype"])
    import torch

    from bench import legs

    size = Size(**spec["size"])
    common = dict(seed=spec["seed"], device=spec["device"], precision=spec["precision"], attn=spec["attn"],
                  model_dtype=spec["model_dtype"])
    try:
        if spec["framework"] == "honing":
            result = legs.run_honing(size, spec["mode"], run_dir=spec["run_dir"], compile=spec.get("compile", False),
                                     **common)
        else:
            result = legs.run_trl(size, spec["mode"], liger=spec["framework"] == "trl+liger", run_dir=spec["run_dir"],
                                  **common)
        result["status"] = "ok"
    except torch.OutOfMemoryError as err:
        result = {"status": "oom", "error": str(err).splitlines()[0]}
    return {**result, **peak_memory(spec["device"])}


def main(argv: list[str]) -> int:
    spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text())
    try:
        result = run(spec)
    except Exception as err:  # reported to the parent, which keeps going with the other legs
        result = {"status": "error", "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    Path(out_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
