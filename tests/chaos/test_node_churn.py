"""Daemon pods and nodes deleted under a running domain: the DaemonSet brings the daemons back and the
domain is Ready again; a deleted node leaves the domain's status, cliques and labels; at the end nothing
of the domain is left anywhere, and the controller's process lived through it all."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from cdtestbed.cluster import LocalCluster
from cdtestbed.nodes import delete_nodes
from cdtestbed.topology import nvl72_racks
from support.chaos import admin_of, chaos_plane, inventory, replica, report, wait_settled
from support.domains import Cluster, domain_manifest
from support.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.chaos]

NAMESPACE = "computedomain-system"
NODES = nvl72_racks(1, nodes_per_rack=4, prefix="churn")


@pytest.fixture(scope="module")
def chaos_cluster() -> Iterator[LocalCluster]:
    with chaos_plane("cluster-chaos-nodes-", nodes=True) as cluster:
        yield cluster


@pytest_asyncio.fixture(scope="module")
async def chaos(chaos_cluster: LocalCluster) -> AsyncIterator[Cluster]:
    async with admin_of(chaos_cluster, NODES) as admin:
        yield admin


async def test_daemon_pods_and_nodes_deleted_under_a_running_domain(
    chaos_cluster: LocalCluster, chaos: Cluster
) -> None:
    controller = replica(chaos_cluster, NAMESPACE, "churn-0", "churn")
    controller.start()
    try:
        assert controller.process is not None
        pid = controller.process.pid
        namespace = await chaos.create_namespace("chaos-churn")
        created = await chaos.create_domain(domain_manifest("churn", namespace))
        uid = created["metadata"]["uid"]
        nodes = sorted(n.name for n in NODES)
        pods = await chaos.start_workload(namespace, "churn-channel", nodes)
        await chaos.wait_nodes(namespace, "churn", nodes, timeout=120)

        # Every daemon pod deleted at once: the DaemonSet brings them back, the domain heals.
        started = time.monotonic()
        for pod in await chaos.daemon_pods(uid):
            await chaos.core.delete_namespaced_pod(pod["metadata"]["name"], NAMESPACE, grace_period_seconds=0)
        await chaos.wait_nodes(namespace, "churn", nodes, timeout=120)
        pods_healed = time.monotonic() - started

        # A node deleted (a tray pulled out): it leaves the domain's status, cliques and labels.
        gone, staying = nodes[0], nodes[1:]
        started = time.monotonic()
        await delete_nodes(chaos.api, [gone])
        # What the pod garbage collector does to the pods of a vanished node (after its quarantine,
        # which this test does not wait out).
        for pod in (
            await chaos.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={gone}")
        ).items:
            await chaos.core.delete_namespaced_pod(
                pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0
            )
        await chaos.wait_nodes(namespace, "churn", staying, timeout=120)

        async def clique_without_gone() -> bool:
            cliques = await chaos.cliques(uid)
            members = sorted(node for daemons in cliques.values() for node, _ in daemons)
            return members == staying

        await eventually(clique_without_gone, timeout=60, what=f"{gone} out of the cliques")
        node_left = time.monotonic() - started
        found = await inventory(chaos)
        assert sorted(found.node_labels[uid]) == staying
        assert not found.leaks()
        assert not found.duplicates()

        # Tear down: nothing of the domain is left anywhere.
        started = time.monotonic()
        await chaos.stop_workload(namespace, pods)
        await chaos.delete_domain(namespace, "churn", timeout=120)
        await wait_settled(chaos, namespace, 0, timeout=120)
        teardown = time.monotonic() - started

        assert controller.process is not None
        assert controller.process.poll() is None, f"controller exited; see {controller.log}"
        assert controller.process.pid == pid
        report(
            "daemon-pods-and-node-deleted",
            nodes=len(nodes),
            daemons_healed_s=pods_healed,
            node_left_domain_s=node_left,
            teardown_s=teardown,
        )
    finally:
        controller.stop()
