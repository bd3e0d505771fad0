"""Leader election against a Lease store that keeps resourceVersions and fails on demand: nobody leads
without an unexpired lease, errors mean "not leader", a leader that cannot renew stops acting in time,
a restarted pod takes its own lease back at once, and a clean stop hands the lease over."""

from __future__ import annotations

import asyncio
import copy
import datetime
import time
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio.client import ApiClient

from cdtestbed.connection import connection_of
from computedomain.controller.app import Controller
from computedomain.controller.leader import LeaderElector, LeaseTiming, NotLeading
from computedomain.controller.settings import Settings
from computedomain.kube import KubeError, Object
from support.waiting import eventually

NAMESPACE = "computedomain-system"
LEASE = "computedomain-controller"
TIMING = LeaseTiming(duration=0.6, renew_deadline=0.4, retry_period=0.05)


def _stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeLeases:
    """One namespace's Leases with optimistic concurrency; `failures` are raised by the next calls."""

    def __init__(self) -> None:
        self.leases: dict[str, Object] = {}
        self.version = 0
        self.failures: list[BaseException] = []
        # When set, every call fails with this (an unreachable API server).
        self.down: BaseException | None = None
        # When set, the next PUT is stored but its answer is lost.
        self.lose_next_answer = False
        self.writes: list[str] = []

    def _fail(self) -> None:
        if self.down is not None:
            raise self.down
        if self.failures:
            raise self.failures.pop(0)

    def _store(self, body: Object) -> Object:
        self.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.leases[stored["metadata"]["name"]] = stored
        return copy.deepcopy(stored)

    async def get(self, kind: Any, name: str, namespace: str | None = None) -> Object | None:
        await asyncio.sleep(0)
        self._fail()
        lease = self.leases.get(name)
        return copy.deepcopy(lease) if lease else None

    async def create(self, kind: Any, body: Object) -> Object:
        await asyncio.sleep(0)
        self._fail()
        if body["metadata"]["name"] in self.leases:
            raise KubeError(409, "already exists", "AlreadyExists")
        self.writes.append(str(body["spec"].get("holderIdentity")))
        return self._store(body)

    async def call(self, method: str, path: str, **kwargs: Any) -> Object:
        await asyncio.sleep(0)
        self._fail()
        assert method == "PUT"
        body: Object = kwargs["body"]
        live = self.leases.get(body["metadata"]["name"])
        if live is None:
            raise KubeError(404, "not found", "NotFound")
        if body["metadata"].get("resourceVersion") != live["metadata"]["resourceVersion"]:
            raise KubeError(409, "the object has been modified", "Conflict")
        self.writes.append(str(body["spec"].get("holderIdentity")))
        stored = self._store(body)
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise aiohttp.ServerDisconnectedError()
        return stored

    def holder(self) -> str | None:
        lease = self.leases.get(LEASE)
        return (lease or {}).get("spec", {}).get("holderIdentity") or None

    def put_lease(self, holder: str, renewed: datetime.datetime, duration: int = 1) -> None:
        self._store(
            {
                "metadata": {"name": LEASE, "namespace": NAMESPACE},
                "spec": {
                    "holderIdentity": holder,
                    "renewTime": _stamp(renewed),
                    "leaseDurationSeconds": duration,
                },
            }
        )


def elector(leases: FakeLeases, identity: str, timing: LeaseTiming = TIMING) -> LeaderElector:
    return LeaderElector(leases, NAMESPACE, LEASE, identity, timing)  # type: ignore[arg-type]


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


async def test_first_replica_creates_the_lease_under_its_pod_name() -> None:
    leases = FakeLeases()
    leader = elector(leases, "controller-7d9f-abcde")
    await asyncio.wait_for(leader.acquire(), 2)
    assert leases.holder() == "controller-7d9f-abcde"  # the pod name alone: it survives a restart
    assert leader.fence.valid
    leader.fence.check()


async def test_a_live_lease_of_another_pod_is_not_taken() -> None:
    leases = FakeLeases()
    leases.put_lease("other", now(), duration=60)
    standby = elector(leases, "me")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(standby.acquire(), 0.5)
    assert leases.holder() == "other"
    assert not standby.fence.valid
    with pytest.raises(NotLeading):
        standby.fence.check()


async def test_an_expired_lease_is_taken_only_after_watching_it_for_the_renew_deadline() -> None:
    leases = FakeLeases()
    # Expired by its renewTime an hour ago: a standby whose clock runs ahead must still wait, since
    # the holder may have renewed just before the standby looked.
    leases.put_lease("other", now() - datetime.timedelta(hours=1))
    standby = elector(leases, "me")
    started = time.monotonic()
    await asyncio.wait_for(standby.acquire(), 3)
    waited = time.monotonic() - started
    assert leases.holder() == "me"
    assert TIMING.renew_deadline <= waited < TIMING.renew_deadline + 0.5


async def test_a_restarted_pod_takes_its_own_live_lease_at_once() -> None:
    leases = FakeLeases()
    leases.put_lease("controller-0", now(), duration=60)
    restarted = elector(leases, "controller-0")
    started = time.monotonic()
    await asyncio.wait_for(restarted.acquire(), 2)
    assert time.monotonic() - started < 0.2
    assert restarted.fence.valid


@pytest.mark.parametrize(
    "error",
    [
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("Response payload is not completed"),
        aiohttp.ClientConnectionError("connection reset"),
        TimeoutError(),
        KubeError(500, "etcdserver: request timed out"),
        KubeError(403, "forbidden"),
        RuntimeError("anything else"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_any_error_while_campaigning_means_not_leader(error: BaseException) -> None:
    leases = FakeLeases()
    leases.down = error
    standby = elector(leases, "me")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(standby.acquire(), 0.3)
    assert not standby.fence.valid
    leases.down = None
    await asyncio.wait_for(standby.acquire(), 2)
    assert standby.fence.valid


async def test_a_failed_campaign_does_not_lead() -> None:
    settings = Settings.from_env({"IMAGE_NAME": "registry.example/cd:1", "POD_NAME": "me"})
    async with ApiClient() as api:
        controller = Controller(settings, connection_of(api))

        async def campaign() -> None:
            raise aiohttp.ServerDisconnectedError()

        assert await controller._until_stopped(campaign()) is False
        await controller.kube.close()


async def test_a_leader_that_cannot_renew_stops_writing_before_the_lease_expires() -> None:
    leases = FakeLeases()
    leader = elector(leases, "me")
    await leader.acquire()
    holding = asyncio.create_task(leader.hold())
    await asyncio.sleep(0.2)
    assert leader.fence.valid
    assert not holding.done()
    leases.down = aiohttp.ClientPayloadError("Response payload is not completed")
    cut = time.monotonic()
    await asyncio.wait_for(holding, 2)
    stopped = time.monotonic() - cut
    # Stopped within the renew deadline (plus one retry period), well before others may take over.
    assert stopped < TIMING.renew_deadline + TIMING.retry_period + 0.1
    assert stopped < TIMING.duration
    assert not leader.fence.valid


async def test_a_leader_whose_lease_another_process_wrote_stops_at_once() -> None:
    leases = FakeLeases()
    leader = elector(leases, "me")
    await leader.acquire()
    holding = asyncio.create_task(leader.hold())
    leases.put_lease("usurper", now(), duration=60)
    await asyncio.wait_for(holding, 1)
    assert not leader.fence.valid


async def test_a_renewal_whose_answer_was_lost_is_recognised_as_ours() -> None:
    leases = FakeLeases()
    leader = elector(leases, "me")
    await leader.acquire()
    holding = asyncio.create_task(leader.hold())
    leases.lose_next_answer = True
    await eventually(lambda: asyncio.sleep(0, not leases.lose_next_answer), timeout=2, what="a lost answer")
    await asyncio.sleep(TIMING.renew_deadline)  # several renewals later
    assert not holding.done()
    assert leader.fence.valid
    holding.cancel()


async def test_a_clean_stop_hands_the_lease_over_at_once() -> None:
    leases = FakeLeases()
    first, second = elector(leases, "first"), elector(leases, "second", LeaseTiming(60, 30, 0.05))
    await first.acquire()
    waiting = asyncio.create_task(second.acquire())
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await first.release()
    assert not first.fence.valid
    await asyncio.wait_for(waiting, 1)
    assert leases.holder() == "second"


async def test_writes_are_refused_without_a_valid_lease() -> None:
    settings = Settings.from_env({"IMAGE_NAME": "registry.example/cd:1", "POD_NAME": "me"})
    async with ApiClient() as api:
        controller = Controller(settings, connection_of(api))
        leases = FakeLeases()
        first_term = elector(leases, "me")
        kube = controller.client(first_term.fence)
        assert kube.on_write is not None
        with pytest.raises(NotLeading):
            kube.on_write("patch")
        await first_term.acquire()
        kube.on_write("patch")
        first_term.fence.revoke()
        with pytest.raises(NotLeading):
            kube.on_write("patch")
        # A later term holding the lease again does not revive the clients of an ended one.
        second_term = elector(leases, "me")
        await second_term.acquire()
        with pytest.raises(NotLeading):
            kube.on_write("patch")
        controller.client(second_term.fence).on_write("patch")  # type: ignore[misc]
        await kube.close()
        await controller.kube.close()
