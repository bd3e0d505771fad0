"""Stopping on SIGTERM or SIGINT, once: what the kubelet sends first, or a person at a terminal.

A second signal while the program is stopping must change nothing. Removing the event loop's handlers
(which closing the loop does too) restores the default action, and a repeated SIGTERM arriving before
the interpreter exits would then kill the program by the signal instead of letting it exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_on_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Set `stop` on SIGTERM and SIGINT (however often they come)."""
    for signum in SIGNALS:
        loop.add_signal_handler(signum, stop.set)


def ignore_further_signals(loop: asyncio.AbstractEventLoop) -> None:
    """From here to the process's end, SIGTERM and SIGINT are ignored: stopping is under way.

    For entry points only: the process ignores these signals from now on.
    """
    for signum in SIGNALS:
        with contextlib.suppress(ValueError, RuntimeError):
            loop.remove_signal_handler(signum)
        signal.signal(signum, signal.SIG_IGN)
