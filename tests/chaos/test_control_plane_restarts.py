"""The API server and etcd restarted during bursts of domains: the controller keeps its process (and
its lease, taken back when the server returns), and every domain converges with nothing leaked or
doubled."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import pytest_asyncio
from kubernetes_asyncio.client.exceptions import ApiException

from cdtestbed.cluster import LocalCluster
from computedomain.api.names import DOMAIN_PLURAL, GROUP, VERSION
from support.chaos import (
    admin_of,
    chaos_plane,
    delete_burst,
    plain_namespace,
    replica,
    report,
    scaled,
    scaled_seconds,
    wait_settled,
)
from support.domains import Cluster, domain_manifest
from support.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.chaos]

NAMESPACE = "computedomain-system"


@pytest.fixture(scope="module")
def chaos_cluster() -> Iterator[LocalCluster]:
    with chaos_plane("cluster-chaos-restarts-") as cluster:
        yield cluster


@pytest_asyncio.fixture(scope="module")
async def chaos(chaos_cluster: LocalCluster) -> AsyncIterator[Cluster]:
    async with admin_of(chaos_cluster) as admin:
        yield admin


async def _burst_with_retries(chaos: Cluster, namespace: str, prefix: str, count: int) -> list[str]:
    """Create `count` domains one after the other, sending again what failed while the server was
    away (a creation that did land before its answer was lost counts as done)."""
    names = [f"{prefix}-{i:03d}" for i in range(count)]
    deadline = time.monotonic() + 120
    for name in names:
        while True:
            try:
                await chaos.create_domain(domain_manifest(name, namespace))
                break
            except ApiException as error:
                if error.status == 409:
                    break
                failure: Exception = error
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                failure = error
            assert time.monotonic() < deadline, f"could not create {name}: {failure}"
            await asyncio.sleep(0.5)  # the pause between retries while the server is away
    return names


async def _created_any(chaos: Cluster, namespace: str) -> bool:
    listed = await chaos.custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, DOMAIN_PLURAL, limit=1
    )
    return bool(listed["items"])


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
async def test_controller_survives_a_restart_during_a_burst(
    chaos_cluster: LocalCluster, chaos: Cluster, component: str
) -> None:
    namespace = await plain_namespace(chaos, f"chaos-{component}")
    controller = replica(chaos_cluster, NAMESPACE, f"restart-{component}", f"restart-{component}")
    controller.start()
    count = scaled(20)
    down = scaled_seconds(3)
    try:
        assert controller.process is not None
        pid = controller.process.pid
        creating = asyncio.create_task(_burst_with_retries(chaos, namespace, "b", count))
        # Break the server once the burst is under way: its first domain exists.
        await eventually(lambda: _created_any(chaos, namespace), timeout=60, what="the burst's first domain")
        unavailable = await asyncio.to_thread(chaos_cluster.restart, component, down)
        back = time.monotonic()
        names = await creating
        await wait_settled(chaos, namespace, count, timeout=180)
        settled = time.monotonic() - back

        assert controller.process is not None
        assert controller.process.poll() is None, f"controller exited; see {controller.log}"
        assert controller.process.pid == pid

        # And it still deletes cleanly afterwards.
        await delete_burst(chaos, namespace, names)
        await wait_settled(chaos, namespace, 0, timeout=120)
        report(
            f"{component}-restart-during-burst",
            domains=count,
            unavailable_s=unavailable,
            settled_after_back_s=settled,
        )
    finally:
        controller.stop()
