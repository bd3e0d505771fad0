"""The node agent end to end: one real agent process per node, run from the chart's pod spec with a token
bound to its pod, on the fake NVML library, against a real API server that enforces the chart's RBAC and
admission policy.

The API server is a private one without controllers or KWOK, so nothing but the agents writes to these
nodes: a node's resourceVersion moves only when its agent writes.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from cdtestbed.cluster import ClusterOptions
from cdtestbed.topology import FakeNode, node_manifest, nvl72_racks, rack_clique_id
from computedomain.api import names
from fakenvml.build import compiler
from fakenvml.config import NVML_ERROR_DRIVER_NOT_LOADED, FakeGpu, FakeGpuNode
from support.agent import AGENT_NAMESPACE, AgentBed, AgentProcess, api_writes
from support.testbed import ControlPlane, private_control_plane
from support.waiting import eventually

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.e2e,
    pytest.mark.skipif(compiler() is None, reason="no C compiler (cc) to build the fake NVML library"),
]

# Four trays of one rack run agents for the whole module; a fifth is for agents that must not start.
NODES: list[FakeNode] = [dataclasses.replace(n, clique_id="") for n in nvl72_racks(1, 5, prefix="agent")]
FLEET = [n.name for n in NODES[:4]]
SPARE = NODES[4].name
RACK_CLIQUE = rack_clique_id(0)
INTERVAL = ("--interval", "1", "--retry-interval", "0.5")
WAIT = 60.0


def tray(clique: str = RACK_CLIQUE, **changes: Any) -> FakeGpuNode:
    """A GB200 tray whose 4 GPUs report `clique` (`<clusterUUID>.<cliqueId>`), with `changes` applied."""
    cluster_uuid, _, clique_id = clique.rpartition(".")
    return FakeGpuNode(cluster_uuid=cluster_uuid, clique_id=int(clique_id), **changes)


plane = private_control_plane("agent-", ClusterOptions(controllers=False))


@pytest_asyncio.fixture(scope="module")
async def bed(plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AgentBed]:
    core = client.CoreV1Api(plane.api)
    for node in NODES:
        await core.create_node(node_manifest(node))  # type: ignore[arg-type]
    bed = AgentBed(plane.api, plane.cluster.kubeconfig, tmp_path_factory.mktemp("agents"))
    await bed.install()
    probe = await bed.pod_client(await bed.agent_pod(SPARE))
    async with probe:
        await bed.wait_policy_enforced(probe, FLEET[0], timeout=WAIT)
    try:
        yield bed
    finally:
        bed.stop_agents()


@pytest_asyncio.fixture(scope="module")
async def fleet(bed: AgentBed) -> dict[str, AgentProcess]:
    """One running agent per fleet node, all on healthy trays of rack 0, every node labelled."""
    agents = {node: await bed.agent(node, tray(), *INTERVAL) for node in FLEET}
    for agent in agents.values():
        agent.start()
    for node in FLEET:
        await wait_label(bed.api, node, RACK_CLIQUE, agents[node])
    return agents


async def node_labels(api: client.ApiClient, node: str) -> dict[str, str]:
    found = await client.CoreV1Api(api).read_node(node)
    return dict(found.metadata.labels or {})


async def resource_version(api: client.ApiClient, node: str) -> str:
    return str((await client.CoreV1Api(api).read_node(node)).metadata.resource_version)


async def wait_label(api: client.ApiClient, node: str, value: str | None, agent: AgentProcess) -> None:
    """Wait until the node's clique label is `value` (None: absent); fail early if the agent died."""

    async def probe() -> bool:
        assert agent.pid is not None, f"agent on {node} exited:\n{agent.log_text()}"
        return (await node_labels(api, node)).get(names.GPU_CLIQUE_LABEL) == value

    await eventually(probe, timeout=WAIT, what=f"{node} label {names.GPU_CLIQUE_LABEL}={value}")


async def node_events(api: client.ApiClient, node: str) -> list[Any]:
    """The agent's Events about `node`: in the agent's own namespace, which the chart gives it."""
    listing = await client.CoreV1Api(api).list_namespaced_event(
        AGENT_NAMESPACE, field_selector=f"involvedObject.kind=Node,involvedObject.name={node}"
    )
    return sorted(listing.items, key=lambda e: e.metadata.creation_timestamp)


async def occurrences(api: client.ApiClient, node: str) -> dict[str, int]:
    """Event name -> its count so far: a repeat of an Event raises its count instead of adding one."""
    return {e.metadata.name: e.count or 1 for e in await node_events(api, node)}


async def wait_event(
    api: client.ApiClient, node: str, reason: str, before: Mapping[str, int], contains: str = ""
) -> Any:
    """Wait for an Event `reason` about `node` that occurred since `before` (`occurrences`): a new
    one, or one counted again."""

    async def probe() -> Any:
        for event in await node_events(api, node):
            new = (event.count or 1) > before.get(event.metadata.name, 0)
            if new and event.reason == reason and contains in event.message:
                return event
        return None

    return await eventually(probe, timeout=WAIT, what=f"event {reason} on {node}")


async def wait_readings(agents: list[AgentProcess], more: int) -> None:
    """Wait until every agent has made `more` further checks."""
    targets = {agent.node: agent.readings() + more for agent in agents}

    async def probe() -> bool:
        return all(agent.readings() >= targets[agent.node] for agent in agents)

    await eventually(probe, timeout=WAIT, what=f"{more} more checks by every agent")


async def test_every_agent_labels_its_own_node(bed: AgentBed, fleet: dict[str, AgentProcess]) -> None:
    for node in FLEET:
        labels = await node_labels(bed.api, node)
        assert labels[names.GPU_CLIQUE_LABEL] == RACK_CLIQUE
        # Nothing else about the node changed: only the one label was added.
        expected = node_manifest(next(n for n in NODES if n.name == node))["metadata"]["labels"]
        assert {k: v for k, v in labels.items() if k != names.GPU_CLIQUE_LABEL} == expected
        event = await wait_event(bed.api, node, "NVLinkCliqueDetected", {}, RACK_CLIQUE)
        assert event.type == "Normal"
        assert event.source.component == names.AGENT_FIELD_MANAGER
        assert event.involved_object.uid == (await client.CoreV1Api(bed.api).read_node(node)).metadata.uid
        assert event.metadata.namespace == bed.namespace
    assert (await node_labels(bed.api, SPARE)).get(names.GPU_CLIQUE_LABEL) is None


async def test_no_writes_while_nothing_changes(bed: AgentBed, fleet: dict[str, AgentProcess]) -> None:
    pids = {node: agent.pid for node, agent in fleet.items()}
    before = {node: await resource_version(bed.api, node) for node in FLEET}
    events = {node: await occurrences(bed.api, node) for node in FLEET}
    # A no-op apply would leave the resourceVersion alone too, so count the requests: only agents write here.
    writes = await asyncio.to_thread(api_writes, bed.kubeconfig, "nodes")
    await wait_readings(list(fleet.values()), 3)
    assert await asyncio.to_thread(api_writes, bed.kubeconfig, "nodes") == writes
    assert {node: await resource_version(bed.api, node) for node in FLEET} == before
    assert {node: await occurrences(bed.api, node) for node in FLEET} == events
    assert {node: agent.pid for node, agent in fleet.items()} == pids


async def test_label_follows_the_clique_of_the_hardware(
    bed: AgentBed, fleet: dict[str, AgentProcess]
) -> None:
    node, agent = FLEET[0], fleet[FLEET[0]]
    pid, seen = agent.pid, await occurrences(bed.api, node)
    other = rack_clique_id(7)
    agent.set_hardware(tray(other))
    await wait_label(bed.api, node, other, agent)
    await wait_event(bed.api, node, "NVLinkCliqueDetected", seen, other)
    # The other agents keep their nodes as they were.
    for neighbour in FLEET[1:]:
        assert (await node_labels(bed.api, neighbour))[names.GPU_CLIQUE_LABEL] == RACK_CLIQUE
    agent.set_hardware(tray())
    await wait_label(bed.api, node, RACK_CLIQUE, agent)
    assert agent.pid == pid


async def test_failed_registration_removes_the_label_until_registration_completes(
    bed: AgentBed, fleet: dict[str, AgentProcess]
) -> None:
    node, agent = FLEET[1], fleet[FLEET[1]]
    pid, seen = agent.pid, await occurrences(bed.api, node)

    agent.set_hardware(tray(overrides={3: FakeGpu(status=999)}))
    await wait_label(bed.api, node, None, agent)
    failed = await wait_event(bed.api, node, "NVLinkCliqueInvalid", seen, "RegistrationFailed")
    assert failed.type == "Warning"
    assert "GPU 3" in failed.message
    assert "status 999" in failed.message

    seen = await occurrences(bed.api, node)
    agent.set_hardware(tray(state="in_progress"))
    pending = await wait_event(bed.api, node, "NVLinkRegistrationInProgress", seen)
    assert pending.type == "Normal"
    assert names.GPU_CLIQUE_LABEL not in await node_labels(bed.api, node)

    seen = await occurrences(bed.api, node)
    agent.set_hardware(tray())
    await wait_label(bed.api, node, RACK_CLIQUE, agent)
    await wait_event(bed.api, node, "NVLinkCliqueDetected", seen, RACK_CLIQUE)
    assert agent.pid == pid


async def test_label_goes_with_the_fabric(bed: AgentBed, fleet: dict[str, AgentProcess]) -> None:
    node, agent = FLEET[2], fleet[FLEET[2]]
    pid, seen = agent.pid, await occurrences(bed.api, node)
    agent.set_hardware(tray(fabric=False))
    await wait_label(bed.api, node, None, agent)
    removed = await wait_event(bed.api, node, "NVLinkCliqueRemoved", seen, "NoFabric")
    assert removed.type == "Normal"
    agent.set_hardware(tray())
    await wait_label(bed.api, node, RACK_CLIQUE, agent)
    assert agent.pid == pid


async def test_label_goes_when_gpus_disagree(bed: AgentBed, fleet: dict[str, AgentProcess]) -> None:
    node, agent = FLEET[3], fleet[FLEET[3]]
    pid, seen = agent.pid, await occurrences(bed.api, node)
    agent.set_hardware(tray(overrides={2: FakeGpu(clique_id=7)}))
    await wait_label(bed.api, node, None, agent)
    invalid = await wait_event(bed.api, node, "NVLinkCliqueInvalid", seen, "CliquesDisagree")
    assert invalid.type == "Warning"
    assert "(GPU 2)" in invalid.message
    agent.set_hardware(tray())
    await wait_label(bed.api, node, RACK_CLIQUE, agent)
    assert agent.pid == pid


async def test_agent_without_usable_nvml_exits_with_a_clear_message(bed: AgentBed, tmp_path: Path) -> None:
    agent = await bed.agent(SPARE, tray(init_error=NVML_ERROR_DRIVER_NOT_LOADED), *INTERVAL)
    agent.start()
    assert agent.exit_code(timeout=WAIT) == 2
    lines = [line for line in agent.log_text().splitlines() if line.strip()]
    assert lines[-1] == (
        "computedomain-agent: NVML is required but not usable: nvmlInit: Driver Not Loaded (9); "
        "set REQUIRE_NVML=false (or --no-require-nvml) on nodes without NVIDIA GPUs"
    )
    assert agent.readings() == 1
    assert names.GPU_CLIQUE_LABEL not in await node_labels(bed.api, SPARE)


async def test_agent_allowed_to_run_without_nvml_keeps_checking_and_writes_nothing(bed: AgentBed) -> None:
    before = await resource_version(bed.api, SPARE)
    seen = await occurrences(bed.api, SPARE)
    agent = await bed.agent(
        SPARE, tray(init_error=NVML_ERROR_DRIVER_NOT_LOADED), *INTERVAL, REQUIRE_NVML="false"
    )
    agent.start()
    try:
        await wait_readings([agent], 3)
        assert agent.pid is not None, agent.log_text()
        assert await resource_version(bed.api, SPARE) == before
        assert await occurrences(bed.api, SPARE) == seen
    finally:
        assert agent.stop() == 0
