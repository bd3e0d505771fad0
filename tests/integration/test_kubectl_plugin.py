"""`kubectl computedomain status` and `why` against real states on the real API server, with the
controller running: a Ready domain, a fabric node without its clique label, an IMEX daemon pod the
scheduler cannot place, a domain waiting for its workload, and a claim template name taken."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from typing import Any, cast

import pytest
from kubernetes_asyncio import client

from cdtestbed.controller_process import ControllerProcess
from cdtestbed.dra import publish_slices
from cdtestbed.nodes import add_ready_nodes, delete_nodes, wait_nodes_ready
from cdtestbed.topology import FakeNode, node_manifest, rack_clique_id
from computedomain.kubectl.__main__ import main
from support.domains import Cluster, condition, domain_manifest, unique
from support.testbed import Testbed
from support.waiting import eventually

pytestmark = pytest.mark.cluster


@pytest.fixture
def cd(api: client.ApiClient, operator_ready: str, controller: ControllerProcess) -> Cluster:
    return Cluster(api, operator_ready)


@pytest.fixture
def kubeconfig(cluster: Testbed, operator_ready: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment kubectl hands its plugins: the kubeconfig, and where the operator runs."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("CD_OPERATOR_NAMESPACE", operator_ready)


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """The console entry point, as kubectl runs it (its own event loop, hence a thread)."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(argv))
    return code, capsys.readouterr().out


async def wait_reason(cd: Cluster, namespace: str, name: str, reason: str) -> dict[str, Any]:
    return await cd.wait_domain(namespace, name, lambda b: condition(b).get("reason") == reason, reason)


@pytest.mark.usefixtures("kubeconfig")
async def test_a_ready_domain(cd: Cluster, namespace: str, capsys: pytest.CaptureFixture[str]) -> None:
    name = unique("cd")
    uid = (await cd.create_domain(domain_manifest(name, namespace, num_nodes=2)))["metadata"]["uid"]
    nodes = ["gb200-r1-n10", "gb200-r1-n11"]
    pods = await cd.start_workload(namespace, f"{name}-channel", nodes)
    await cd.wait_nodes(namespace, name, nodes)
    await wait_reason(cd, namespace, name, "DomainReady")

    code, out = await run(capsys, "why", name, "-n", namespace)
    assert code == 0
    assert out == f"ComputeDomain {namespace}/{name} is Ready: 2 of 2 nodes ready in 1 NVLink clique.\n"

    code, out = await run(capsys, "status", name, "-n", namespace)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"ComputeDomain {namespace}/{name}: Ready, 2/2 nodes ready, 1 cliques")
    assert lines[1].split() == ["NODE", "CLIQUE", "INDEX", "DAEMON", "POD", "DAEMON", "CLAIMS"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert sorted(rows) == nodes
    for node in nodes:
        assert rows[node][1] == rack_clique_id(1)
        assert rows[node][4] == "Ready"
        assert rows[node][5].startswith(f"w-{node}")
    assert sorted(int(rows[n][2]) for n in nodes) == [0, 1]

    code, out = await run(capsys, "status", name, "-n", namespace, "-o", "json")
    document = json.loads(out)
    assert (code, document["uid"], document["ready"]["reason"]) == (0, uid, "DomainReady")
    assert [n["name"] for n in document["nodes"]] == nodes
    assert all(n["daemonPod"].startswith(f"computedomain-daemon-{uid}") for n in document["nodes"])

    await cd.stop_workload(namespace, pods)
    await cd.delete_domain(namespace, name)


@pytest.mark.usefixtures("kubeconfig")
async def test_a_missing_domain_exits_2(
    cd: Cluster, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["why", "nothing-here", "-n", namespace]) == 2
    assert f"ComputeDomain {namespace}/nothing-here not found" in capsys.readouterr().err


@pytest.mark.usefixtures("kubeconfig")
async def test_a_fabric_node_without_its_clique_label(
    api: client.ApiClient, cd: Cluster, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    node = f"gb200-nolabel-{uuid.uuid4().hex[:6]}"
    await add_ready_nodes(api, [FakeNode(node, "", "NVIDIA-GB200")])
    await publish_slices(api, [node])
    try:
        name = unique("cd")
        await cd.create_domain(domain_manifest(name, namespace, num_nodes=1))
        pods = await cd.start_workload(namespace, f"{name}-channel", [node])
        await cd.wait_nodes(namespace, name, [node])
        await wait_reason(cd, namespace, name, "DomainReady")

        code, out = await run(capsys, "why", name, "-n", namespace)
        assert code == 0
        assert f"However, {node} joined without an NVLink clique (no nvidia.com/gpu.clique label)" in out

        code, out = await run(capsys, "status", name, "-n", namespace)
        row = next(line.split() for line in out.splitlines() if line.startswith(node))
        assert row[1:3] == ["-", "-1"]

        await cd.stop_workload(namespace, pods)
        await cd.delete_domain(namespace, name)
    finally:
        await delete_nodes(api, [node])


@pytest.mark.usefixtures("kubeconfig")
async def test_a_daemon_pod_the_scheduler_cannot_place(
    api: client.ApiClient, cd: Cluster, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A node with room for one pod: the workload takes it, and its IMEX daemon finds none.
    node = f"gb200-full-{uuid.uuid4().hex[:6]}"
    manifest = node_manifest(FakeNode(node, rack_clique_id(0), "NVIDIA-GB200"))
    for resources in (manifest["status"]["allocatable"], manifest["status"]["capacity"]):
        resources["pods"] = "1"
    await client.CoreV1Api(api).create_node(cast(Any, copy.deepcopy(manifest)))
    try:
        await wait_nodes_ready(api, [node])
        await publish_slices(api, [node])
        name = unique("cd")
        uid = (await cd.create_domain(domain_manifest(name, namespace, num_nodes=1)))["metadata"]["uid"]
        pods = await cd.start_workload(namespace, f"{name}-channel", [node])

        async def unschedulable() -> bool:
            for pod in await cd.daemon_pods(uid):
                for c in pod.get("status", {}).get("conditions") or []:
                    if c.get("type") == "PodScheduled" and c.get("status") == "False":
                        return True
            return False

        await eventually(unschedulable, timeout=60, what=f"the daemon pod on {node} unschedulable")
        await wait_reason(cd, namespace, name, "WaitingForNodes")

        code, out = await run(capsys, "why", name, "-n", namespace)
        assert code == 1
        assert "is not Ready (WaitingForNodes): 0 of 1 nodes joined; waiting for 1 more." in out
        assert f"On {node}: the IMEX daemon pod cannot be scheduled:" in out
        assert "Too many pods" in out

        code, out = await run(capsys, "status", name, "-n", namespace)
        row = next(line.split() for line in out.splitlines() if line.startswith(node))
        assert row[3].startswith(f"computedomain-daemon-{uid}")
        assert row[4] == "Unschedulable"

        await cd.stop_workload(namespace, pods)
        await cd.delete_domain(namespace, name)
    finally:
        await delete_nodes(api, [node])


@pytest.mark.usefixtures("kubeconfig")
async def test_a_domain_waiting_for_its_workload(
    cd: Cluster, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name = unique("cd")
    await cd.create_domain(domain_manifest(name, namespace, num_nodes=2))
    await wait_reason(cd, namespace, name, "WaitingForNodes")
    code, out = await run(capsys, "why", name, "-n", namespace)
    assert code == 1
    assert f"no pod in namespace {namespace} uses `resourceClaimTemplateName: {name}-channel` yet" in out
    await cd.delete_domain(namespace, name)


@pytest.mark.usefixtures("kubeconfig")
async def test_a_claim_template_name_taken(
    cd: Cluster, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = unique("cd"), unique("cd")
    await cd.create_domain(domain_manifest(first, namespace, template="shared"))
    await wait_reason(cd, namespace, first, "DomainReady")
    await cd.create_domain(domain_manifest(second, namespace, template="shared"))
    await wait_reason(cd, namespace, second, "NameConflict")
    code, out = await run(capsys, "why", second, "-n", namespace)
    assert code == 1
    assert (
        f"ComputeDomain {namespace}/{second} is not Ready (NameConflict): cannot create ResourceClaimTemplate"
        in out
    )
    assert "What to do: choose another spec.channel.resourceClaimTemplate.name" in out
    await cd.delete_domain(namespace, second)
    await cd.delete_domain(namespace, first)
