"""Kubernetes Events on ComputeDomains, posted once per new problem rather than on every reconcile."""

from __future__ import annotations

import datetime
import logging
import uuid

from computedomain.api import names
from computedomain.controller.kube import EVENTS, Kube, KubeError, Object

logger = logging.getLogger(__name__)
COMPONENT = "computedomain-controller"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_manifest(domain: Object, kind: str, reason: str, message: str, now: str) -> Object:
    """A core/v1 Event about `domain` (namespaced in the domain's namespace)."""
    meta = domain["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": names.API_VERSION,
            "kind": names.DOMAIN_KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class EventRecorder:
    """Posts an Event when a domain's (reason, message) changes; remembers what it last said."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._said: dict[str, set[tuple[str, str]]] = {}

    async def record(self, domain: Object, problems: list[tuple[str, str]], ready: bool) -> None:
        """Post Warning Events for problems not reported before, and one Normal Event on becoming ready."""
        uid = domain["metadata"]["uid"]
        said = self._said.setdefault(uid, set())
        current = set(problems)
        if ready and not problems:
            current = {("DomainReady", "all expected nodes are ready")}
        for reason, message in sorted(current - said):
            kind = "Normal" if reason == "DomainReady" else "Warning"
            try:
                await self.kube.create(EVENTS, event_manifest(domain, kind, reason, message, _now()))
            except KubeError as error:
                # An Event is advice: losing one must never fail the reconcile.
                logger.warning("could not post event %s on %s: %s", reason, domain["metadata"]["name"], error)
        self._said[uid] = current

    def forget(self, uid: str) -> None:
        """Drop the memory of a deleted domain."""
        self._said.pop(uid, None)
