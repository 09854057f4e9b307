"""lm-evaluation-harness tasks on a honing model (the optional `lm-eval` extra).

The harness gets the model honing already loaded (with its adapter merged), so what it scores
is exactly what `honing eval` scores on its own tasks. Only local task files are used: the
harness reads datasets through `datasets`, and with HF_DATASETS_OFFLINE set nothing is fetched.
Per-document scores come back from the harness's samples, so intervals and paired differences
are computed here the same way as for every other task.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from honing.config import EvalTaskConfig
from honing.errors import ConfigError, HoningError


def available() -> tuple[bool, str]:
    if importlib.util.find_spec("lm_eval") is None:
        return False, "lm-evaluation-harness is not installed: pip install 'honing[lm-eval]'"
    return True, ""


def run_harness_task(model: Any, tokenizer: Any, task: EvalTaskConfig, *, batch_size: int) -> dict[str, Any]:
    """{"metrics": {name: [per-document score]}, "doc_ids": [...], "version": ...} for one harness task."""
    ok, why = available()
    if not ok:
        raise ConfigError(f"task {task.name}: {why}")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local task data only
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    device = str(next(model.parameters()).device)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device, max_length=task.max_length)
    manager = TaskManager(include_path=task.include_path) if task.include_path else TaskManager()
    try:
        output = lm_eval.simple_evaluate(model=lm, tasks=[task.lm_eval_task], task_manager=manager, log_samples=True,
                                         num_fewshot=task.num_fewshot, limit=task.max_examples, bootstrap_iters=0,
                                         apply_chat_template=bool(task.chat_template))
    except (KeyError, ValueError) as err:
        raise HoningError(f"task {task.name}: lm-evaluation-harness could not run {task.lm_eval_task!r}: {err}") from None
    samples = sorted(output["samples"][task.lm_eval_task], key=lambda s: s["doc_id"])
    aggregate = output["results"][task.lm_eval_task]
    names = [key.split(",")[0] for key in aggregate if "," in key and "_stderr" not in key]
    metrics = {name: [float(s[name]) for s in samples] for name in names if all(name in s for s in samples)}
    return {"metrics": metrics, "doc_ids": [s["doc_id"] for s in samples],
            "version": lm_eval.__version__ if hasattr(lm_eval, "__version__") else None}
