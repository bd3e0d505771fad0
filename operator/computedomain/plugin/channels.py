"""Clique mode on the node: which IMEX channel a claim gets, and when.

In clique mode the IMEX daemons belong to the NVLink clique (one long-running daemon per node, from
one DaemonSet), and the controller gives every domain a channel of its own in each clique it uses. It
records the channel in the field `channel` of the ComputeDomainClique `<domain UID>.<clique ID>` in the
operator's namespace, and leaves the field out while the clique's pool has no free channel. A
prepare reads that one object by name (no watch: a node must not receive every domain's changes)
until the channel is there and the clique's IMEX daemon on this node is Ready, and tells the waiting
pods why with Events; a prepare that runs out of the kubelet's time ends with an error, and the
kubelet calls again, so pods that wait for a channel keep waiting in prepare.

Two domains never share a channel on a node: a channel prepared here for a claim of one domain is
refused to a claim of another (the controller frees a channel only once every claim of its domain in
the clique is unprepared, so this holds only when something went wrong elsewhere).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from computedomain.api import names
from computedomain.plugin.checkpoint import ClaimRecord
from computedomain.plugin.devices import CHANNEL_COUNT
from computedomain.plugin.kubelet.notify import Notifier

# The clique IMEX daemon pods, as the controller renders them, and their claim config's `domainID`,
# which names the mode, not a domain: no ComputeDomain is looked up for it.
CLIQUE_DAEMON_LABEL = names.CLIQUE_DAEMONS_LABEL
CLIQUE_DAEMON_SELECTOR = names.CLIQUE_DAEMONS_SELECTOR
CLIQUE_DAEMON_DOMAIN_ID = names.CLIQUE_DAEMON_DOMAIN_ID
# Channel 0 is never given to a domain; the driver knows channels up to CHANNEL_COUNT - 1.
FIRST_CHANNEL = 1
LAST_CHANNEL = CHANNEL_COUNT - 1

# The first read comes at once; later ones back off to this, so a long wait costs little.
_FIRST_POLL = 0.25
_MAX_POLL = 2.0

ALL_REFUSED = (
    "allocationMode All is refused in clique mode: it would give the pod every IMEX channel of the "
    "clique, those of other ComputeDomains included, and undo their isolation. Use the default "
    "allocationMode (Single): the pod gets its ComputeDomain's own channel"
)


def no_clique_message(node: str) -> str:
    """Why a channel claim cannot be prepared on a node without a clique in clique mode."""
    return (
        f"node {node} has no NVLink clique (its {names.GPU_CLIQUE_LABEL} label is missing or empty): in "
        "clique mode a ComputeDomain's IMEX channel is given per clique, so this node cannot get one. "
        "Check the node agent's pod on this node and the GPUs' fabric state, or keep the domain's pods "
        f"off nodes without the {names.GPU_CLIQUE_LABEL} label"
    )


@dataclass(frozen=True)
class Assignment:
    """What the ComputeDomainClique of a domain in a clique says about the domain's channel."""

    # False while the controller has not made the object yet.
    exists: bool
    # The domain's channel in the clique; None while none is assigned (or the value is not one).
    channel: int | None
    # The assigned value when it is not a channel the driver has (a broken object).
    invalid: Any = None


def assignment(obj: Mapping[str, Any] | None) -> Assignment:
    """The assignment a ComputeDomainClique (None: not there) holds."""
    if obj is None:
        return Assignment(exists=False, channel=None)
    value = obj.get("channel")
    if value is None:
        return Assignment(exists=True, channel=None)
    if isinstance(value, bool) or not isinstance(value, int) or not FIRST_CHANNEL <= value <= LAST_CHANNEL:
        return Assignment(exists=True, channel=None, invalid=value)
    return Assignment(exists=True, channel=value)


def waiting_reason(clique_object: str, found: Assignment, daemon_ready: bool, node: str) -> str:
    """Why a claim still waits (for the pods' Events and the kubelet's error)."""
    if found.invalid is not None:
        return (
            f"ComputeDomainClique {clique_object} holds channel {found.invalid!r}, which is not a channel "
            f"between {FIRST_CHANNEL} and {LAST_CHANNEL}"
        )
    if not found.exists:
        return f"the controller has not made ComputeDomainClique {clique_object} yet"
    if found.channel is None:
        return (
            "no channel is free in the clique yet (the ComputeDomain's ChannelsAvailable condition says "
            "more); the pod goes on once another domain's pods there end"
        )
    if not daemon_ready:
        return f"channel {found.channel} is assigned; the clique's IMEX daemon on node {node} is not ready"
    return f"channel {found.channel} is assigned"


def channel_holder(
    records: Iterable[ClaimRecord], uid: str, domain_id: str, channel: int
) -> ClaimRecord | None:
    """The record of a claim of another domain that holds `channel` on this node, or None.

    A claim whose prepare began holds its channel too: the kubelet retries it until it completes.
    """
    for record in records:
        if record.uid == uid:
            continue
        for device in record.devices:
            if device.channel == channel and device.domain_id != domain_id:
                return record
    return None


class ChannelSource(Protocol):
    """The reads clique mode's prepare needs (`kubeio.CliqueChannels` has them)."""

    @property
    def changes(self) -> Notifier:
        """Notified whenever the clique daemon pod on this node changes."""
        ...

    async def read_clique(self, name: str) -> dict[str, Any] | None:
        """The ComputeDomainClique of that name in the operator's namespace, or None."""
        ...

    def clique_daemon_ready(self) -> bool:
        """True when the clique's IMEX daemon pod on this node is Ready."""
        ...


async def wait_for_channel(
    source: ChannelSource,
    clique_object: str,
    node: str,
    timeout: float,
    on_wait: Callable[[str, float], Awaitable[None]],
    *,
    abort: asyncio.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[int | None, str]:
    """(channel, '') once the domain has a channel in the clique and the clique daemon on this node
    is Ready; (None, why) after `timeout` seconds, or at the next pass once `abort` is set.

    `on_wait(why, elapsed)` runs on every pass that found something missing.
    """
    start = clock()
    poll = _FIRST_POLL
    while True:
        version = source.changes.version
        found = assignment(await source.read_clique(clique_object))
        ready = source.clique_daemon_ready()
        if found.channel is not None and ready:
            return found.channel, ""
        why = waiting_reason(clique_object, found, ready, node)
        elapsed = clock() - start
        remaining = timeout - elapsed
        if remaining <= 0 or (abort is not None and abort.is_set()):
            return None, why
        await on_wait(why, elapsed)
        # A change of the daemon pod wakes the wait early; the channel is polled.
        await source.changes.wait(version, min(remaining, poll))
        poll = min(poll * 2, _MAX_POLL)
