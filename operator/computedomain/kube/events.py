"""Kubernetes Events: one renderer and one recorder for every program.

An Event is advice to the people reading `kubectl describe`: failing to post one is logged and
never fails the work that caused it.

Each program holds one `Recorder` for its process. Like client-go's recorder (its EventCorrelator),
it makes the repeats of an Event one object whose `count` grows and whose `lastTimestamp` moves, and
folds an object's many similar Events (same reason, messages that keep changing) into one combined
Event: a pod that waits for minutes shows one line in `kubectl describe`, not one per attempt, and
the API server stores one object instead of hundreds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from computedomain.kube.client import Kube
from computedomain.kube.errors import KubeError
from computedomain.kube.kinds import EVENTS
from computedomain.objects import Object

logger = logging.getLogger(__name__)

MESSAGE_LIMIT = 1024
# Room for the dot and 16 hex digits within the 253 characters of an object name.
_NAME_PREFIX_LIMIT = 236


@dataclass(frozen=True)
class Involved:
    """The object an Event is about."""

    api_version: str
    kind: str
    name: str
    uid: str
    namespace: str = ""
    resource_version: str = ""

    @classmethod
    def of(cls, obj: Object) -> Involved:
        """The reference to a full object as read from the API server."""
        meta = obj.get("metadata") or {}
        return cls(
            api_version=str(obj.get("apiVersion", "")),
            kind=str(obj.get("kind", "")),
            name=str(meta.get("name", "")),
            uid=str(meta.get("uid", "")),
            namespace=str(meta.get("namespace", "") or ""),
            resource_version=str(meta.get("resourceVersion", "") or ""),
        )


def _timestamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_event(
    involved: Involved,
    *,
    event_type: str,
    reason: str,
    message: str,
    component: str,
    now: datetime,
    namespace: str = "",
    host: str = "",
) -> Object:
    """A core/v1 Event about `involved`, named as the kubelet names its own (`<name>.<hex time>`).

    It lives in the involved object's namespace; an Event about a cluster-scoped object (a Node)
    lives in `namespace`, which the program is given (its own namespace). The API server accepts such
    an Event outside `default` only when its reference names that namespace too, so it does.
    """
    stamp = _timestamp(now)
    nanos = int(now.timestamp() * 1_000_000_000)
    reference: Object = {
        "apiVersion": involved.api_version,
        "kind": involved.kind,
        "name": involved.name,
        "uid": involved.uid,
    }
    if involved.namespace or namespace:
        reference["namespace"] = involved.namespace or namespace
    if involved.resource_version:
        reference["resourceVersion"] = involved.resource_version
    source: Object = {"component": component}
    if host:
        source["host"] = host
    event: Object = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{involved.name[:_NAME_PREFIX_LIMIT]}.{nanos:x}",
            "namespace": involved.namespace or namespace,
        },
        "involvedObject": reference,
        "type": event_type,
        "reason": reason,
        "message": message[:MESSAGE_LIMIT],
        "source": source,
        "reportingComponent": component,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    if host:
        event["reportingInstance"] = host
    return event


# --- correlation: repeats make one Event with a growing count, as client-go's EventCorrelator does ---

# Kubernetes' own recorder remembers this many Events (and as many groups of similar ones) per process.
CACHE_SIZE = 4096
# Once a group of Events (same source, object, type and reason) had this many distinct messages, each
# within SIMILAR_WINDOW seconds of the one before, its Events are folded into one combined Event until
# the group stays quiet that long: client-go's rule, so that an object whose story keeps changing shows
# one growing Event instead of filling `kubectl describe`.
SIMILAR_LIMIT = 10
SIMILAR_WINDOW = 600.0
COMBINED_PREFIX = "(combined from similar events): "

# An Event's identity in the recorder's memory: its group (see `group_key`), plus its message unless
# it is the group's combined Event.
EventKey = tuple[str, ...]

K = TypeVar("K")
V = TypeVar("V")


def group_key(event: Object) -> EventKey:
    """What similar Events share: source component and host, the namespace the Event lives in, the
    involved object, type and reason."""
    source = event.get("source") or {}
    ref = event.get("involvedObject") or {}
    return (
        str(source.get("component", "")),
        str(source.get("host", "")),
        str((event.get("metadata") or {}).get("namespace", "")),
        str(ref.get("apiVersion", "")),
        str(ref.get("kind", "")),
        str(ref.get("namespace", "")),
        str(ref.get("name", "")),
        str(ref.get("uid", "")),
        str(event.get("type", "")),
        str(event.get("reason", "")),
    )


def repeat_patch(event: Object) -> Object:
    """The merge patch that makes an Event's object say what `event` says: its count, its last time
    and (for a combined Event, whose message follows the latest) its message."""
    return {
        "count": event.get("count"),
        "lastTimestamp": event.get("lastTimestamp"),
        "message": event.get("message"),
    }


class _Lru(Generic[K, V]):
    """A mapping that forgets its least recently used entries beyond `size`."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class _Series:
    """One Event object of this process: its name, first time, occurrences delivered, and whether the
    API server is known to hold it."""

    name: str
    namespace: str
    first: str
    count: int
    written: bool


@dataclass
class _Similar:
    """A group's distinct messages so far, when its last Event came, and whether it is folded."""

    messages: set[str]
    last: float
    combined: bool = False


@dataclass(frozen=True)
class Write:
    """What to send for one occurrence: `event` to create, and the merge `patch` of the object it
    repeats (None when no object is known to exist: create it)."""

    key: EventKey
    event: Object
    patch: Object | None


class Correlator:
    """The recorder's memory and decisions, without I/O (`clock`: seconds, for the similar window).

    `aggregate` then `observe` turn an Event into a `Write`; `delivered`, `missing` and `failed` tell
    it what became of that write.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        size: int = CACHE_SIZE,
        similar_limit: int = SIMILAR_LIMIT,
        similar_window: float = SIMILAR_WINDOW,
    ) -> None:
        self.clock = clock
        self.similar_limit = similar_limit
        self.similar_window = similar_window
        self._series: _Lru[EventKey, _Series] = _Lru(size)
        self._similar: _Lru[EventKey, _Similar] = _Lru(size)

    def aggregate(self, event: Object) -> tuple[EventKey, Object]:
        """The key of `event`'s series, and the Event to post: `event` itself, or its group's combined
        Event once the group had `similar_limit` distinct messages."""
        group = group_key(event)
        message = str(event.get("message", ""))
        now = self.clock()
        similar = self._similar.get(group)
        if similar is None or now - similar.last > self.similar_window:
            similar = _Similar(set(), now)
        similar.last = now
        if not similar.combined:
            similar.messages.add(message)
            # Once folded, the set is not needed any more: the group stays folded while it is busy.
            if len(similar.messages) >= self.similar_limit:
                similar.combined, similar.messages = True, set()
        self._similar.put(group, similar)
        if not similar.combined:
            return (*group, message), event
        combined = {**event, "message": (COMBINED_PREFIX + message)[:MESSAGE_LIMIT]}
        return group, combined

    def observe(self, key: EventKey, event: Object) -> Write:
        """One more occurrence of the series `key`: the whole Event as its series stands (name, first
        time and count), and the patch of its object when one was written."""
        series = self._series.get(key)
        if series is None:
            meta = event.get("metadata") or {}
            series = _Series(
                name=str(meta.get("name", "")),
                namespace=str(meta.get("namespace", "")),
                first=str(event.get("firstTimestamp", "")),
                count=0,
                written=False,
            )
            self._series.put(key, series)
        series.count += 1
        full: Object = {
            **event,
            "metadata": {**(event.get("metadata") or {}), "name": series.name, "namespace": series.namespace},
            "firstTimestamp": series.first,
            "count": series.count,
        }
        return Write(key, full, repeat_patch(full) if series.written else None)

    def delivered(self, write: Write) -> None:
        """The API server holds the series' object now."""
        series = self._series.get(write.key)
        if series is not None:
            series.written = True

    def missing(self, write: Write) -> None:
        """The series' object is gone (Events expire): the next write creates it again."""
        series = self._series.get(write.key)
        if series is not None:
            series.written = False

    def failed(self, write: Write) -> None:
        """The occurrence did not reach the API server: it is not counted, so that a caller that posts
        it again counts it once, and the next occurrence sets the object's count right. The series
        keeps its name: a create whose answer was lost is found (409) and patched, not duplicated."""
        series = self._series.get(write.key)
        if series is not None and series.count > 0:
            series.count -= 1


class Recorder:
    """Posts Events for one program process: the first of a series is created, its repeats patch
    that object (`count` and `lastTimestamp`, a merge patch), and one that is gone is created again.

    Errors are logged and never raised; the next occurrence tries again. Occurrences of one series are
    written one at a time, in order; different series go in parallel.
    """

    def __init__(self, correlator: Correlator | None = None) -> None:
        self.correlator = correlator or Correlator()
        self._locks: dict[EventKey, tuple[asyncio.Lock, list[int]]] = {}

    async def record(self, kube: Kube, event: Object) -> bool:
        """Post `event`, or count it on the object of its series; False (logged) when that failed."""
        key, event = self.correlator.aggregate(event)
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                write = self.correlator.observe(key, event)
                sent = False
                try:
                    await self._send(kube, write)
                    sent = True
                except Exception as error:  # refused, or the connection cut in any of its many shapes
                    logger.warning(
                        "could not post event %s about %s: %s",
                        event.get("reason"),
                        (event.get("involvedObject") or {}).get("name"),
                        error,
                    )
                finally:
                    # Cancelled too: whether it arrived is unknown, and a repeat sets the count right.
                    if sent:
                        self.correlator.delivered(write)
                    else:
                        self.correlator.failed(write)
                return sent
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]

    async def _send(self, kube: Kube, write: Write) -> None:
        meta = write.event["metadata"]
        if write.patch is not None:
            try:
                await kube.patch(EVENTS, meta["name"], meta["namespace"], write.patch)
                return
            except KubeError as error:
                if error.status != 404:
                    raise
            # Expired (Events live an hour) or deleted: the series goes on in a new object.
            self.correlator.missing(write)
        try:
            await kube.create(EVENTS, write.event)
        except KubeError as error:
            if error.status != 409:
                raise
            # Created by an earlier try whose answer never came back: count on that object.
            await kube.patch(EVENTS, meta["name"], meta["namespace"], repeat_patch(write.event))
