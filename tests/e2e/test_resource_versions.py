"""The controller and the chart against every `resource.k8s.io` generation: an API server that serves
only v1beta1 (like Kubernetes 1.32), v1beta2 and v1beta1 (like 1.33), v1 (1.34+), and none at all.

Each case runs a private Kubernetes 1.36 API server with `--runtime-config` switching versions on and
off, installs the chart with Helm, and runs the real controller as a process. What is checked: the
chart's DeviceClasses and both ResourceClaimTemplates the controller renders are written in the served
version's shape and accepted; a second reconcile changes nothing; deletion cleans up; with no version
served, the domain says ResourceAPIUnavailable and the controller keeps running.

Not covered here: claim allocation on the beta versions. The 1.36 scheduler and resource-claim
controller read only resource.k8s.io/v1, so with v1 switched off nothing allocates; these servers run
without kube-controller-manager, scheduler and KWOK. The full flow with allocation runs on v1 in
test_helm_chart.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
import pytest_asyncio
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from cdtestbed.cluster import ClusterOptions, LocalCluster
from cdtestbed.controller_process import ControllerProcess
from cdtestbed.dra import publish_slices
from cdtestbed.install import apply_crds, ensure_namespace
from computedomain.api import names
from computedomain.dra.deviceclasses import device_classes
from computedomain.dra.slices import resource_slices, slice_name
from conftest import controller_env
from support.chart import Object, Tooling
from support.testbed import ControlPlane, control_plane
from support.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

RESOURCE_GROUP = "resource.k8s.io"
NAMESPACE = "computedomain-system"
DOMAIN_NAMESPACE = "team-dra"
WRITES = "computedomain_api_writes_total"
RECONCILES = "computedomain_reconcile_total"
QUEUE = "computedomain_queue_depth"


@dataclass(frozen=True)
class Server:
    """An API server configuration: what it is switched to serve, and what everyone should pick."""

    runtime_config: str
    served: tuple[str, ...]
    picked: str | None


# Kubernetes 1.36 serves v1 alone by default; the betas are still built in and can be switched back on.
SERVERS = {
    "v1beta1-like-1.32": Server(
        "resource.k8s.io/v1=false,resource.k8s.io/v1beta1=true", ("v1beta1",), "v1beta1"
    ),
    "v1beta2-like-1.33": Server(
        "resource.k8s.io/v1=false,resource.k8s.io/v1beta2=true,resource.k8s.io/v1beta1=true",
        ("v1beta2", "v1beta1"),
        "v1beta2",
    ),
    "v1": Server("", ("v1",), "v1"),
}
NO_RESOURCE_API = Server("resource.k8s.io/v1=false", (), None)


@pytest_asyncio.fixture
async def admin(request: pytest.FixtureRequest) -> AsyncIterator[ControlPlane]:
    """A private API server (no controllers, no nodes) serving what the test's parameter says."""
    server: Server = request.param
    # RBAC alone: the Node authorizer never gets ready with resource.k8s.io/v1 switched off.
    options = ClusterOptions(
        runtime_config=server.runtime_config, controllers=False, authorization_mode="RBAC"
    )
    async with control_plane(options, prefix="cluster-dra-") as plane:
        yield plane


# --- helpers ------------------------------------------------------------------------------------------


async def served_versions(api: client.ApiClient) -> tuple[str, ...]:
    groups = await client.ApisApi(api).get_api_versions()
    group = next((g for g in groups.groups if g.name == RESOURCE_GROUP), None)
    return tuple(v.version for v in group.versions) if group else ()


async def get(api: client.ApiClient, version: str, plural: str, name: str, namespace: str = "") -> Object:
    custom = client.CustomObjectsApi(api)
    if namespace:
        body: Object = await custom.get_namespaced_custom_object(
            RESOURCE_GROUP, version, namespace, plural, name
        )
    else:
        body = await custom.get_cluster_custom_object(RESOURCE_GROUP, version, plural, name)
    return body


def written_in(body: Object, manager: str) -> set[str]:
    """The API versions `manager` wrote `body` in (from its managed fields)."""
    return {f["apiVersion"] for f in body["metadata"].get("managedFields") or [] if f["manager"] == manager}


def start_controller(cluster: LocalCluster) -> ControllerProcess:
    controller = ControllerProcess(
        cluster.kubeconfig, cluster.logs / "controller.log", controller_env(NAMESPACE)
    )
    controller.start()
    return controller


async def create_domain(api: client.ApiClient, name: str, num_nodes: int) -> Object:
    await client.CoreV1Api(api).create_namespace(cast(Any, {"metadata": {"name": DOMAIN_NAMESPACE}}))
    body: Object = await client.CustomObjectsApi(api).create_namespaced_custom_object(
        names.GROUP,
        names.VERSION,
        DOMAIN_NAMESPACE,
        names.DOMAIN_PLURAL,
        {
            "apiVersion": names.API_VERSION,
            "kind": names.DOMAIN_KIND,
            "metadata": {"name": name, "namespace": DOMAIN_NAMESPACE},
            "spec": {
                "numNodes": num_nodes,
                "channel": {"resourceClaimTemplate": {"name": f"{name}-channel"}},
            },
        },
    )
    return body


async def read_domain(api: client.ApiClient, name: str) -> Object | None:
    try:
        body: Object = await client.CustomObjectsApi(api).get_namespaced_custom_object(
            names.GROUP, names.VERSION, DOMAIN_NAMESPACE, names.DOMAIN_PLURAL, name
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return body


def condition(body: Object | None, kind: str) -> Object:
    conditions = ((body or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


async def wait_condition(api: client.ApiClient, name: str, kind: str, status: str, reason: str) -> Object:
    """Wait until the domain's condition `kind` has `status` and `reason`; returns the domain."""
    seen: list[Object] = []

    async def probe() -> Object | None:
        body = await read_domain(api, name)
        seen[:] = ((body or {}).get("status") or {}).get("conditions") or []
        found = condition(body, kind)
        return body if found.get("status") == status and found.get("reason") == reason else None

    try:
        result: Object = await eventually(probe, timeout=60, what=f"{name}: {kind}={status} ({reason})")
    except AssertionError as error:
        raise AssertionError(f"{error}; the domain's conditions: {seen or 'none'}") from None
    return result


async def delete_domain(api: client.ApiClient, name: str) -> None:
    """Delete the domain and wait until the controller has let it go."""
    await client.CustomObjectsApi(api).delete_namespaced_custom_object(
        names.GROUP, names.VERSION, DOMAIN_NAMESPACE, names.DOMAIN_PLURAL, name
    )

    async def gone() -> bool:
        return await read_domain(api, name) is None

    await eventually(gone, timeout=60, what=f"ComputeDomain {name} finalized and deleted")


def request_of(template: Object) -> Object:
    requests: list[Object] = template["spec"]["spec"]["devices"]["requests"]
    assert len(requests) == 1
    return requests[0]


def device_class_of(request: Object, version: str) -> str:
    """The class a request asks for, read the way `version` nests it (and only that way)."""
    if version == "v1beta1":
        assert "exactly" not in request
        return str(request["deviceClassName"])
    assert "deviceClassName" not in request
    return str(request["exactly"]["deviceClassName"])


async def settled(controller: ControllerProcess) -> float:
    """Wait until the controller's queue is empty and no reconcile ran between two looks; returns the
    reconcile count then."""
    last: list[float] = [-1.0]

    async def probe() -> float | None:
        count = controller.metric(RECONCILES)
        quiet = controller.metric(QUEUE) == 0 and count == last[0]
        last[0] = count
        return count if quiet else None

    result: float = await eventually(probe, timeout=60, interval=0.5, what="controller idle")
    return result


# --- tests --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("admin", list(SERVERS.values()), ids=list(SERVERS), indirect=True)
async def test_controller_and_chart_speak_the_served_version(
    admin: ControlPlane, request: pytest.FixtureRequest
) -> None:
    cluster, api = admin.cluster, admin.api
    server: Server = request.node.callspec.params["admin"]
    version = server.picked
    assert version is not None
    # The switches do what this test believes (a later Kubernetes may drop a beta version).
    assert await served_versions(api) == server.served

    tools = Tooling(cluster.kubeconfig, cluster.workdir / "helm")
    (await tools.install("cdop", NAMESPACE)).check()
    for expected in device_classes(version):
        live = await get(api, version, "deviceclasses", expected["metadata"]["name"])
        assert live["spec"] == expected["spec"]
        assert written_in(live, "helm") == {f"{RESOURCE_GROUP}/{version}"}
    # The kubelet-plugin double's ResourceSlices have this version's shape too.
    await publish_slices(api, ["gb200-dra-n00"], version)
    devices = (await get(api, version, "resourceslices", slice_name("gb200-dra-n00")))["spec"]["devices"]
    assert [d["name"] for d in devices] == ["channel-0", "daemon-0"]
    # A node with every channel published: the server takes each of its slices as rendered.
    custom = client.CustomObjectsApi(api)
    for body in resource_slices("gb200-dra-n01", version, channels=2048):
        await custom.create_cluster_custom_object(RESOURCE_GROUP, version, "resourceslices", body)
        live = await get(api, version, "resourceslices", body["metadata"]["name"])
        assert live["spec"]["devices"] == body["spec"]["devices"]
        assert live["spec"]["pool"] == body["spec"]["pool"]

    controller = start_controller(cluster)
    try:
        domain = await create_domain(api, "versioned", num_nodes=2)
        uid = domain["metadata"]["uid"]
        await wait_condition(api, "versioned", "ChildrenReady", "True", "ChildrenApplied")
        # No node can join (nothing allocates), so the domain waits for its two nodes.
        await wait_condition(api, "versioned", "Ready", "False", "WaitingForNodes")

        workload = await get(api, version, "resourceclaimtemplates", "versioned-channel", DOMAIN_NAMESPACE)
        daemon = await get(api, version, "resourceclaimtemplates", names.daemon_name(uid), NAMESPACE)
        for template, device_class, config_kind in (
            (workload, names.CHANNEL_DEVICE_CLASS, names.CHANNEL_CONFIG_KIND),
            (daemon, names.DAEMON_DEVICE_CLASS, names.DAEMON_CONFIG_KIND),
        ):
            assert written_in(template, names.FIELD_MANAGER) == {f"{RESOURCE_GROUP}/{version}"}
            assert device_class_of(request_of(template), version) == device_class
            parameters = template["spec"]["spec"]["devices"]["config"][0]["opaque"]["parameters"]
            assert parameters["kind"] == config_kind
            assert parameters["domainID"] == uid
        assert workload["spec"]["metadata"]["labels"] == {names.DOMAIN_LABEL: uid}

        # A reconcile with nothing to do writes nothing: what the server echoes back in this version
        # (defaults, conversions) matches what the controller renders.
        before = await settled(controller)
        writes = controller.metric(WRITES)
        await client.CustomObjectsApi(api).patch_namespaced_custom_object(
            names.GROUP,
            names.VERSION,
            DOMAIN_NAMESPACE,
            names.DOMAIN_PLURAL,
            "versioned",
            [{"op": "add", "path": "/metadata/labels", "value": {"test.computedomain/poke": "1"}}],
        )

        async def poked() -> bool:
            return controller.metric(RECONCILES) > before

        await eventually(poked, timeout=30, what="a reconcile after the label change")
        await settled(controller)
        assert controller.metric(WRITES) == writes
        again = await get(api, version, "resourceclaimtemplates", "versioned-channel", DOMAIN_NAMESPACE)
        assert again["metadata"]["resourceVersion"] == workload["metadata"]["resourceVersion"]

        await delete_domain(api, "versioned")
        for namespace, name in ((DOMAIN_NAMESPACE, "versioned-channel"), (NAMESPACE, names.daemon_name(uid))):
            with pytest.raises(ApiException) as missing:
                await get(api, version, "resourceclaimtemplates", name, namespace)
            assert missing.value.status == 404
    finally:
        code = controller.stop()
    assert code == 0, f"controller exited with {code}; see {controller.log}"


@pytest.mark.parametrize("admin", [NO_RESOURCE_API], ids=["none"], indirect=True)
async def test_without_a_resource_api_the_domain_says_so(
    admin: ControlPlane,
) -> None:
    cluster, api = admin.cluster, admin.api
    assert await served_versions(api) == ()

    tools = Tooling(cluster.kubeconfig, cluster.workdir / "helm")
    refused = await tools.install("cdop", NAMESPACE)
    assert refused.returncode != 0
    assert "serves no resource.k8s.io version" in refused.stderr

    await apply_crds(api)
    await ensure_namespace(api, NAMESPACE)
    controller = start_controller(cluster)
    try:
        await create_domain(api, "no-dra", num_nodes=1)
        body = await wait_condition(api, "no-dra", "Ready", "False", "ResourceAPIUnavailable")
        assert condition(body, "ChildrenReady")["reason"] == "ResourceAPIUnavailable"
        assert "resource.k8s.io" in condition(body, "Ready")["message"]

        async def warned() -> Any:
            events = await client.CoreV1Api(api).list_namespaced_event(DOMAIN_NAMESPACE)
            return [e for e in events.items if e.reason == "ResourceAPIUnavailable" and e.type == "Warning"]

        await eventually(warned, timeout=30, what="a ResourceAPIUnavailable Event")
        # Still serving, still leading: it explains the problem instead of crash-looping.
        assert controller.process is not None
        assert controller.process.poll() is None
        assert controller.get("/healthz")[0] == 200
        assert controller.get("/readyz")[0] == 200

        await delete_domain(api, "no-dra")
    finally:
        code = controller.stop()
    assert code == 0, f"controller exited with {code}; see {controller.log}"
