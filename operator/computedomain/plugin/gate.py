"""What stands between a channel claim and its IMEX channel: this node's IMEX daemon and its clique.

The wait for the daemon is driven by the node view's change notifications, so it ends as soon as the
daemon pod's Ready condition arrives over the watch; while it lasts, the claim's pods get rate-limited
Events.

A node without an NVLink clique (no `nvidia.com/gpu.clique` label) has no IMEX domain to join: as in
NVIDIA's plugin, its IMEX daemon idles and reports Ready, and the claim is prepared without a channel
device, so that pods on GPU nodes without a multi-node fabric still run. That is right for such nodes
and wrong for an NVL72 tray whose label is missing (the node agent is not running there, or the
fabric has not finished registering): either way the pods are told, with a Warning Event, what they
did not get and what to check.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from computedomain.api import names
from computedomain.plugin.events import REASON_NO_CLIQUE, render_event
from computedomain.plugin.view import NodeView

log = logging.getLogger(__name__)

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
