"""Stopping long work from a signal (Ctrl-C, ``kill``, a job scheduler's SIGTERM).

Python raises KeyboardInterrupt wherever the main thread happens to be, and an exception
raised inside a finaliser or weakref callback (SQLAlchemy runs some during garbage
collection) is printed and dropped, so the search would go on.  ``stop_on_signals``
therefore records the signal as well as raising: the search loop checks ``Stop.signum``
at every trial boundary and raises ``Interrupted`` itself if the first raise was lost
(and the lost one is not printed as an "Exception ignored" traceback).
"""
from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator


class Interrupted(KeyboardInterrupt):
    """Work stopped by a signal; ``signum`` is the signal's number (exit status 128 + it)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signum)
        self.signum = signum


class Stop:
    """The signal received while ``stop_on_signals`` was active, if any."""

    def __init__(self):
        self.signum: int | None = None

    def check(self) -> None:
        """Raise Interrupted if a signal came (its own raise may have been swallowed)."""
        if self.signum is not None:
            raise Interrupted(self.signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[Stop]:
    """While active, SIGTERM and SIGINT raise ``Interrupted`` and are recorded in the
    yielded ``Stop``.  A SIGINT the process ignores (a shell starts background jobs so)
    stays ignored.  Outside the main thread nothing is installed.  The previous handlers
    come back on exit."""
    stop = Stop()

    def interrupt(signum, frame):
        stop.signum = signum
        raise Interrupted(signum)

    def unraisable(info, hook=sys.unraisablehook):
        if not isinstance(info.exc_value, Interrupted):  # ours is re-raised by Stop.check
            hook(info)

    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(sig) is not signal.SIG_IGN:
                previous[sig] = signal.signal(sig, interrupt)
    except ValueError:  # not the main thread: signals are not ours to handle
        pass
    hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield stop
    finally:
        sys.unraisablehook = hook
        for sig, handler in previous.items():
            signal.signal(sig, handler)
