"""The controller killed at random points: one replica SIGKILLed during bursts of creations and
deletions (and started again under the same pod name), and the leader of two SIGKILLed mid-burst.
Afterwards nothing has leaked or doubled and every domain has converged."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from cdtestbed.cluster import LocalCluster
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
)
from support.domains import Cluster
from support.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.chaos]

NAMESPACE = "computedomain-system"
# Short leases keep the failover scenario quick; the kills here never depend on their length.
FAST_LEASE = {"LEASE_DURATION_SECONDS": "6", "RENEW_DEADLINE_SECONDS": "4", "RETRY_PERIOD_SECONDS": "1"}


@pytest.fixture(scope="module")
def chaos_cluster() -> Iterator[LocalCluster]:
    with chaos_plane("cluster-chaos-kills-") as cluster:
        yield cluster


@pytest_asyncio.fixture(scope="module")
async def chaos(chaos_cluster: LocalCluster) -> AsyncIterator[Cluster]:
    async with admin_of(chaos_cluster) as admin:
        yield admin


async def test_controller_killed_at_random_points_of_create_and_delete_bursts(
    chaos_cluster: LocalCluster, chaos: Cluster
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    namespace = await plain_namespace(chaos, "chaos-kills")
    controller = replica(chaos_cluster, NAMESPACE, "kills-0", "kills", **FAST_LEASE)
    controller.start()
    burst = scaled(20)
    try:
        for round_ in range(scaled(2)):
            names = await create_burst(chaos, namespace, f"r{round_}", burst)
            # The chaos itself: strike at a random point of the controller's work on the burst.
            await asyncio.sleep(rng.uniform(0.1, 2.0))
            controller.stop(signal.SIGKILL)
            killed = time.monotonic()
            controller.start()
            await wait_settled(chaos, namespace, burst, timeout=120)
            created = time.monotonic() - killed

            await delete_burst(chaos, namespace, names)
            # The chaos itself: strike at a random point of the teardown.
            await asyncio.sleep(rng.uniform(0.1, 1.5))
            controller.stop(signal.SIGKILL)
            killed = time.monotonic()
            controller.start()
            await wait_settled(chaos, namespace, 0, timeout=120)
            deleted = time.monotonic() - killed
            report(
                "kill-during-bursts",
                seed=seed,
                round=round_,
                domains=burst,
                settled_after_kill_in_create_s=created,
                settled_after_kill_in_delete_s=deleted,
            )
    finally:
        controller.stop()


async def test_leader_killed_mid_burst_hands_over_within_the_lease(
    chaos_cluster: LocalCluster, chaos: Cluster
) -> None:
    namespace = await plain_namespace(chaos, "chaos-failover")
    replicas = {
        name: replica(chaos_cluster, NAMESPACE, name, "failover", **FAST_LEASE) for name in ("fo-a", "fo-b")
    }
    for process in replicas.values():
        process.start()
    try:

        async def leader() -> str | None:
            return next((n for n, p in replicas.items() if p.metric("computedomain_leader") == 1), None)

        leading = await eventually(leader, timeout=30, what="a leader")
        standby = replicas[next(n for n in replicas if n != leading)]
        count = scaled(30)
        creating = asyncio.create_task(create_burst(chaos, namespace, "fo", count))
        await wait_burst_under_way(chaos, namespace)
        replicas[leading].stop(signal.SIGKILL)
        killed = time.monotonic()

        async def standby_leads() -> bool:
            return standby.metric("computedomain_leader") == 1

        await eventually(standby_leads, timeout=20, interval=0.1, what="the standby to lead")
        failover = time.monotonic() - killed
        await creating
        settled = await wait_settled(chaos, namespace, count, timeout=120)
        # Within the lease (6 s), give or take a retry period of the standby.
        assert failover < 6 + 1.5, f"failover took {failover:.1f}s with a 6 s lease"
        assert standby.process is not None
        assert standby.process.poll() is None
        await delete_burst(chaos, namespace, [f"fo-{i:03d}" for i in range(count)])
        await wait_settled(chaos, namespace, 0, timeout=120)
        report("leader-killed-mid-burst", domains=count, failover_s=failover, settled_s=settled)
    finally:
        for process in replicas.values():
            process.stop()
