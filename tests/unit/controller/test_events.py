"""Events on ComputeDomains: posted once per new problem, once on becoming ready, and not again by a
restarted controller for what the domain's status already tells."""

from __future__ import annotations

from typing import Any, cast

from computedomain.controller.events import READY_EVENT, EventRecorder, told_by_status
from computedomain.kube import EVENTS, Kind, Kube, KubeError

CONFLICT = ("NameConflict", "cannot create ResourceClaimTemplate team-a/ch: one of that name exists")
FULL = ("CliqueFull", "1 node got no IMEX slot because their NVLink clique already has 2 daemons: n2")


def domain(conditions: list[dict[str, Any]] | None = None, joined: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": "train", "namespace": "team-a", "uid": "u-1"}}
    if conditions is not None:
        body["status"] = {"conditions": conditions, "joinedNodes": joined}
    return body


def ready(status: str, reason: str, message: str = "m") -> dict[str, Any]:
    return {"type": "Ready", "status": status, "reason": reason, "message": message}


class FakeKube:
    def __init__(self, fail: bool = False) -> None:
        self.posted: list[tuple[str, str]] = []
        # The counts that repeats patched onto their first Event.
        self.counted: list[int] = []
        self.fail = fail

    async def create(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        assert kind == EVENTS
        if self.fail:
            raise KubeError(403, "forbidden")
        self.posted.append((obj["type"], obj["reason"]))
        return obj

    async def patch(self, kind: Kind, name: str, namespace: str, patch: dict[str, Any]) -> dict[str, Any]:
        assert kind == EVENTS
        self.counted.append(patch["count"])
        return patch


def recorder(kube: FakeKube) -> EventRecorder:
    return EventRecorder(cast(Kube, kube))


async def test_a_problem_is_posted_once_while_it_lasts() -> None:
    kube = FakeKube()
    events = recorder(kube)
    for _ in range(3):
        await events.record(domain(), [CONFLICT], ready=False)
    assert kube.posted == [("Warning", "NameConflict")]


async def test_a_problem_that_comes_back_is_said_again_on_its_first_event() -> None:
    kube = FakeKube()
    events = recorder(kube)
    await events.record(domain(), [CONFLICT], ready=False)
    await events.record(domain(), [], ready=False)
    await events.record(domain(), [CONFLICT], ready=False)
    assert kube.posted == [("Warning", "NameConflict")]
    assert kube.counted == [2]


async def test_becoming_ready_is_posted_once_as_normal() -> None:
    kube = FakeKube()
    events = recorder(kube)
    await events.record(domain(), [FULL], ready=False)
    await events.record(domain(), [], ready=True)
    await events.record(domain(), [], ready=True)
    assert kube.posted == [("Warning", "CliqueFull"), ("Normal", "DomainReady")]


async def test_a_restarted_recorder_does_not_repeat_what_the_status_tells() -> None:
    kube = FakeKube()
    told = domain([ready("False", CONFLICT[0], CONFLICT[1] + " already exists; choose another")])
    await recorder(kube).record(told, [CONFLICT], ready=False)
    ready_domain = domain([ready("True", "DomainReady", "2 of 2 nodes ready")], joined=2)
    await recorder(kube).record(ready_domain, [], ready=True)
    assert kube.posted == []


async def test_a_restarted_recorder_posts_what_the_status_does_not_tell_yet() -> None:
    kube = FakeKube()
    waiting = domain([ready("False", "WaitingForNodes")], joined=1)
    await recorder(kube).record(waiting, [], ready=True)
    await recorder(kube).record(waiting, [CONFLICT], ready=False)
    assert kube.posted == [("Normal", "DomainReady"), ("Warning", "NameConflict")]


def test_told_by_status_matches_reason_and_message() -> None:
    conditions = [
        ready("False", "NameConflict", CONFLICT[1] + "; and 1 more problem"),
        {"type": "ChildrenReady", "status": "True", "reason": "ChildrenApplied", "message": "ok"},
    ]
    other = ("NameConflict", "cannot create ResourceClaimTemplate team-a/other: it belongs to UID x")
    assert told_by_status(domain(conditions), {CONFLICT, other, FULL}) == {CONFLICT}
    # An idle domain is "Ready" with no nodes; that was never announced.
    assert told_by_status(domain([ready("True", "DomainReady")], joined=0), {READY_EVENT}) == set()
    assert told_by_status(domain(), {CONFLICT}) == set()


async def test_an_event_that_cannot_be_posted_does_not_fail_the_reconcile() -> None:
    kube = FakeKube(fail=True)
    await recorder(kube).record(domain(), [CONFLICT], ready=False)
    assert kube.posted == []
