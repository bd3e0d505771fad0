"""Clique mode on the node: which IMEX channel a claim gets, and when.

In clique mode the IMEX daemons belong to the NVLink clique (one long-running daemon per node, from
one DaemonSet), and the controller gives every domain a channel of its own in each clique it uses. It
records the channel in the field `channel` of the ComputeDomainClique `<domain UID>.<clique ID>` in the
operator's namespace, and leaves the field out while the clique's pool has no free channel. A
prepare reads that one object by name (no watch: a node must not receive every domain's changes)
until the channel is there and the clique's IMEX daemon on this node is Ready, and tells the waiting
pods why with Events; a prepare that runs out of the kubelet's time ends with an error, and the
kubelet calls again, so pods that wait for a channel keep waiting in prepare.

A prepare succeeds only once it wrote to the object it read (`prepare_mark`): a JSON patch that
tests the object's UID and channel and sets an annotation, so that it bumps the resourceVersion. The
controller deletes a released object only with the resourceVersion it planned from as a
precondition, so of a release and a prepare that race, exactly one wins: the prepare's write fails
on a deleted, replaced or changed object (nothing is prepared, the kubelet calls again and the pod
waits for the domain's new channel), or the delete fails on the written object (nothing is
released).

Two domains never share a channel on a node: a channel prepared here for a claim of one domain is
refused to a claim of another (the controller frees a channel only once every claim of its domain in
the clique is unprepared, so this holds only when something went wrong elsewhere).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

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

# Set by every prepare on the ComputeDomainClique it read: `<node>/<claim UID> <time>`. The time makes
# each write a change, which the controller's delete precondition then sees.
PREPARE_ANNOTATION = "resource.nvidia.com/lastPrepare"

# The first read comes at once; later ones back off to this, so a long wait costs little. The kubelet
# asks to prepare the moment the pod is bound, and the controller writes the channel within tens of
# milliseconds of the allocation: the first re-read comes soon, or the race costs a whole interval.
_FIRST_POLL = 0.05
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


def prepare_mark(obj: Mapping[str, Any], node: str, claim_uid: str, when: str) -> list[dict[str, Any]]:
    """The JSON patch with which a prepare of claim `claim_uid` on `node` claims the channel of the
    ComputeDomainClique `obj` (as read): it applies only to that object (its UID) while it holds the
    same channel, and sets `PREPARE_ANNOTATION`."""
    meta = obj.get("metadata") or {}
    value = f"{node}/{claim_uid} {when}"
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/uid", "value": meta.get("uid")},
        {"op": "test", "path": "/channel", "value": obj.get("channel")},
    ]
    if meta.get("annotations"):
        key = PREPARE_ANNOTATION.replace("~", "~0").replace("/", "~1")
        ops.append({"op": "add", "path": f"/metadata/annotations/{key}", "value": value})
    else:
        # A JSON patch cannot add a key to a map that is not there. Should another prepare add the
        # map first, this replaces it: it only ever holds this annotation.
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {PREPARE_ANNOTATION: value}})
    return ops


def released_message(clique_object: str, channel: int, why: str) -> str:
    """Why a prepare that lost its race with the release of its channel prepared nothing."""
    return (
        f"channel {channel} of ComputeDomainClique {clique_object} was released while this prepare ran "
        f"({why}): nothing was prepared, and the kubelet's next call waits for the domain's channel "
        "again"
    )


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


@runtime_checkable
class PrepareRecorder(Protocol):
    """The write clique mode's prepare makes before it succeeds (`kubeio.CliqueChannels` has it)."""

    async def record_prepare(self, obj: Mapping[str, Any], node: str, claim_uid: str) -> str | None:
        """Write `prepare_mark` to the ComputeDomainClique `obj` as read; None once written, else why
        not (the object was deleted, replaced, or its channel changed)."""
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
) -> tuple[dict[str, Any] | None, str]:
    """(the ComputeDomainClique as read, '') once it holds the domain's channel in the clique and the
    clique daemon on this node is Ready; (None, why) after `timeout` seconds, or at the next pass
    once `abort` is set.

    `on_wait(why, elapsed)` runs on every pass that found something missing.
    """
    start = clock()
    poll = _FIRST_POLL
    while True:
        version = source.changes.version
        obj = await source.read_clique(clique_object)
        found = assignment(obj)
        ready = source.clique_daemon_ready()
        if obj is not None and found.channel is not None and ready:
            return obj, ""
        why = waiting_reason(clique_object, found, ready, node)
        elapsed = clock() - start
        remaining = timeout - elapsed
        if remaining <= 0 or (abort is not None and abort.is_set()):
            return None, why
        await on_wait(why, elapsed)
        # A change of the daemon pod wakes the wait early; the channel is polled.
        await source.changes.wait(version, min(remaining, poll))
        poll = min(poll * 2, _MAX_POLL)
