"""Events on the pods that wait for a claim (rendering, and a per-pod rate limit)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from computedomain.api import names
from computedomain.kube import events as kube_events
from computedomain.kube.events import Involved

COMPONENT = "compute-domain-kubelet-plugin"
REASON_WAITING = names.PLUGIN_WAITING_FOR_DAEMON
REASON_NOT_READY = names.PLUGIN_DAEMON_NOT_READY
REASON_NO_CLIQUE = names.PLUGIN_NO_CLIQUE
REASON_WAITING_CHANNEL = names.PLUGIN_WAITING_FOR_CHANNEL
REASON_NO_CHANNEL = names.PLUGIN_CHANNEL_NOT_READY


def render_event(
    pod: tuple[str, str, str],
    *,
    node: str,
    event_type: str,
    reason: str,
    message: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A core/v1 Event about pod (namespace, name, uid), from this node's plugin."""
    namespace, name, uid = pod
    involved = Involved(api_version="v1", kind="Pod", name=name, uid=uid, namespace=namespace)
    return kube_events.render_event(
        involved,
        event_type=event_type,
        reason=reason,
        message=message,
        component=COMPONENT,
        now=now or datetime.now(UTC),
        host=node,
    )


class RateLimit:
    """At most one event per key every `interval` seconds."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}

    def allow(self, key: str) -> bool:
        """True (and remembered) when `key` has not had an event within the interval."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return False
        self._last[key] = now
        if len(self._last) > 4096:  # forget old keys; pods come and go
            cutoff = now - self.interval
            self._last = {k: t for k, t in self._last.items() if t >= cutoff}
        return True
