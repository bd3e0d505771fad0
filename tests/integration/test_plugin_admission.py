"""A kubelet plugin writes only its own node's ResourceSlices: with a token bound to a plugin pod and the
chart's RBAC and admission policy, on the real API server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from cdtestbed.topology import FakeNode
from computedomain.api import names
from support import testbed
from support.agent import component, forbidden_message, kubectl, render_chart
from support.kubelet import account_token, pod_token, token_client
from support.waiting import eventually

pytestmark = pytest.mark.cluster

RELEASE = "pluginpolicy"
TEMPLATES = (
    "templates/serviceaccounts.yaml",
    "templates/rbac-kubelet-plugin.yaml",
    "templates/kubelet-plugin-admission-policy.yaml",
)
WAIT = 60.0
VERSION = "v1"


def slice_manifest(node: str, driver: str = names.DRIVER) -> dict[str, Any]:
    return {
        "apiVersion": f"resource.k8s.io/{VERSION}",
        "kind": "ResourceSlice",
        "metadata": {"name": f"policy-test-{driver.replace('.', '-')}-{node}"},
        "spec": {
            "driver": driver,
            "nodeName": node,
            "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
            "devices": [
                {"name": "channel-0", "attributes": {"type": {"string": "channel"}, "id": {"int": 0}}}
            ],
        },
    }


@dataclass
class Bed:
    admin: client.ApiClient
    plugin: client.ApiClient
    node: str
    other: str
    policy: str
    account: str
    namespace: str
    kubeconfig: Path


async def create_slice(api: client.ApiClient, body: dict[str, Any]) -> Any:
    return await client.CustomObjectsApi(api).create_cluster_custom_object(
        "resource.k8s.io", VERSION, "resourceslices", body
    )


async def delete_slice(api: client.ApiClient, name: str) -> None:
    try:
        await client.CustomObjectsApi(api).delete_cluster_custom_object(
            "resource.k8s.io", VERSION, "resourceslices", name
        )
    except ApiException as error:
        if error.status != 404:
            raise


@pytest_asyncio.fixture
async def bed(
    api: client.ApiClient,
    cluster: testbed.Testbed,
    fake_nodes: list[FakeNode],
    namespace: str,
    tmp_path: Path,
) -> AsyncIterator[Bed]:
    """The chart's plugin RBAC and policy; a plugin pod bound to one fake node, and its credentials."""
    manifests = [
        m
        for m in render_chart(TEMPLATES, namespace, release=RELEASE)
        if m["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "kubelet-plugin"
    ]
    policy = str(component(manifests, "ValidatingAdmissionPolicy", "kubelet-plugin")["metadata"]["name"])
    account = str(component(manifests, "ServiceAccount", "kubelet-plugin")["metadata"]["name"])
    await asyncio.to_thread(kubectl, cluster.kubeconfig, "apply", "-f", "-", manifests=manifests)
    node, other = fake_nodes[0].name, fake_nodes[1].name
    pod = {
        "metadata": {"name": "plugin"},
        "spec": {
            "nodeName": node,
            "serviceAccountName": account,
            "containers": [{"name": "main", "image": "registry.example/computedomain-operator:0.1.0"}],
        },
    }
    created = await client.CoreV1Api(api).create_namespaced_pod(namespace, cast(Any, pod))
    token = await pod_token(api, api.sanitize_for_serialization(created))
    try:
        async with await token_client(cluster.kubeconfig, token, tmp_path / "kubeconfig") as plugin:
            bed = Bed(api, plugin, node, other, policy, account, namespace, cluster.kubeconfig)

            async def enforced() -> str | None:
                body = slice_manifest(other)
                message = await forbidden_message(
                    client.CustomObjectsApi(plugin).create_cluster_custom_object(
                        "resource.k8s.io", VERSION, "resourceslices", body, dry_run="All"
                    )
                )
                return message if message and policy in message else None

            await eventually(enforced, timeout=WAIT, what=f"admission policy {policy} enforced")
            yield bed
    finally:
        for target in (node, other):
            await delete_slice(api, slice_manifest(target)["metadata"]["name"])
        await asyncio.to_thread(
            kubectl, cluster.kubeconfig, "delete", "--ignore-not-found", "-f", "-", manifests=manifests
        )


async def test_the_plugin_publishes_and_withdraws_its_own_nodes_slice(bed: Bed) -> None:
    body = slice_manifest(bed.node)
    await create_slice(bed.plugin, body)
    await delete_slice(bed.plugin, body["metadata"]["name"])


async def test_the_plugin_cannot_publish_for_another_node(bed: Bed) -> None:
    message = await forbidden_message(create_slice(bed.plugin, slice_manifest(bed.other)))
    assert message is not None
    assert bed.policy in message
    assert f"the kubelet plugin running on node {bed.node} may write only that node's" in message
    assert f"not one for node {bed.other}" in message


async def test_the_plugin_cannot_delete_another_nodes_slice(bed: Bed) -> None:
    body = slice_manifest(bed.other)
    await create_slice(bed.admin, body)
    message = await forbidden_message(delete_slice(bed.plugin, body["metadata"]["name"]))
    assert message is not None
    assert bed.policy in message


async def test_the_plugin_cannot_publish_another_drivers_devices(bed: Bed) -> None:
    message = await forbidden_message(create_slice(bed.plugin, slice_manifest(bed.node, "gpu.nvidia.com")))
    assert message is not None
    assert "only ResourceSlices of driver compute-domain.nvidia.com, not of gpu.nvidia.com" in message


async def test_a_token_without_a_node_publishes_nothing(bed: Bed, tmp_path: Path) -> None:
    token = await account_token(bed.admin, bed.namespace, bed.account)
    async with await token_client(bed.kubeconfig, token, tmp_path / "unbound.kubeconfig") as api:
        message = await forbidden_message(create_slice(api, slice_manifest(bed.node)))
    assert message is not None
    assert "only from a pod bound to a node" in message
