"""honing.ui: the training bar's columns and fields, its disabled form, and quiet_libraries' effect."""

from __future__ import annotations

import warnings

from rich.console import Console

from honing.ui import console, progress_bar, quiet_libraries


def _render(bar) -> str:
    out = Console(width=240, record=True, color_system=None, file=open("/dev/null", "w"))
    out.print(bar.make_tasks_table(bar.tasks))
    return out.export_text()


def test_progress_bar_shows_steps_metric_lr_and_throughput():
    bar = progress_bar(10, metric="reward")
    task = bar.add_task("train", total=10, loss=0.123456, lr=3e-4, tps=12345.6)
    bar.update(task, advance=3)
    text = _render(bar)
    assert "train" in text and "3/10" in text
    assert "reward 0.1235" in text
    assert "lr 3.00e-04" in text
    assert "12,346 tok/s" in text
    assert "ETA" in text
    assert bar.live.console is console and console.stderr
    assert not bar.disable


def test_default_metric_is_loss_and_disabled_bar_is_disabled():
    bar = progress_bar(5, enabled=False)
    assert bar.disable
    bar.add_task("x", total=5, loss=1.0, lr=1e-3, tps=0)
    assert "loss 1.0000" in _render(bar)


def test_quiet_libraries_turns_off_transformers_bars_and_the_checkpointing_notice():
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quiet_libraries()
            warnings.warn("model.is_gradient_checkpointing is deprecated", FutureWarning)
            warnings.warn("something else", FutureWarning)
        assert not hf_logging.is_progress_bar_enabled()
        assert [str(w.message) for w in caught] == ["something else"]
    finally:
        hf_logging.enable_progress_bar()
