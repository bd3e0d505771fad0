"""Kubernetes Events: one renderer and one writer for every program.

An Event is advice to the people reading `kubectl describe`: failing to post one is logged and
never fails the work that caused it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from computedomain.kube.client import Kube
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


async def post_event(kube: Kube, event: Object) -> bool:
    """Create `event`; False (logged) when the API server refused it or could not be reached."""
    try:
        await kube.create(EVENTS, event)
    except Exception as error:  # refused, or the connection cut in any of its many shapes
        logger.warning(
            "could not post event %s about %s: %s",
            event.get("reason"),
            (event.get("involvedObject") or {}).get("name"),
            error,
        )
        return False
    return True
