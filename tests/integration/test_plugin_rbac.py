"""The kubelet plugin does all its work with the chart's RBAC and admission policy: a token bound to a
plugin pod on its node, on the real API server (nothing it needs is forbidden, and a test of that
cannot pass by an admin's rights).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from computedomain.api import names
from computedomain.dra.slices import slice_name
from computedomain.kube import EVENTS, PODS, Kube, Object, resource_slices
from support import testbed
from support.agent import component, kubectl, render_chart
from support.kubelet import pod_token, token_client
from support.pluginbed import (
    VERSION,
    allocated_claim,
    create_domain,
    kube,
    node,
    node_root,
    pod,
    ref,
    set_ready,
    start_plugin,
)
from support.pluginkubelet import kubelet
from support.pluginview import channel_config, daemon_config
from support.waiting import eventually

pytestmark = pytest.mark.cluster

__all__ = ["kube", "node", "node_root"]  # fixtures
RELEASE = "pluginrbac"
TEMPLATES = (
    "templates/serviceaccounts.yaml",
    "templates/rbac-kubelet-plugin.yaml",
    "templates/kubelet-plugin-admission-policy.yaml",
)


@pytest_asyncio.fixture
async def plugin_api(
    api: client.ApiClient,
    cluster: testbed.Testbed,
    operator_ready: str,
    namespace: str,
    node: tuple[str, str],
    tmp_path: Path,
) -> AsyncIterator[client.ApiClient]:
    """An API client with the token of a plugin pod on `node`, the chart's RBAC in `namespace`."""
    manifests = [
        m
        for m in render_chart(TEMPLATES, namespace, release=RELEASE)
        if m["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "kubelet-plugin"
    ]
    account = str(component(manifests, "ServiceAccount", "kubelet-plugin")["metadata"]["name"])
    await asyncio.to_thread(kubectl, cluster.kubeconfig, "apply", "-f", "-", manifests=manifests)
    body: dict[str, Any] = {
        "metadata": {"name": "kubelet-plugin"},
        "spec": {
            "nodeName": node[0],
            "serviceAccountName": account,
            "containers": [{"name": "main", "image": "registry.example/computedomain-operator:0.1.0"}],
        },
    }
    created = await client.CoreV1Api(api).create_namespaced_pod(namespace, body)  # type: ignore[arg-type]
    token = await pod_token(api, api.sanitize_for_serialization(created))
    try:
        async with await token_client(cluster.kubeconfig, token, tmp_path / "kubeconfig") as plugin:
            yield plugin
    finally:
        await asyncio.to_thread(
            kubectl, cluster.kubeconfig, "delete", "--ignore-not-found", "-f", "-", manifests=manifests
        )


async def test_the_plugin_works_with_the_charts_rights_only(
    plugin_api: client.ApiClient,
    kube: Kube,
    node: tuple[str, str],
    node_root: Path,
    namespace: str,
) -> None:
    # The test namespace plays the operator's namespace (where the chart's Role lets it watch pods).
    domain = await create_domain(kube, namespace)
    uid = domain["metadata"]["uid"]
    channel, worker = await allocated_claim(
        kube, namespace, "w-channel", node[0], "channel-0", channel_config(uid)
    )
    daemon_claim, _ = await allocated_claim(
        kube, namespace, "d-claim", node[0], "daemon-0", daemon_config(uid)
    )
    daemon = await pod(kube, namespace, f"daemon-{uuid.uuid4().hex[:6]}", node[0], {names.DOMAIN_LABEL: uid})

    async with start_plugin(plugin_api, kube, *node, node_root, namespace) as running:
        published = await kube.get(resource_slices(VERSION), slice_name(node[0]))
        assert published is not None
        async with kubelet(running.settings.registration_socket) as kl:
            waiting = asyncio.create_task(kl.prepare([ref(channel)]))

            async def counted() -> list[Object] | None:
                items, _ = await kube.list(
                    EVENTS, namespace, field_selector=f"involvedObject.name={worker['metadata']['name']}"
                )
                waiting = [e for e in items if e["reason"] == "WaitingForIMEXDaemon"]
                return waiting if any(e.get("count", 1) > 1 for e in waiting) else None

            # Posted, then said again on the same object (a patch), with the plugin's rights.
            [event] = await eventually(
                counted,
                timeout=15,
                what="the waiting Event, posted and counted again with the plugin's rights",
            )
            assert event["lastTimestamp"] > event["firstTimestamp"]
            await set_ready(kube, daemon)
            answers = await waiting
            answers.update(await kl.prepare([ref(daemon_claim)]))
        # The kubelet deletes the node's slices when it restarts: the plugin may and does put it back.
        await kube.delete(resource_slices(VERSION), slice_name(node[0]))

        async def republished() -> bool:
            return await kube.get(resource_slices(VERSION), slice_name(node[0])) is not None

        await eventually(republished, timeout=15, what="the slice republished with the plugin's rights")

    assert {uid: a.error for uid, a in answers.items()} == {
        channel["metadata"]["uid"]: "",
        daemon_claim["metadata"]["uid"]: "",
    }
    spec = json.loads(running.spec(daemon_claim["metadata"]["uid"]).read_text())
    assert f"COMPUTE_DOMAIN_UUID={uid}" in spec["devices"][0]["containerEdits"]["env"]
    await kube.delete(PODS, daemon["metadata"]["name"], namespace)
