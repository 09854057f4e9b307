"""The terminal: one console (stderr, so stdout stays clean for data) and the training progress bar."""

from __future__ import annotations


from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True, highlight=False)


def progress_bar(total: int, *, enabled: bool = True, metric: str = "loss") -> Progress:
    """A bar with step count, loss (or the named metric, in the `loss` field), learning rate,
    tokens/s, elapsed time and ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(metric + " {task.fields[loss]:.4f}"),
        TextColumn("lr {task.fields[lr]:.2e}"),
        TextColumn("{task.fields[tps]:,.0f} tok/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        refresh_per_second=2,
    )




def quiet_libraries() -> None:
    """Keep the terminal to honing's own progress: no per-tensor bars from transformers while
    loading or saving, and no deprecation notices about transformers internals."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
