"""Kubernetes Events on ComputeDomains, posted once per new problem rather than on every reconcile."""

from __future__ import annotations

import datetime

from computedomain.api import names
from computedomain.kube import Kube, Object
from computedomain.kube.events import Involved, Recorder, render_event

COMPONENT = "computedomain-controller"


def event_manifest(domain: Object, kind: str, reason: str, message: str, now: datetime.datetime) -> Object:
    """A core/v1 Event about `domain` (namespaced in the domain's namespace)."""
    involved = Involved.of({"apiVersion": names.API_VERSION, "kind": names.DOMAIN_KIND, **domain})
    return render_event(
        involved, event_type=kind, reason=reason, message=message, component=COMPONENT, now=now
    )


READY_EVENT = ("DomainReady", "all expected nodes are ready")
# Conditions show a problem's message shortened to a few hundred characters; this much of it identifies it.
_MESSAGE_PREFIX = 300


def told_by_status(domain: Object, said: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of the (reason, message) pairs in `said` the domain's current status already tells."""
    status = domain.get("status") or {}
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    told = set()
    for reason, message in said:
        for condition in conditions:
            if condition.get("reason") != reason:
                continue
            if (reason, message) == READY_EVENT:
                shown = condition.get("status") == "True" and bool(status.get("joinedNodes"))
            else:
                shown = condition.get("status") == "False" and message[:_MESSAGE_PREFIX] in str(
                    condition.get("message", "")
                )
            if shown:
                told.add((reason, message))
    return told


class EventRecorder:
    """Posts an Event when a domain's (reason, message) changes; remembers what it last said.

    `events` is the process's recorder (a fresh one when None): a problem that comes back after it was
    gone counts on its earlier Event instead of making another.
    """

    def __init__(self, kube: Kube, events: Recorder | None = None) -> None:
        self.kube = kube
        self.events = events or Recorder()
        self._said: dict[str, set[tuple[str, str]]] = {}

    async def record(self, domain: Object, problems: list[tuple[str, str]], ready: bool) -> None:
        """Post Warning Events for problems not reported before, and one Normal Event on becoming ready.

        `domain` is the domain as found, before this reconcile's status write.
        """
        uid = domain["metadata"]["uid"]
        current = set(problems)
        if ready and not problems:
            current = {READY_EVENT}
        said = self._said.get(uid)
        if said is None:
            # First sight in this process (a restart or a fail-over): what the status already tells
            # was reported by an earlier process, and saying it again would only repeat it.
            said = told_by_status(domain, current)
        for reason, message in sorted(current - said):
            kind = "Normal" if reason == "DomainReady" else "Warning"
            now = datetime.datetime.now(datetime.UTC)
            await self.events.record(self.kube, event_manifest(domain, kind, reason, message, now))
        self._said[uid] = current

    def forget(self, uid: str) -> None:
        """Drop the memory of a deleted domain."""
        self._said.pop(uid, None)
