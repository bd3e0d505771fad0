"""What stands between a channel claim and its IMEX channel: this node's IMEX daemon and its clique.

The daemon is ready when its state file in the domain's IMEX config folder on this node says so (the
daemon writes it the moment IMEX answers, see `computedomain.daemon.readiness`), or when its pod's Ready
condition arrives over the watch, whichever comes first: the file spares the wait for the kubelet's
next probe and the pod status after it, and the pod stays the signal where the file is missing (a
daemon of an older image) or stale. While a prepare waits, the file is read every `_POLL` seconds and
the view's change notifications wake the wait at once; the claim's pods get rate-limited Events.

A node without an NVLink clique (no `nvidia.com/gpu.clique` label) has no IMEX domain to join: as in
NVIDIA's plugin, its IMEX daemon idles and reports Ready, and the claim is prepared without a channel
device, so that pods on GPU nodes without a multi-node fabric still run. That is right for such nodes
and wrong for an NVL72 tray whose label is missing (the node agent is not running there, or the
fabric has not finished registering): either way the pods are told, with a Warning Event, what they
did not get and what to check.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from computedomain.api import names
from computedomain.plugin.events import REASON_NO_CLIQUE, render_event
from computedomain.plugin.view import NodeView

log = logging.getLogger(__name__)

# How often `on_wait` runs while a prepare waits (it paces the waiting Events).
_TICK = 1.0
# How often the daemon's state file is read while a prepare waits for it: one small read.
_POLL = 0.05
# The daemon's state file in its IMEX config folder, and how it spells readiness
# (`computedomain.daemon.readiness`).
STATE_FILE_NAME = names.IMEX_STATE_FILE
# A ready state not confirmed for this long is taken for a daemon killed before it could say
# otherwise; the daemon confirms every 5 s.
STATE_MAX_AGE = 20.0


def state_says_ready(domain_dir: Path, now: Callable[[], float] = time.time) -> bool:
    """True when the daemon's state file in `domain_dir` says ready and was confirmed lately."""
    path = domain_dir / STATE_FILE_NAME
    try:
        with path.open("rb") as handle:
            stamp = os.fstat(handle.fileno()).st_mtime
            state = json.loads(handle.read(4096))
    except (OSError, ValueError):
        return False
    if not isinstance(state, dict) or state.get("ready") is not True:
        return False
    checked = state.get("checked")
    confirmed = checked if isinstance(checked, int | float) else stamp
    return now() - confirmed <= STATE_MAX_AGE


async def wait_for_daemon(
    view: NodeView,
    domain_uid: str,
    timeout: float,
    on_wait: Callable[[float], Awaitable[None]],
    clock: Callable[[], float] = time.monotonic,
    abort: asyncio.Event | None = None,
    state_ready: Callable[[], bool] | None = None,
) -> bool:
    """True once the domain's daemon on this node is Ready (its pod, or `state_ready()`); False after
    `timeout` seconds, or within a second of `abort` being set.

    `on_wait(elapsed)` runs about once a second while not ready (it decides itself whether to post).
    """
    start = clock()
    interval = _TICK if state_ready is None else _POLL
    next_wait = start
    while True:
        version = view.changes.version
        if view.daemon_ready(domain_uid) or (state_ready is not None and state_ready()):
            return True
        if abort is not None and abort.is_set():
            return False
        now = clock()
        elapsed = now - start
        remaining = timeout - elapsed
        if remaining <= 0:
            return False
        if now >= next_wait:
            await on_wait(elapsed)
            next_wait = now + _TICK
        await view.changes.wait(version, min(remaining, interval))


def clique_warning(node: str, clique_id: str) -> str | None:
    """What a channel prepared on `node` lacks when the node has no NVLink clique; None when it has one."""
    if clique_id:
        return None
    return (
        f"node {node} has no NVLink clique (its {names.GPU_CLIQUE_LABEL} label is missing or empty): "
        "the pod runs without an IMEX channel and cannot share GPU memory with other nodes. If this "
        "node's GPUs are on a multi-node NVLink fabric (GB200, GB300), check the node agent's pod on "
        "this node (its log and its Events about the node) and the GPUs' fabric state, which must be "
        "registered (`computedomain-agent --once --no-kube` in that pod prints it)"
    )


async def warn_without_clique(
    view: NodeView, node: str, claim: str, pods: Sequence[tuple[str, str, str]], clique_id: str
) -> bool:
    """Post a Warning Event on each of the claim's pods when the node has no clique; True if so."""
    message = clique_warning(node, clique_id)
    if message is None:
        return False
    log.warning("claim %s gets no IMEX channel: %s", claim, message)
    for pod in pods:
        event = render_event(pod, node=node, event_type="Warning", reason=REASON_NO_CLIQUE, message=message)
        await view.post_event(event)
    return True
