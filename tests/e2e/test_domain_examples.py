"""The examples, applied unchanged: a Job's pods get channels from the real scheduler, exactly their nodes
join the domain, the domain becomes Ready, and when the Job ends and the domain is deleted, nothing of
it is left."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from cdtestbed.controller_process import ControllerProcess
from cdtestbed.tools import COMPLETE_ANNOTATION
from cdtestbed.topology import FakeNode
from computedomain.api import names
from support import testbed
from support.domains import Cluster, Object, condition
from support.examples import create_manifest, delete_namespace, example
from support.observe import kubectl
from support.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]


@pytest_asyncio.fixture
async def cd(
    api: client.ApiClient, operator_ready: str, controller: ControllerProcess
) -> AsyncIterator[Cluster]:
    yield Cluster(api, operator_ready)


async def apply_example(cd: Cluster, folder: str) -> tuple[str, Object, Object]:
    """Create every object of an example in a fresh copy of its namespace; (namespace, domain, job)."""
    documents = example(folder)
    (namespace,) = [d["metadata"]["name"] for d in documents if d["kind"] == "Namespace"]
    # A namespace left by an interrupted run would hold old objects: start from nothing.
    await delete_namespace(cd.api, namespace)
    for document in documents:
        await create_manifest(cd.api, document)
    (domain,) = [d for d in documents if d["kind"] == names.DOMAIN_KIND]
    (job,) = [d for d in documents if d["kind"] == "Job"]
    return namespace, domain, job


async def job_pods(cd: Cluster, namespace: str, job: str) -> list[client.V1Pod]:
    listing = await cd.core.list_namespaced_pod(namespace, label_selector=f"job-name={job}")
    return list(listing.items)


async def allocated(cd: Cluster, namespace: str, count: int) -> list[str]:
    """Wait until `count` workload claims are allocated; their nodes."""

    async def probe() -> list[str] | None:
        nodes = await cd.allocated_nodes(namespace)
        return nodes if len(nodes) == count else None

    nodes: list[str] = await eventually(probe, timeout=90, what=f"{count} channel claims allocated")
    return nodes


async def finish_job(cd: Cluster, namespace: str, job: str) -> None:
    """Play the workload: every pod of the Job exits successfully; wait until their claims are gone."""
    for pod in await job_pods(cd, namespace, job):
        await cd.core.patch_namespaced_pod(
            pod.metadata.name, namespace, {"metadata": {"annotations": {COMPLETE_ANNOTATION: "true"}}}
        )

    async def done() -> bool:
        pods = await job_pods(cd, namespace, job)
        return all(p.status.phase == "Succeeded" for p in pods) and await cd.allocated_nodes(namespace) == []

    await eventually(done, timeout=90, what=f"Job {job} finished and its claims released")


def rack_of(nodes: list[FakeNode], name: str) -> str:
    return next(n.clique_id for n in nodes if n.name == name)


async def test_single_rack_example(cd: Cluster, cluster: testbed.Testbed, fake_nodes: list[FakeNode]) -> None:
    namespace, manifest, job = await apply_example(cd, "01-single-rack")
    name = manifest["metadata"]["name"]
    body = await cd.wait_reconciled(namespace, name)
    uid = body["metadata"]["uid"]
    try:
        nodes = await allocated(cd, namespace, 4)
        # The Job asks for one NVLink clique: the scheduler put all four pods in one rack.
        (clique,) = {rack_of(fake_nodes, n) for n in nodes}
        pods = await job_pods(cd, namespace, job["metadata"]["name"])
        assert sorted(p.spec.node_name for p in pods) == nodes

        body = await cd.wait_nodes(namespace, name, nodes)
        assert await cd.labelled_nodes(uid) == nodes
        assert await cd.daemon_nodes(uid) == nodes
        cliques = await cd.cliques(uid)
        assert list(cliques) == [clique]
        daemons = cliques[clique]
        assert sorted(n for n, _ in daemons) == nodes
        assert sorted(i for _, i in daemons) == [0, 1, 2, 3]
        status = body["status"]
        assert (status["status"], status["nodeSummary"], status["cliqueCount"]) == ("Ready", "4/4", 1)
        assert condition(body)["reason"] == "DomainReady"
        table = await kubectl(cluster.kubeconfig, "get", names.DOMAIN_PLURAL, "-n", namespace, name)
        assert table.splitlines()[1].split()[:4] == [name, "Ready", "4/4", "1"]
        await cd.wait_event(namespace, name, "DomainReady", kind="Normal")

        await finish_job(cd, namespace, job["metadata"]["name"])
        body = await cd.wait_nodes(namespace, name, [])
        assert await cd.labelled_nodes(uid) == []
        await eventually(lambda: _no_daemons(cd, uid), timeout=60, what="daemon pods gone")
        assert await cd.cliques(uid) == {}
        status = body["status"]
        assert (status["status"], status["nodeSummary"], status["cliqueCount"]) == ("NotReady", "0/4", 0)
        assert condition(body)["reason"] == "WaitingForNodes"

        await cd.delete_domain(namespace, name)
        assert await cd.leftovers(uid) == []
    finally:
        await delete_namespace(cd.api, namespace)
    await cd.wait_nothing_left(uid)


async def _no_daemons(cd: Cluster, uid: str) -> bool:
    return await cd.daemon_pods(uid) == []


async def test_two_rack_example(cd: Cluster, cluster: testbed.Testbed, fake_nodes: list[FakeNode]) -> None:
    namespace, manifest, job = await apply_example(cd, "02-two-racks")
    name = manifest["metadata"]["name"]
    body = await cd.wait_reconciled(namespace, name)
    uid = body["metadata"]["uid"]
    try:
        nodes = await allocated(cd, namespace, 36)
        gb200 = sorted(n.name for n in fake_nodes if n.clique_id)
        assert nodes == gb200

        body = await cd.wait_nodes(namespace, name, nodes, timeout=120)
        assert await cd.labelled_nodes(uid) == nodes
        assert await cd.daemon_nodes(uid) == nodes
        cliques = await cd.cliques(uid)
        assert len(cliques) == 2
        for clique, daemons in cliques.items():
            rack = sorted(n for n in nodes if rack_of(fake_nodes, n) == clique)
            assert sorted(n for n, _ in daemons) == rack
            assert sorted(i for _, i in daemons) == list(range(18))
        status = body["status"]
        assert (status["status"], status["nodeSummary"], status["cliqueCount"]) == ("Ready", "36/36", 2)
        table = await kubectl(cluster.kubeconfig, "get", names.DOMAIN_PLURAL, "-n", namespace, name)
        assert table.splitlines()[1].split()[:4] == [name, "Ready", "36/36", "2"]

        await finish_job(cd, namespace, job["metadata"]["name"])
        await cd.wait_nodes(namespace, name, [], timeout=120)
        await cd.delete_domain(namespace, name)
        assert await cd.leftovers(uid) == []
    finally:
        await delete_namespace(cd.api, namespace)
    await cd.wait_nothing_left(uid)
