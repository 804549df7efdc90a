from __future__ import annotations

import os
import signal

import pytest

from autocompress.engine.stopping import Interrupted, stop_on_signals


def test_a_signal_lost_in_a_finaliser_is_still_seen_at_the_next_check(capsys):
    before = signal.getsignal(signal.SIGTERM)

    class Finalised:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler raises in here: Python drops it
            for _ in range(1000):
                pass

    with stop_on_signals() as stop:
        Finalised()
        assert stop.signum == signal.SIGTERM  # the search went on past the lost raise...
        with pytest.raises(Interrupted) as raised:
            stop.check()  # ...and stops at its next trial boundary
    assert raised.value.signum == signal.SIGTERM
    assert "Traceback" not in capsys.readouterr().err  # the lost raise is not printed
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_ignored_sigint_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stop_on_signals():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
    finally:
        signal.signal(signal.SIGINT, previous)
