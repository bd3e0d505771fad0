"""The node agent's least privilege, as a real API server enforces it: the chart's RBAC and
ValidatingAdmissionPolicy, and a service account token bound to an agent pod on node A (the API server
then authenticates the agent with the node name `authentication.kubernetes.io/node-name`).

With that token the agent may set and remove the `nvidia.com/gpu.clique` label of node A, and nothing else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from cdtestbed.cluster import ClusterOptions
from cdtestbed.connection import connection_of
from cdtestbed.topology import FakeNode, node_manifest
from computedomain.agent.labeler import NodeLabeler
from computedomain.api import names
from computedomain.kube import APPLY, Kube
from computedomain.nvml.clique import CliqueResult, Reason
from support.agent import MERGE_PATCH_ARGS, AgentBed, forbidden_message
from support.kubelet import account_token, token_client
from support.testbed import ControlPlane, private_control_plane

pytestmark = pytest.mark.cluster

NODE_A = "gb200-agent-a"
NODE_B = "gb200-agent-b"
CLIQUE = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22.32766"
FOUND = CliqueResult(CLIQUE, Reason.CLIQUE_FOUND, f"GPUs 0, 1, 2, 3 in NVLink clique {CLIQUE}", [], 4)
NO_FABRIC = CliqueResult(None, Reason.NO_FABRIC, "none of the 4 GPUs is in a multi-node NVLink fabric")
WAIT = 60.0
ONLY_THE_LABEL = f"the node agent may change only the {names.GPU_CLIQUE_LABEL} label of its node"


plane = private_control_plane("admission-", ClusterOptions(controllers=False))


@pytest_asyncio.fixture(scope="module")
async def bed(plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> AgentBed:
    for name in (NODE_A, NODE_B):
        node = FakeNode(name, "", "NVIDIA-GB200", extra_labels={"team": "blue"})
        await client.CoreV1Api(plane.api).create_node(node_manifest(node))  # type: ignore[arg-type]
    bed = AgentBed(plane.api, plane.cluster.kubeconfig, tmp_path_factory.mktemp("admission"))
    await bed.install()
    return bed


@pytest_asyncio.fixture(scope="module")
async def agent_a(bed: AgentBed) -> AsyncIterator[client.ApiClient]:
    """The agent's credentials on node A: a token bound to an agent pod scheduled there."""
    async with await bed.pod_client(await bed.agent_pod(NODE_A)) as api:
        await bed.wait_policy_enforced(api, NODE_B, timeout=WAIT)
        yield api


@pytest_asyncio.fixture
async def agent_kube(agent_a: client.ApiClient) -> AsyncIterator[Kube]:
    """The agent's client layer on its credentials, with its field manager, as the agent builds it."""
    kube = Kube(connection_of(agent_a), field_manager=names.AGENT_FIELD_MANAGER)
    try:
        yield kube
    finally:
        await kube.close()


async def labels_of(api: client.ApiClient, node: str) -> dict[str, str]:
    return dict((await client.CoreV1Api(api).read_node(node)).metadata.labels or {})


def merge_patch(api: client.ApiClient, node: str, body: dict[str, Any]) -> Any:
    return client.CoreV1Api(api).patch_node(node, body, **MERGE_PATCH_ARGS)


async def test_agent_sets_and_removes_its_own_nodes_clique_label(bed: AgentBed, agent_kube: Kube) -> None:
    labeler = NodeLabeler(agent_kube, NODE_A, bed.namespace)
    assert await labeler.sync(FOUND)
    assert (await labels_of(bed.api, NODE_A))[names.GPU_CLIQUE_LABEL] == CLIQUE
    assert await labeler.sync(NO_FABRIC)
    labels = await labels_of(bed.api, NODE_A)
    assert names.GPU_CLIQUE_LABEL not in labels
    assert labels["team"] == "blue"
    # The clique comes and goes again: each said again on its first Event (a patch, which the chart's
    # RBAC allows).
    assert await labeler.sync(FOUND)
    assert await labeler.sync(NO_FABRIC)
    assert names.GPU_CLIQUE_LABEL not in await labels_of(bed.api, NODE_A)
    # Posted in the agent's own namespace, the only one where the chart's RBAC lets it post Events.
    events = await client.CoreV1Api(bed.api).list_namespaced_event(
        bed.namespace, field_selector=f"involvedObject.name={NODE_A}"
    )
    ours = sorted(
        (e for e in events.items if e.source.component == names.AGENT_FIELD_MANAGER),
        key=lambda e: e.metadata.name,
    )
    assert [(e.reason, e.count) for e in ours] == [("NVLinkCliqueDetected", 2), ("NVLinkCliqueRemoved", 2)]


async def test_agent_cannot_label_another_node(
    bed: AgentBed, agent_a: client.ApiClient, agent_kube: Kube
) -> None:
    message = await forbidden_message(
        merge_patch(agent_a, NODE_B, {"metadata": {"labels": {names.GPU_CLIQUE_LABEL: CLIQUE}}})
    )
    assert message is not None
    assert message.endswith(
        f"the node agent running on node {NODE_A} may change only that node, not node {NODE_B}"
    )
    assert bed.policy_name in message
    # The agent's own code, pointed at the wrong node, gets nowhere either.
    assert not await NodeLabeler(agent_kube, NODE_B, bed.namespace).sync(FOUND)
    assert names.GPU_CLIQUE_LABEL not in await labels_of(bed.api, NODE_B)


OTHER_CHANGES = {
    "another label": (
        {"metadata": {"labels": {"team": "red"}}},
        "the node agent may change only the label nvidia.com/gpu.clique of its node; it also tried to "
        "change the labels: team",
    ),
    "a new label beside the clique": (
        {"metadata": {"labels": {names.GPU_CLIQUE_LABEL: CLIQUE, "extra": "1"}}},
        "it also tried to change the labels: extra",
    ),
    "a removed label": ({"metadata": {"labels": {"team": None}}}, "it also tried to change the labels: team"),
    "an annotation": ({"metadata": {"annotations": {"note": "x"}}}, f"{ONLY_THE_LABEL}, not its annotations"),
    "a finalizer": (
        {"metadata": {"finalizers": ["example.com/keep"]}},
        f"{ONLY_THE_LABEL}, not its finalizers or owner references",
    ),
    "an owner": (
        {
            "metadata": {
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Namespace", "name": "default", "uid": "0000-1111"}
                ]
            }
        },
        f"{ONLY_THE_LABEL}, not its finalizers or owner references",
    ),
    "a taint": (
        {"spec": {"taints": [{"key": "example.com/drain", "effect": "NoSchedule"}]}},
        f"{ONLY_THE_LABEL}, not its spec",
    ),
    "cordoning": ({"spec": {"unschedulable": True}}, f"{ONLY_THE_LABEL}, not its spec"),
}


@pytest.mark.parametrize("change", OTHER_CHANGES.values(), ids=OTHER_CHANGES.keys())
async def test_agent_cannot_change_anything_else_on_its_node(
    bed: AgentBed, agent_a: client.ApiClient, change: tuple[dict[str, Any], str]
) -> None:
    body, expected = change
    before = (await client.CoreV1Api(bed.api).read_node(NODE_A)).metadata.resource_version
    message = await forbidden_message(merge_patch(agent_a, NODE_A, body))
    assert message is not None
    assert bed.policy_name in message
    assert expected in message
    assert (await client.CoreV1Api(bed.api).read_node(NODE_A)).metadata.resource_version == before


async def test_agent_cannot_apply_another_label_with_its_own(
    bed: AgentBed, agent_a: client.ApiClient
) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": NODE_A, "labels": {names.GPU_CLIQUE_LABEL: CLIQUE, "team": "red"}},
    }
    apply: dict[str, Any] = {"_content_type": APPLY}
    message = await forbidden_message(
        client.CoreV1Api(agent_a).patch_node(
            NODE_A, body, field_manager=names.AGENT_FIELD_MANAGER, force=True, **apply
        )
    )
    assert message is not None
    assert "it also tried to change the labels: team" in message
    assert (await labels_of(bed.api, NODE_A))["team"] == "blue"


async def test_rbac_keeps_the_agent_off_node_status_and_lifecycle(
    bed: AgentBed, agent_a: client.ApiClient
) -> None:
    core = client.CoreV1Api(agent_a)
    account = f"system:serviceaccount:{bed.namespace}:{bed.service_account}"
    capacity = {"status": {"capacity": {"example.com/x": "1"}}}
    status = await forbidden_message(core.patch_node_status(NODE_A, capacity, **MERGE_PATCH_ARGS))
    assert status is not None
    assert f'User "{account}" cannot patch resource "nodes/status"' in status
    deleted = await forbidden_message(core.delete_node(NODE_A))
    assert deleted is not None
    assert "cannot delete resource" in deleted
    created = await forbidden_message(core.create_node(cast(Any, {"metadata": {"name": "gb200-agent-new"}})))
    assert created is not None
    assert "cannot create resource" in created


async def test_a_token_without_a_node_changes_nothing(bed: AgentBed, tmp_path: Path) -> None:
    token = await account_token(bed.api, bed.namespace, bed.service_account)
    async with await token_client(bed.kubeconfig, token, tmp_path / "kubeconfig") as api:
        message = await forbidden_message(
            merge_patch(api, NODE_A, {"metadata": {"labels": {names.GPU_CLIQUE_LABEL: CLIQUE}}})
        )
    assert message is not None
    assert "the node agent may change nodes only from a pod bound to a node" in message
    assert names.GPU_CLIQUE_LABEL not in await labels_of(bed.api, NODE_A)


def node_event(namespace: str) -> Any:
    """An Event about node A in `namespace`, its reference valid there (the API server requires a
    reference without a namespace to be posted in `default`, one with a namespace in that one)."""
    reference = {"apiVersion": "v1", "kind": "Node", "name": NODE_A}
    if namespace != "default":
        reference["namespace"] = namespace
    body = {"metadata": {"generateName": f"{NODE_A}."}, "involvedObject": reference, "reason": "Probe"}
    return cast(Any, body)


async def test_rbac_keeps_the_agents_events_in_its_namespace(
    bed: AgentBed, agent_a: client.ApiClient
) -> None:
    core = client.CoreV1Api(agent_a)
    message = await forbidden_message(
        core.create_namespaced_event("default", node_event("default"), dry_run="All")
    )
    assert message is not None
    assert 'cannot create resource "events"' in message
    allowed = core.create_namespaced_event(bed.namespace, node_event(bed.namespace), dry_run="All")
    assert await forbidden_message(allowed) is None


async def test_the_policy_leaves_everyone_else_alone(bed: AgentBed, agent_a: client.ApiClient) -> None:
    stamp = datetime.now(UTC).strftime("%H%M%S")
    await merge_patch(bed.api, NODE_B, {"metadata": {"labels": {"team": stamp}}})
    await merge_patch(bed.api, NODE_B, {"metadata": {"labels": {"team": "blue"}}})
    assert (await labels_of(bed.api, NODE_B))["team"] == "blue"
