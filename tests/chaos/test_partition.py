"""A partitioned leader: its process is frozen (SIGSTOP) for longer than its lease while the standby is
healthy, then thawed. The standby takes over and converges everything; the thawed replica must not
write a single object on its stale lease (the API server's audit log says who wrote what), and it stays
alive as the new standby.

What the thawed process had already handed to its connections before it froze (a request whose
bytes sat in a send buffer) reaches the server when it thaws, as with any client: that is reported.
What it may not do is start a write once thawed, since its lease was no longer certain.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from cdtestbed.cluster import LocalCluster
from cdtestbed.controller_process import ControllerProcess
from support.chaos import (
    admin_of,
    chaos_plane,
    create_burst,
    delete_burst,
    plain_namespace,
    replica,
    report,
    scaled,
    wait_burst_under_way,
    wait_settled,
    writes_by,
)
from support.domains import Cluster
from support.observe import RECONCILES
from support.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.chaos]

NAMESPACE = "computedomain-system"
LEASE_SECONDS = 6
FAST_LEASE = {
    "LEASE_DURATION_SECONDS": str(LEASE_SECONDS),
    "RENEW_DEADLINE_SECONDS": "4",
    "RETRY_PERIOD_SECONDS": "1",
}


@pytest.fixture(scope="module")
def chaos_cluster() -> Iterator[LocalCluster]:
    with chaos_plane("cluster-chaos-partition-", audit=True) as cluster:
        yield cluster


@pytest_asyncio.fixture(scope="module")
async def chaos(chaos_cluster: LocalCluster) -> AsyncIterator[Cluster]:
    async with admin_of(chaos_cluster) as admin:
        yield admin


async def reconciles_settled(controller: ControllerProcess, seconds: float = 1.5) -> None:
    """Wait until the controller has not reconciled anything for `seconds` (its lease renewals go on,
    so its write counter never stands still)."""
    last: list[float] = []

    async def probe() -> bool:
        now = controller.metric(RECONCILES)
        settled = last == [now]
        last[:] = [now]
        return settled

    await eventually(probe, timeout=60, interval=seconds, what="the leader to settle")


@pytest.mark.parametrize("moment", ["idle", "busy"])
async def test_a_frozen_leader_does_not_act_on_its_stale_lease(
    chaos_cluster: LocalCluster, chaos: Cluster, moment: str
) -> None:
    namespace = await plain_namespace(chaos, f"chaos-partition-{moment}")
    replicas = {
        name: replica(chaos_cluster, NAMESPACE, name, f"partition-{moment}", user=name, **FAST_LEASE)
        for name in (f"{moment}-a", f"{moment}-b")
    }
    for process in replicas.values():
        process.start()
    frozen = None
    try:

        async def leader() -> str | None:
            return next((n for n, p in replicas.items() if p.metric("computedomain_leader") == 1), None)

        old_name = await eventually(leader, timeout=30, what="a leader")
        new_name = next(n for n in replicas if n != old_name)
        old, new = replicas[old_name], replicas[new_name]
        assert old.process is not None
        count = scaled(20)

        # Freeze the leader with its work done (so that any later write of it is a violation), or
        # in the middle of a burst, with work in flight.
        creating = asyncio.create_task(create_burst(chaos, namespace, "p", count))
        if moment == "idle":
            await creating
            await wait_settled(chaos, namespace, count, timeout=120)
            await reconciles_settled(old)
        else:
            await wait_burst_under_way(chaos, namespace)
        frozen = old.process.pid
        os.kill(frozen, signal.SIGSTOP)
        stopped_at = time.time()
        stopped = time.monotonic()
        await creating

        async def new_leads() -> bool:
            return new.metric("computedomain_leader") == 1

        await eventually(new_leads, timeout=LEASE_SECONDS + 10, interval=0.1, what="the standby to lead")
        takeover = time.monotonic() - stopped
        await wait_settled(chaos, namespace, count, timeout=120)
        # More changes while the old leader is frozen: it will wake up to a world that moved on.
        more = await create_burst(chaos, namespace, "q", scaled(5))
        dropped = [f"p-{i:03d}" for i in range(0, count, 2)]
        await delete_burst(chaos, namespace, dropped)
        kept = [f"p-{i:03d}" for i in range(1, count, 2)] + more
        await wait_settled(chaos, namespace, len(kept), timeout=120)

        os.kill(frozen, signal.SIGCONT)
        frozen = None
        thawed_at = time.time()
        thawed = time.monotonic()

        async def old_is_standby() -> bool:
            status, detail = old.get("/readyz")
            return status == 200 and detail.strip() == "standby"

        await eventually(old_is_standby, timeout=30, interval=0.1, what="the thawed replica to stand by")
        back_to_standby = time.monotonic() - thawed
        # The thawed replica's stale view changed nothing for good.
        await wait_settled(chaos, namespace, len(kept), timeout=60)
        await delete_burst(chaos, namespace, kept)
        await wait_settled(chaos, namespace, 0, timeout=120)

        # Idle: not one write once frozen. Busy: none started once thawed (the slack covers flushing
        # what was already handed to its connections before the freeze).
        since = stopped_at if moment == "idle" else thawed_at + 0.5
        late = writes_by(chaos_cluster.audit_log, old_name, since=since)
        assert late == [], f"{old_name} wrote on a stale lease: {late[:5]}"
        in_flight = writes_by(
            chaos_cluster.audit_log, old_name, since=stopped_at + 0.5, until=thawed_at + 0.5
        )
        assert old.process is not None
        assert old.process.poll() is None, f"the thawed replica exited; see {old.log}"
        assert new.metric("computedomain_leader") == 1
        conflicts = [
            w for w in writes_by(chaos_cluster.audit_log, new_name, since=stopped_at) if w.endswith("409")
        ]
        report(
            f"frozen-leader-{moment}",
            domains=count + len(more),
            frozen_s=thawed - stopped,
            takeover_s=takeover,
            thawed_to_standby_s=back_to_standby,
            violating_writes=len(late),
            writes_in_flight_at_freeze=len(in_flight),
            in_flight_refused=sum(1 for w in in_flight if not w.endswith(("200", "201"))),
            conflicts_of_new_leader=len(conflicts),
        )
    finally:
        if frozen is not None:
            os.kill(frozen, signal.SIGCONT)
        for process in replicas.values():
            process.stop()
