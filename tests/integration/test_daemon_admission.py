"""An IMEX daemon speaks only for itself: with a token bound to its pod and the chart's RBAC and
admission policy, it may set its own pod's clique label and nothing else, on the real API server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from computedomain.api import names
from support import testbed
from support.agent import MERGE_PATCH_ARGS, component, forbidden_message, kubectl, render_chart
from support.kubelet import pod_token, token_client
from support.waiting import eventually

pytestmark = pytest.mark.cluster

# Its own release name: the policy and its binding are cluster-scoped.
RELEASE = "daemonpolicy"
TEMPLATES = ("templates/rbac-imex-daemon.yaml", "templates/imex-daemon-admission-policy.yaml")
CLIQUE = "a1b2c3d4-0000-4000-8000-000000000001.1"
WAIT = 60.0
ONLY_THE_LABEL = f"an IMEX daemon may change only the label {names.CLIQUE_LABEL} of its pod"


def pod_manifest(name: str, account: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "serviceAccountName": account,
            "containers": [{"name": "main", "image": "registry.example/computedomain-operator:0.1.0"}],
        },
    }


@dataclass
class Bed:
    admin: client.ApiClient
    daemon: client.ApiClient
    namespace: str
    policy: str


@pytest_asyncio.fixture
async def bed(
    api: client.ApiClient, cluster: testbed.Testbed, namespace: str, tmp_path: Path
) -> AsyncIterator[Bed]:
    """Two daemon pods and a controller pod in `namespace`; the credentials of the first daemon."""
    core = client.CoreV1Api(api)
    manifests = render_chart(TEMPLATES, namespace, release=RELEASE)
    policy = str(component(manifests, "ValidatingAdmissionPolicy", "imex-daemon")["metadata"]["name"])
    await core.create_namespaced_service_account(
        namespace, cast(Any, {"metadata": {"name": names.DAEMON_SERVICE_ACCOUNT}})
    )
    await asyncio.to_thread(kubectl, cluster.kubeconfig, "apply", "-f", "-", manifests=manifests)
    victim_labels = {names.DOMAIN_LABEL: "victim-uid", names.CLIQUE_LABEL: CLIQUE}
    own = await core.create_namespaced_pod(
        namespace, cast(Any, pod_manifest("daemon-own", names.DAEMON_SERVICE_ACCOUNT))
    )
    for name, account, labels in (
        ("daemon-victim", names.DAEMON_SERVICE_ACCOUNT, victim_labels),
        ("controller", "default", {"app.kubernetes.io/component": "controller"}),
    ):
        await core.create_namespaced_pod(namespace, cast(Any, pod_manifest(name, account, labels)))
    token = await pod_token(api, api.sanitize_for_serialization(own))
    try:
        async with await token_client(cluster.kubeconfig, token, tmp_path / "kubeconfig") as daemon:
            bed = Bed(api, daemon, namespace, policy)

            async def enforced() -> str | None:
                message = await forbidden_message(
                    client.CoreV1Api(daemon).patch_namespaced_pod(
                        "controller",
                        namespace,
                        {"metadata": {"labels": {"x": "1"}}},
                        dry_run="All",
                        **MERGE_PATCH_ARGS,
                    )
                )
                return message if message and policy in message else None

            await eventually(enforced, timeout=WAIT, what=f"admission policy {policy} enforced")
            yield bed
    finally:
        await asyncio.to_thread(
            kubectl, cluster.kubeconfig, "delete", "--ignore-not-found", "-f", "-", manifests=manifests
        )


async def patch(api: client.ApiClient, namespace: str, name: str, body: Any) -> Any:
    """A merge patch, or a JSON patch when `body` is a list of operations."""
    content: dict[str, Any] = (
        {"_content_type": "application/json-patch+json"} if isinstance(body, list) else MERGE_PATCH_ARGS
    )
    return await client.CoreV1Api(api).patch_namespaced_pod(name, namespace, body, **content)


async def labels_of(bed: Bed, name: str) -> dict[str, str]:
    pod = await client.CoreV1Api(bed.admin).read_namespaced_pod(name, bed.namespace)
    return dict(pod.metadata.labels or {})


async def test_a_daemon_labels_its_own_pod_with_its_clique(bed: Bed) -> None:
    await patch(
        bed.daemon, bed.namespace, "daemon-own", {"metadata": {"labels": {names.CLIQUE_LABEL: CLIQUE}}}
    )
    assert (await labels_of(bed, "daemon-own"))[names.CLIQUE_LABEL] == CLIQUE


@pytest.mark.parametrize("target", ["daemon-victim", "controller"])
async def test_a_daemon_cannot_change_another_pod(bed: Bed, target: str) -> None:
    before = await labels_of(bed, target)
    message = await forbidden_message(
        patch(bed.daemon, bed.namespace, target, {"metadata": {"labels": {names.CLIQUE_LABEL: "forged.1"}}})
    )
    assert message is not None
    assert bed.policy in message
    assert f"an IMEX daemon may change only its own pod (daemon-own), not pod {target}" in message
    assert await labels_of(bed, target) == before


OTHER_CHANGES: dict[str, tuple[Any, str]] = {
    "a domain label": (
        {"metadata": {"labels": {names.DOMAIN_LABEL: "victim-uid"}}},
        f"{ONLY_THE_LABEL}; it also tried to change the labels: {names.DOMAIN_LABEL}",
    ),
    "an annotation": ({"metadata": {"annotations": {"x": "y"}}}, "not its annotations"),
    "a finalizer": ({"metadata": {"finalizers": ["example.com/keep"]}}, "finalizers"),
    "its image": (
        [{"op": "replace", "path": "/spec/containers/0/image", "value": "evil.example/x:1"}],
        "or spec",
    ),
}


@pytest.mark.parametrize("change", OTHER_CHANGES.values(), ids=OTHER_CHANGES.keys())
async def test_a_daemon_cannot_change_anything_else_on_its_pod(bed: Bed, change: tuple[Any, str]) -> None:
    body, expected = change
    message = await forbidden_message(patch(bed.daemon, bed.namespace, "daemon-own", body))
    assert message is not None
    assert bed.policy in message
    assert expected in message


async def test_rbac_keeps_a_daemon_off_deployments_and_pod_lifecycle(bed: Bed) -> None:
    apps = client.AppsV1Api(bed.daemon)
    deployment = await forbidden_message(
        apps.patch_namespaced_deployment(
            "computedomain-controller", bed.namespace, {"spec": {"replicas": 0}}, **MERGE_PATCH_ARGS
        )
    )
    assert deployment is not None
    assert 'cannot patch resource "deployments"' in deployment
    deleted = await forbidden_message(
        client.CoreV1Api(bed.daemon).delete_namespaced_pod("controller", bed.namespace)
    )
    assert deleted is not None
    assert "cannot delete resource" in deleted
