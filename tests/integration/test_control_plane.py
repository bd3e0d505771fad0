"""Proof that the suite talks to a real, complete control plane (these fail against anything less)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from cdtestbed.topology import FakeNode
from support.waiting import eventually

pytestmark = pytest.mark.cluster


async def test_server_is_kubernetes_1_36(api: client.ApiClient) -> None:
    version = await client.VersionApi(api).get_code()
    assert version.major == "1"
    assert version.minor.rstrip("+") == "36"
    assert version.git_version.startswith("v1.36.")


async def test_dra_v1_is_served(api: client.ApiClient) -> None:
    groups = await client.ApisApi(api).get_api_versions()
    resource = next(g for g in groups.groups if g.name == "resource.k8s.io")
    assert "v1" in [v.version for v in resource.versions]


def _daemonset(name: str, selector: dict[str, str]) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": selector,
                    "containers": [{"name": "c", "image": "registry.invalid/none:1"}],
                },
            },
        },
    }


async def test_daemonset_pods_run_on_exactly_the_selected_fake_nodes(
    api: client.ApiClient, fake_nodes: list[FakeNode], namespace: str
) -> None:
    core = client.CoreV1Api(api)
    chosen = [fake_nodes[1].name, fake_nodes[20].name, fake_nodes[-1].name]
    key = f"test.computedomain/ds-{uuid.uuid4().hex[:6]}"
    for name in chosen:
        await core.patch_node(name, {"metadata": {"labels": {key: "yes"}}})
    try:
        await client.AppsV1Api(api).create_namespaced_daemon_set(namespace, _daemonset("probe", {key: "yes"}))

        async def ready_pods() -> list[str] | None:
            pods = (await core.list_namespaced_pod(namespace, label_selector="app=probe")).items
            ready = [
                p.spec.node_name
                for p in pods
                if p.status.phase == "Running"
                and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
            ]
            return sorted(ready) if len(ready) == len(chosen) else None

        assert await eventually(ready_pods, timeout=90, what="DaemonSet pods Ready") == sorted(chosen)
        pods = (await core.list_namespaced_pod(namespace, label_selector="app=probe")).items
        assert sorted(p.spec.node_name for p in pods) == sorted(chosen)
    finally:
        for name in chosen:
            await core.patch_node(name, {"metadata": {"labels": {key: None}}})


def _claim_template(requests: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": f"rct-{uuid.uuid4().hex[:6]}"},
        "spec": {"spec": {"devices": {"requests": requests}}},
    }


async def test_claim_template_v1_shape_is_accepted_and_malformed_is_rejected(
    api: client.ApiClient, namespace: str
) -> None:
    custom = client.CustomObjectsApi(api)
    good = _claim_template([{"name": "channel", "exactly": {"deviceClassName": "gpu.example.com"}}])
    created = await custom.create_namespaced_custom_object(
        "resource.k8s.io", "v1", namespace, "resourceclaimtemplates", good
    )
    assert created["spec"]["spec"]["devices"]["requests"][0]["exactly"]["allocationMode"] == "ExactCount"

    # The v1beta1 flat shape is not valid v1: the API server must say so.
    bad = _claim_template([{"name": "channel", "deviceClassName": "gpu.example.com"}])
    with pytest.raises(ApiException) as caught:
        await custom.create_namespaced_custom_object(
            "resource.k8s.io", "v1", namespace, "resourceclaimtemplates", bad
        )
    assert caught.value.status in (400, 422)
    assert "exactly" in caught.value.body


async def test_owned_object_is_garbage_collected_after_its_owner(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    owner = await core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    await core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "owned", "ownerReferences": [ref]}}
    )
    await core.delete_namespaced_config_map("owner", namespace)

    async def gone() -> bool:
        try:
            await core.read_namespaced_config_map("owned", namespace)
        except ApiException as error:
            return error.status == 404
        return False

    await eventually(gone, timeout=60, what="garbage collection of the owned ConfigMap")
