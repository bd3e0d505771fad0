"""Leader election against a Lease store that keeps resourceVersions and fails on demand: nobody leads
without an unexpired lease, errors mean "not leader", a leader that cannot renew stops acting in time,
a restarted pod takes its own lease back at once, and a clean stop hands the lease over.

Time is a manual clock that moves only when a test advances it, so every bound below is exact and
nothing waits for a lease to expire."""

from __future__ import annotations

import asyncio
import copy
import datetime
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from computedomain.controller.runtime.leader import Clock, LeaderElector, LeaseTiming, NotLeading
from computedomain.kube import KubeError, Object

NAMESPACE = "computedomain-system"
LEASE = "computedomain-controller"
TIMING = LeaseTiming(duration=15.0, renew_deadline=10.0, retry_period=2.0)
# How far the manual clock moves at a time: well below every period above.
STEP = 0.05
# A bound on real time for a call that must end without the clock moving (a hang fails, not blocks).
PROMPT = 5.0


async def settle() -> None:
    """Let every task run until it waits on the clock or on something else that is not ready."""
    for _ in range(20):
        await asyncio.sleep(0)


class ManualClock:
    """Monotonic and wall time that move only in `advance`; sleepers wake when their time is reached."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._origin = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> datetime.datetime:
        return self._origin + datetime.timedelta(seconds=self.now)

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, future))
        await future

    def clock(self) -> Clock:
        return Clock(monotonic=self.monotonic, wall=self.wall, sleep=self.sleep)

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, a step at a time, letting every task run at each step."""
        await self.advance_until(lambda: False, seconds)

    async def advance_until(self, done: Callable[[], bool], limit: float) -> float:
        """Move time forward until `done()` holds (at most `limit` seconds); returns the time moved."""
        start, end = self.now, self.now + limit
        steps = 0
        await settle()
        while not done() and self.now < end:
            steps += 1
            # Counted from the start, so that steps add no rounding error and the end is exact.
            self.now = min(end, start + steps * STEP)
            due = [(at, future) for at, future in self._sleepers if at <= self.now + 1e-9]
            self._sleepers = [sleeper for sleeper in self._sleepers if sleeper not in due]
            for _, future in due:
                if not future.done():
                    future.set_result(None)
            await settle()
        return self.now - start


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


def elector(
    leases: FakeLeases, clock: ManualClock, identity: str, timing: LeaseTiming = TIMING
) -> LeaderElector:
    return LeaderElector(leases, NAMESPACE, LEASE, identity, timing, clock.clock())  # type: ignore[arg-type]


async def test_first_replica_creates_the_lease_under_its_pod_name() -> None:
    leases, clock = FakeLeases(), ManualClock()
    leader = elector(leases, clock, "controller-7d9f-abcde")
    await asyncio.wait_for(leader.acquire(), PROMPT)
    assert leases.holder() == "controller-7d9f-abcde"  # the pod name alone: it survives a restart
    assert leader.fence.valid
    leader.fence.check()
    # Valid for the renew deadline from the moment the request was sent, not a moment longer.
    assert leader.fence.remaining() == TIMING.renew_deadline
    await clock.advance(TIMING.renew_deadline)
    assert not leader.fence.valid


async def test_a_live_lease_of_another_pod_is_not_taken_before_it_expires() -> None:
    leases, clock = FakeLeases(), ManualClock()
    leases.put_lease("other", clock.wall(), duration=60)
    standby = elector(leases, clock, "me")
    campaign = asyncio.create_task(standby.acquire())
    await clock.advance(59.5)
    assert not campaign.done()
    assert leases.holder() == "other"
    assert not standby.fence.valid
    with pytest.raises(NotLeading):
        standby.fence.check()
    # Expired by its renewTime, and watched unchanged for far longer than the renew deadline.
    waited = await clock.advance_until(campaign.done, 5)
    assert waited <= 0.5 + TIMING.retry_period
    assert leases.holder() == "me"


async def test_an_expired_lease_is_taken_only_after_watching_it_for_the_renew_deadline() -> None:
    leases, clock = FakeLeases(), ManualClock()
    # Expired by its renewTime an hour ago: a standby whose clock runs ahead must still wait, since
    # the holder may have renewed just before the standby looked.
    leases.put_lease("other", clock.wall() - datetime.timedelta(hours=1))
    standby = elector(leases, clock, "me")
    campaign = asyncio.create_task(standby.acquire())
    await clock.advance(TIMING.renew_deadline - STEP)
    assert leases.holder() == "other"
    waited = await clock.advance_until(campaign.done, TIMING.renew_deadline)
    assert waited <= 2 * STEP
    assert leases.holder() == "me"
    assert standby.fence.valid


async def test_a_restarted_pod_takes_its_own_live_lease_at_once() -> None:
    leases, clock = FakeLeases(), ManualClock()
    leases.put_lease("controller-0", clock.wall(), duration=60)
    restarted = elector(leases, clock, "controller-0")
    before = clock.now
    await asyncio.wait_for(restarted.acquire(), PROMPT)
    assert clock.now == before  # it never slept
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
    leases, clock = FakeLeases(), ManualClock()
    leases.down = error
    standby = elector(leases, clock, "me")
    campaign = asyncio.create_task(standby.acquire())
    await clock.advance(5 * TIMING.retry_period)
    assert not campaign.done()
    assert not standby.fence.valid
    leases.down = None
    assert await clock.advance_until(campaign.done, 2 * TIMING.retry_period) <= TIMING.retry_period
    assert standby.fence.valid


async def test_a_leader_that_cannot_renew_stops_writing_before_the_lease_expires() -> None:
    leases, clock = FakeLeases(), ManualClock()
    leader = elector(leases, clock, "me")
    await asyncio.wait_for(leader.acquire(), PROMPT)
    holding = asyncio.create_task(leader.hold())
    await clock.advance(3 * TIMING.retry_period)
    assert leader.fence.valid
    assert not holding.done()
    leases.down = aiohttp.ClientPayloadError("Response payload is not completed")
    stopped = await clock.advance_until(holding.done, TIMING.duration)
    # Stopped once the renew deadline of its last renewal ran out (seen at its next retry), well
    # before the lease expires and others may take over.
    assert (
        TIMING.renew_deadline - TIMING.retry_period <= stopped <= TIMING.renew_deadline + TIMING.retry_period
    )
    assert stopped < TIMING.duration
    assert not leader.fence.valid


async def test_a_leader_whose_lease_another_process_wrote_stops_at_once() -> None:
    leases, clock = FakeLeases(), ManualClock()
    leader = elector(leases, clock, "me")
    await asyncio.wait_for(leader.acquire(), PROMPT)
    holding = asyncio.create_task(leader.hold())
    leases.put_lease("usurper", clock.wall(), duration=60)
    # At its next renewal, long before its renew deadline would have run out.
    assert await clock.advance_until(holding.done, TIMING.renew_deadline) <= TIMING.retry_period
    assert not leader.fence.valid


async def test_a_renewal_whose_answer_was_lost_is_recognised_as_ours() -> None:
    leases, clock = FakeLeases(), ManualClock()
    leader = elector(leases, clock, "me")
    await asyncio.wait_for(leader.acquire(), PROMPT)
    holding = asyncio.create_task(leader.hold())
    leases.lose_next_answer = True
    await clock.advance_until(lambda: not leases.lose_next_answer, 2 * TIMING.retry_period)
    assert not leases.lose_next_answer
    await clock.advance(2 * TIMING.renew_deadline)  # several renewals later
    assert not holding.done()
    assert leader.fence.valid
    holding.cancel()


async def test_a_clean_stop_hands_the_lease_over_at_once() -> None:
    leases, clock = FakeLeases(), ManualClock()
    first = elector(leases, clock, "first")
    second = elector(leases, clock, "second", LeaseTiming(60, 30, 0.05))
    await asyncio.wait_for(first.acquire(), PROMPT)
    waiting = asyncio.create_task(second.acquire())
    await clock.advance(1)
    assert not waiting.done()
    await first.release()
    assert not first.fence.valid
    assert await clock.advance_until(waiting.done, 1) <= 0.05 + STEP
    assert leases.holder() == "second"
