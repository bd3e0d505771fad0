"""The IMEX daemon's API calls against a real API server, with a token bound to a daemon pod and exactly
the rights the chart's daemon RBAC grants: label its own pod, read its node's clique label, list and
watch its one ComputeDomainClique, and nothing that only the controller may do.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from cdtestbed.connection import connection_of
from cdtestbed.topology import FakeNode, rack_clique_id
from computedomain.api import names
from computedomain.daemon import kube
from computedomain.daemon.config import DaemonEntry
from computedomain.kube import Kube
from support import testbed
from support.agent import MERGE_PATCH_ARGS, forbidden_message, kubectl, render_chart
from support.kubelet import pod_token, token_client
from support.waiting import eventually

pytestmark = pytest.mark.cluster

# Its own release name, so that its cluster-wide RBAC objects are not those of another test.
RELEASE = "daemonkube"
NODE = "h100-n01"
DOMAIN_UID = "5f0c3b1e-0d7a-4c1e-9a52-3b6f7d2e8c41"
CLIQUE = rack_clique_id(1)
WAIT = 60.0


def clique_object(name: str, nodes: dict[str, int]) -> dict[str, Any]:
    """A ComputeDomainClique listing `nodes` (node -> index), each with an IP derived from its index."""
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.CLIQUE_KIND,
        "metadata": {"name": name, "labels": {names.DOMAIN_LABEL: DOMAIN_UID, names.CLIQUE_LABEL: CLIQUE}},
        "daemons": [
            {"nodeName": node, "ipAddress": f"10.9.0.{index + 1}", "cliqueID": CLIQUE, "index": index}
            for node, index in nodes.items()
        ],
    }


def entries(nodes: dict[str, int]) -> tuple[DaemonEntry, ...]:
    return tuple(DaemonEntry(n, f"10.9.0.{i + 1}", CLIQUE, i) for n, i in nodes.items())


@pytest_asyncio.fixture
async def daemon_pod(
    api: client.ApiClient, cluster: testbed.Testbed, operator_ready: str, namespace: str
) -> AsyncIterator[dict[str, Any]]:
    """A pod of the daemon's service account in `namespace`, on a fake node, with the chart's RBAC."""
    core = client.CoreV1Api(api)
    manifests = render_chart(("templates/rbac-imex-daemon.yaml",), namespace, release=RELEASE)
    await core.create_namespaced_service_account(
        namespace, cast(Any, {"metadata": {"name": names.DAEMON_SERVICE_ACCOUNT}})
    )
    await asyncio.to_thread(kubectl, cluster.kubeconfig, "apply", "-f", "-", manifests=manifests)
    pod = {
        "metadata": {"name": "imex-daemon"},
        "spec": {
            "nodeName": NODE,
            "serviceAccountName": names.DAEMON_SERVICE_ACCOUNT,
            "containers": [{"name": "daemon", "image": "registry.example/computedomain-operator:0.1.0"}],
        },
    }
    created = await core.create_namespaced_pod(namespace, cast(Any, pod))
    try:
        yield api.sanitize_for_serialization(created)
    finally:
        await asyncio.to_thread(
            kubectl, cluster.kubeconfig, "delete", "--ignore-not-found", "-f", "-", manifests=manifests
        )


@pytest_asyncio.fixture
async def daemon_api(
    api: client.ApiClient, cluster: testbed.Testbed, daemon_pod: dict[str, Any], tmp_path: Path
) -> AsyncIterator[client.ApiClient]:
    """The daemon's credentials: a token bound to its pod."""
    token = await pod_token(api, daemon_pod)
    async with await token_client(cluster.kubeconfig, token, tmp_path / "kubeconfig") as daemon:
        daemon_kube = Kube(connection_of(daemon), field_manager=kube.FIELD_MANAGER)

        # RBAC objects just applied reach the authorizer's cache a moment later.
        async def allowed() -> bool:
            return await forbidden_message(kube.read_node_clique(daemon_kube, NODE)) is None

        try:
            await eventually(allowed, timeout=WAIT, what="the daemon's RBAC in effect")
        finally:
            await daemon_kube.close()
        yield daemon


@pytest_asyncio.fixture
async def daemon_kube(daemon_api: client.ApiClient) -> AsyncIterator[Kube]:
    """The daemon's client layer, as `run` builds it, on the daemon's credentials."""
    daemon_kube = Kube(connection_of(daemon_api), field_manager=kube.FIELD_MANAGER)
    try:
        yield daemon_kube
    finally:
        await daemon_kube.close()


async def test_daemon_labels_its_own_pod(
    api: client.ApiClient, daemon_kube: Kube, daemon_pod: dict[str, Any], namespace: str
) -> None:
    name = daemon_pod["metadata"]["name"]
    await kube.label_own_pod(daemon_kube, namespace, name, CLIQUE)
    pod = await client.CoreV1Api(api).read_namespaced_pod(name, namespace)
    assert pod.metadata.labels == {names.CLIQUE_LABEL: CLIQUE}
    # A node without NVLink fabric: the label is present and empty, as the controller expects.
    await kube.label_own_pod(daemon_kube, namespace, name, "")
    pod = await client.CoreV1Api(api).read_namespaced_pod(name, namespace)
    assert pod.metadata.labels == {names.CLIQUE_LABEL: ""}


async def test_daemon_reads_its_nodes_clique(fake_nodes: list[FakeNode], daemon_kube: Kube) -> None:
    assert await kube.read_node_clique(daemon_kube, "gb200-r1-n05") == CLIQUE
    assert await kube.read_node_clique(daemon_kube, NODE) == ""


async def test_daemon_follows_only_its_clique(
    api: client.ApiClient, daemon_kube: Kube, namespace: str
) -> None:
    custom = client.CustomObjectsApi(api)
    mine, other = names.clique_name(DOMAIN_UID, CLIQUE), names.clique_name(DOMAIN_UID, rack_clique_id(0))
    seen: asyncio.Queue[tuple[DaemonEntry, ...]] = asyncio.Queue()
    history: list[tuple[DaemonEntry, ...]] = []

    async def follow() -> None:
        async for daemons in kube.watch_clique(daemon_kube, namespace, mine):
            history.append(daemons)
            await seen.put(daemons)

    async def next_list(expected: tuple[DaemonEntry, ...]) -> None:
        """Wait for `expected`; lists in between may repeat the one before (the watch is level-based)."""
        while await asyncio.wait_for(seen.get(), WAIT) != expected:
            pass

    task = asyncio.create_task(follow())
    try:
        await next_list(())
        create = custom.create_namespaced_custom_object
        await create(
            names.GROUP, names.VERSION, namespace, names.CLIQUE_PLURAL, clique_object(other, {"x": 0})
        )
        await create(
            names.GROUP, names.VERSION, namespace, names.CLIQUE_PLURAL, clique_object(mine, {"a": 0})
        )
        await next_list(entries({"a": 0}))
        await custom.patch_namespaced_custom_object(
            names.GROUP,
            names.VERSION,
            namespace,
            names.CLIQUE_PLURAL,
            mine,
            {"daemons": clique_object(mine, {"a": 0, "b": 1})["daemons"]},
            **MERGE_PATCH_ARGS,
        )
        await next_list(entries({"a": 0, "b": 1}))
        await custom.delete_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.CLIQUE_PLURAL, mine
        )
        await next_list(())
        await create(
            names.GROUP, names.VERSION, namespace, names.CLIQUE_PLURAL, clique_object(mine, {"c": 2})
        )
        await next_list(entries({"c": 2}))
        # The other clique, in the same namespace, never showed up.
        assert {entry.node_name for daemons in history for entry in daemons} == {"a", "b", "c"}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_daemon_cannot_do_what_only_the_controller_does(
    api: client.ApiClient, daemon_api: client.ApiClient, namespace: str
) -> None:
    custom = client.CustomObjectsApi(daemon_api)
    name = names.clique_name(DOMAIN_UID, CLIQUE)
    created = await forbidden_message(
        custom.create_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.CLIQUE_PLURAL, clique_object(name, {"a": 0})
        )
    )
    assert created is not None
    assert 'cannot create resource "computedomaincliques"' in created
    await client.CustomObjectsApi(api).create_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.CLIQUE_PLURAL, clique_object(name, {"a": 0})
    )
    patched = await forbidden_message(
        custom.patch_namespaced_custom_object(
            names.GROUP,
            names.VERSION,
            namespace,
            names.CLIQUE_PLURAL,
            name,
            {"daemons": []},
            **MERGE_PATCH_ARGS,
        )
    )
    assert patched is not None
    assert 'cannot patch resource "computedomaincliques"' in patched
    labelled = await forbidden_message(
        client.CoreV1Api(daemon_api).patch_node(
            NODE, {"metadata": {"labels": {"x": "y"}}}, **MERGE_PATCH_ARGS
        )
    )
    assert labelled is not None
    assert 'cannot patch resource "nodes"' in labelled
