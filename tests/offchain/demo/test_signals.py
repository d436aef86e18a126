"""pm demo's signal handling (offchain/demo/fleet.py): Ctrl-C, `kill -INT` and `kill` all unwind the
run through its `finally` blocks, even when the demo was started with SIGINT ignored (a background
job of a non-interactive shell), and cleanup itself is not interrupted."""

import os
import signal
import time

import pytest

from offchain.demo.fleet import deferred_signals, interrupt_on_signals


@pytest.fixture
def sigint_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `pm demo &` in a script inherits it
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _deliver(sig: signal.Signals) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(0.1)  # Python runs the handler between bytecodes of the main thread


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_unwinds_the_run_even_if_sigint_was_ignored_at_start(sigint_ignored, sig):
    with pytest.raises(KeyboardInterrupt), interrupt_on_signals():
        _deliver(sig)
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # the caller's handlers are back


def test_cleanup_is_not_interrupted_and_the_run_is_afterwards(sigint_ignored):
    with pytest.raises(KeyboardInterrupt), interrupt_on_signals():
        with deferred_signals():
            _deliver(signal.SIGINT)  # ignored: the cleanup goes on
        _deliver(signal.SIGINT)
