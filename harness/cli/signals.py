"""SIGTERM and SIGHUP handled like Ctrl-C, and the exit code of an interrupted command.

What CI systems, containers and ``timeout`` send on cancellation is SIGTERM (a closed terminal
sends SIGHUP); Python's default would end the process there and lose what was judged. While a
command runs (:func:`handled`), the first of SIGINT, SIGTERM, SIGHUP raises KeyboardInterrupt in
the main thread, which the runner turns into :class:`harness.run.runner.Interrupted` carrying
the steps judged; the command prints them and writes its reports. The exit code is then 128 + the
signal's number, the shell's convention for a process a signal ended: 130 for Ctrl-C, 143 for
SIGTERM, 129 for SIGHUP, so a CI system reads a cancellation as before, and the code says which
signal it was.

The first signal also puts the default action back for all three, so a second one ends the
process at once (even inside a long framework call), leaving every file whole: the writer
(harness.reports.write) replaces files by rename. A signal that was ignored when the command
started (``nohup``, a background job) stays ignored.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

_NAMES = ("SIGINT", "SIGTERM", "SIGHUP")
_received: list[int] = []
_deferring = [0]  # how many deferred() blocks are open


def _signals() -> list[signal.Signals]:
    return [getattr(signal, n) for n in _NAMES if hasattr(signal, n)]


def _first(signum: int, frame) -> None:
    _received.append(signum)
    for s in _signals():
        if signal.getsignal(s) is _first:
            signal.signal(s, signal.SIG_DFL)  # a second signal: the default action, at once
    if not _deferring[0]:
        raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def handled() -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP interrupt like Ctrl-C (module docstring);
    the previous handlers come back after it. Outside the main thread nothing is changed."""
    previous = {}
    _received.clear()
    if threading.current_thread() is threading.main_thread():
        for s in _signals():
            old = signal.getsignal(s)
            if old is not signal.SIG_IGN:
                previous[s] = signal.SIG_DFL if old is None else old
                signal.signal(s, _first)
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@contextmanager
def deferred() -> Iterator[None]:
    """Within the block (the printing and writing of what a run judged), the first signal is
    noted, not raised; KeyboardInterrupt is raised when the block ends, so its files are complete
    and the command then stops as interrupted. A second signal still ends the process at once."""
    before = len(_received)
    _deferring[0] += 1
    try:
        yield
    finally:
        _deferring[0] -= 1
    if len(_received) > before and not _deferring[0]:
        raise KeyboardInterrupt(received())


def received() -> str | None:
    """The name of the signal that interrupted the command (SIGTERM, …), or None."""
    return signal.Signals(_received[0]).name if _received else None


def exit_code() -> int:
    """128 + the number of the signal that interrupted the command; 130 (SIGINT's) when the
    interruption came without one."""
    return 128 + (_received[0] if _received else int(signal.SIGINT))
