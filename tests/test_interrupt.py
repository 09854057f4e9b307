"""honing.interrupt: the first Ctrl-C is a request, the second aborts, and the old handler comes back."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from honing.interrupt import BATCH_NOTICE, StopRequest


def _sigint() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.01)  # the Python-level handler runs between bytecodes; give it the chance


def test_first_sigint_sets_the_flag_and_the_handler_is_restored(capsys):
    before = signal.getsignal(signal.SIGINT)
    with StopRequest(BATCH_NOTICE) as stop:
        assert not stop.requested
        assert signal.getsignal(signal.SIGINT) != before
        _sigint()
        assert stop.requested
    assert signal.getsignal(signal.SIGINT) is before
    assert "stopping after the current batch" in capsys.readouterr().err


def test_second_sigint_raises_keyboard_interrupt_and_still_restores():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with StopRequest() as stop:
            _sigint()
            assert stop.requested
            _sigint()
    assert signal.getsignal(signal.SIGINT) is before


def test_sigint_after_the_block_goes_to_the_previous_handler():
    seen = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        with StopRequest() as stop:
            pass
        _sigint()
        assert seen == [signal.SIGINT] and not stop.requested
    finally:
        signal.signal(signal.SIGINT, previous)


def test_outside_the_main_thread_it_catches_nothing():
    before = signal.getsignal(signal.SIGINT)
    results = {}

    def body():
        with StopRequest() as stop:
            results["requested"] = stop.requested
            results["handler"] = signal.getsignal(signal.SIGINT)

    worker = threading.Thread(target=body)
    worker.start()
    worker.join()
    assert results == {"requested": False, "handler": before}
    assert signal.getsignal(signal.SIGINT) is before
