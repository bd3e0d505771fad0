"""NodeLabeler against a real API server's server-side apply, where the clique label may also be set by
someone else (GPU feature discovery writes the same `nvidia.com/gpu.clique` label, or a person does).

The agent removes only what it holds: a label that another field manager also set stays, and the agent
then neither claims in an Event that it removed it nor keeps trying.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from cdtestbed.cluster import ClusterOptions, LocalCluster
from cdtestbed.connection import connection_of
from computedomain.agent.labeler import NodeLabeler
from computedomain.api import names
from computedomain.kube import Kube
from computedomain.nvml.clique import CliqueResult, Reason
from support.agent import MERGE_PATCH_ARGS, api_writes
from support.testbed import ControlPlane, private_control_plane

pytestmark = pytest.mark.cluster

CLIQUE = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22.32766"
OTHER = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22.7"
FOUND = CliqueResult(CLIQUE, Reason.CLIQUE_FOUND, f"GPUs 0, 1, 2, 3 in NVLink clique {CLIQUE}", [], 4)
NO_FABRIC = CliqueResult(None, Reason.NO_FABRIC, "none of the 4 GPUs is in a multi-node NVLink fabric")
_names = (f"gb200-labeler-{i}" for i in itertools.count())
# The agent's namespace, where it posts its Events about the Node.
AGENT_NAMESPACE = "kube-system"


plane = private_control_plane("labeler-", ClusterOptions(controllers=False))


@pytest.fixture
def private_cluster(plane: ControlPlane) -> LocalCluster:
    return plane.cluster


@pytest.fixture
def api(plane: ControlPlane) -> client.ApiClient:
    return plane.api


@pytest_asyncio.fixture
async def kube(api: client.ApiClient) -> AsyncIterator[Kube]:
    """The client layer as the agent builds it: its own field manager."""
    agent_kube = Kube(connection_of(api), field_manager=names.AGENT_FIELD_MANAGER)
    try:
        yield agent_kube
    finally:
        await agent_kube.close()


def labeler(kube: Kube, node: str) -> NodeLabeler:
    return NodeLabeler(kube, node, AGENT_NAMESPACE)


async def new_node(api: client.ApiClient, clique: str | None = None) -> str:
    """A fresh node; `clique` is set as its label by another writer (a merge patch, as GFD would)."""
    name = next(_names)
    await client.CoreV1Api(api).create_node(cast(Any, {"metadata": {"name": name}}))
    if clique is not None:
        body = {"metadata": {"labels": {names.GPU_CLIQUE_LABEL: clique}}}
        await client.CoreV1Api(api).patch_node(
            name, body, field_manager="gpu-feature-discovery", **MERGE_PATCH_ARGS
        )
    return name


async def label(api: client.ApiClient, node: str) -> str | None:
    labels = (await client.CoreV1Api(api).read_node(node)).metadata.labels or {}
    return labels.get(names.GPU_CLIQUE_LABEL)


async def agent_events(api: client.ApiClient, node: str) -> list[str]:
    listing = await client.CoreV1Api(api).list_namespaced_event(
        AGENT_NAMESPACE, field_selector=f"involvedObject.name={node}"
    )
    return [e.reason for e in listing.items if e.source.component == names.AGENT_FIELD_MANAGER]


async def test_label_of_its_own_comes_and_goes(
    kube: Kube, api: client.ApiClient, private_cluster: LocalCluster
) -> None:
    node = await new_node(api)
    agent = labeler(kube, node)
    assert await agent.sync(FOUND)
    assert await label(api, node) == CLIQUE
    writes = api_writes(private_cluster.kubeconfig, "nodes")
    assert await agent.sync(FOUND)
    assert api_writes(private_cluster.kubeconfig, "nodes") == writes
    assert await agent.sync(NO_FABRIC)
    assert await label(api, node) is None
    assert await agent_events(api, node) == ["NVLinkCliqueDetected", "NVLinkCliqueRemoved"]


async def test_someone_elses_label_is_left_alone(
    kube: Kube, api: client.ApiClient, private_cluster: LocalCluster
) -> None:
    node = await new_node(api, CLIQUE)
    agent = labeler(kube, node)
    writes = api_writes(private_cluster.kubeconfig, "nodes")
    assert await agent.sync(NO_FABRIC)
    assert await label(api, node) == CLIQUE
    assert api_writes(private_cluster.kubeconfig, "nodes") == writes
    assert await agent_events(api, node) == []


async def test_a_label_held_with_someone_else_stays_when_the_clique_goes(
    kube: Kube, api: client.ApiClient, private_cluster: LocalCluster
) -> None:
    node = await new_node(api, CLIQUE)
    agent = labeler(kube, node)
    # Same value: the agent applies once to hold the field too, which changes nothing visible.
    assert await agent.sync(FOUND)
    assert await label(api, node) == CLIQUE
    assert await agent.sync(NO_FABRIC)
    assert await label(api, node) == CLIQUE
    # It let go of its share; the other writer's label stays, and no Event claims it was removed.
    assert await agent_events(api, node) == []
    writes = api_writes(private_cluster.kubeconfig, "nodes")
    assert await agent.sync(NO_FABRIC)
    assert api_writes(private_cluster.kubeconfig, "nodes") == writes


async def test_a_different_value_is_taken_over(kube: Kube, api: client.ApiClient) -> None:
    node = await new_node(api, OTHER)
    agent = labeler(kube, node)
    assert await agent.sync(FOUND)
    assert await label(api, node) == CLIQUE
    # Forced apply moved the field to the agent alone, so removing it really removes it.
    assert await agent.sync(NO_FABRIC)
    assert await label(api, node) is None
    assert await agent_events(api, node) == ["NVLinkCliqueDetected", "NVLinkCliqueRemoved"]


async def test_a_restarted_agent_on_a_healthy_node_stays_quiet(
    kube: Kube, api: client.ApiClient, private_cluster: LocalCluster
) -> None:
    node = await new_node(api)
    assert await labeler(kube, node).sync(FOUND)
    writes = api_writes(private_cluster.kubeconfig, "nodes")
    assert await labeler(kube, node).sync(FOUND)
    assert api_writes(private_cluster.kubeconfig, "nodes") == writes
    assert await agent_events(api, node) == ["NVLinkCliqueDetected"]
