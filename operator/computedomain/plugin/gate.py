"""Waiting inside a prepare call until this node's IMEX daemon of a domain is Ready.

The wait is driven by the node view's change notifications, so it ends as soon as the daemon pod's
Ready condition arrives over the watch; while it lasts, the claim's pods get rate-limited Events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from computedomain.plugin.view import NodeView

# Upper bound of one sleep between two checks (only events wake us earlier; this bounds event pacing).
_TICK = 1.0


async def wait_for_daemon(
    view: NodeView,
    domain_uid: str,
    timeout: float,
    on_wait: Callable[[float], Awaitable[None]],
    clock: Callable[[], float] = time.monotonic,
    abort: asyncio.Event | None = None,
) -> bool:
    """True once the domain's daemon on this node is Ready; False after `timeout` seconds, or within
    a second of `abort` being set.

    `on_wait(elapsed)` runs on every pass while not ready (it decides itself whether to post).
    """
    start = clock()
    while True:
        version = view.changes.version
        if view.daemon_ready(domain_uid):
            return True
        if abort is not None and abort.is_set():
            return False
        elapsed = clock() - start
        remaining = timeout - elapsed
        if remaining <= 0:
            return False
        await on_wait(elapsed)
        await view.changes.wait(version, min(remaining, _TICK))
