"""An API server outage is routine: the controller (leading by its lease) keeps its process through a
30 s stop of kube-apiserver, takes its own lease back when the server returns, and converges what was
asked before, during and after the outage."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from kubernetes_asyncio import config

from cdtestbed.cluster import ClusterOptions, LocalCluster
from cdtestbed.dra import install_device_classes
from cdtestbed.install import apply_crds, ensure_namespace
from support.chaos import create_burst, inventory, replica, report, wait_settled
from support.domains import Cluster
from support.testbed import local_cluster
from support.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

NAMESPACE = "computedomain-system"
OUTAGE = 30.0


@pytest.fixture(scope="module")
def bare_cluster() -> Iterator[LocalCluster]:
    # No scheduler or nodes needed: domains without nodes converge on their own.
    with local_cluster(ClusterOptions(controllers=False), prefix="cluster-outage-") as cluster:
        yield cluster


@pytest_asyncio.fixture(scope="module")
async def admin(bare_cluster: LocalCluster) -> AsyncIterator[Cluster]:
    async with await config.new_client_from_config(config_file=str(bare_cluster.kubeconfig)) as api:
        await apply_crds(api)
        await ensure_namespace(api, NAMESPACE)
        await install_device_classes(api)
        yield Cluster(api, NAMESPACE)


@pytest.mark.parametrize("election", ["true", "false"], ids=["leader-election", "single"])
async def test_controller_keeps_its_process_through_a_30s_api_server_outage(
    bare_cluster: LocalCluster, admin: Cluster, election: str
) -> None:
    namespace = f"outage-{election}"
    await admin.core.create_namespace({"metadata": {"name": namespace}})
    controller = replica(
        bare_cluster, NAMESPACE, f"controller-{election}", "outage", LEADER_ELECTION=election
    )
    controller.start()
    try:
        assert controller.process is not None
        pid = controller.process.pid
        before = await create_burst(admin, namespace, "before", 3)
        await wait_settled(admin, namespace, len(before), timeout=60)

        down = bare_cluster.restart("kube-apiserver", down_seconds=OUTAGE)
        back = time.monotonic()
        assert controller.process.poll() is None, f"controller exited during the outage; see {controller.log}"

        after = await create_burst(admin, namespace, "after", 3)
        took = await wait_settled(admin, namespace, len(before) + len(after), timeout=120)
        assert controller.process is not None
        assert controller.process.pid == pid
        assert controller.process.poll() is None

        async def leading() -> bool:
            return controller.metric("computedomain_leader") == 1

        await eventually(leading, timeout=30, what="the controller to lead again")
        found = await inventory(admin)
        assert not found.leaks()
        report(
            f"api-server-outage ({election=})",
            down_s=down,
            converged_after_s=took,
            since_back_s=time.monotonic() - back,
        )
    finally:
        controller.stop()
