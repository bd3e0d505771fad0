"""The Helm chart end to end, on a private control plane: install, run the real controller under the
chart's RBAC, upgrade, uninstall.

The controller runs as a local process that authenticates with a token of the chart's controller
ServiceAccount and gets the environment of the chart's Deployment, so what it may do is exactly what a
replica installed by the chart may do. The API server's audit log shows every request it made: none may
be denied, and every permission the chart grants it must have been used by the flow.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from cdtestbed.cluster import ClusterOptions
from cdtestbed.controller_process import ControllerProcess
from cdtestbed.dra import publish_slices
from cdtestbed.nodes import add_ready_nodes
from cdtestbed.tools import COMPLETE_ANNOTATION, repo_root
from cdtestbed.topology import nvl72_racks
from computedomain.api import names
from computedomain.dra.deviceclasses import device_classes
from support.chart import CHART, Object, Tooling, deployment_env
from support.examples import delete_namespace
from support.serviceaccount import (
    audit_events,
    permission_of,
    permissions,
    permissions_used,
    service_account_kubeconfig,
    unneeded,
    username,
)
from support.testbed import ControlPlane, private_control_plane
from support.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

RELEASE = "cdop"
NAMESPACE = "computedomain-system"
IMAGE_REPOSITORY = "registry.example/computedomain-operator"
# One rack of four GB200 trays: one NVLink clique, room for examples/01's four pods.
NODES = nvl72_racks(1, 4)
EXAMPLE = repo_root() / "examples" / "01-single-rack"
RESOURCE_GROUP = "resource.k8s.io"
HELM_MANAGER = "helm"
CRDS = (f"{names.DOMAIN_PLURAL}.{names.GROUP}", f"{names.CLIQUE_PLURAL}.{names.GROUP}")
CHART_KINDS = {
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "DeviceClass",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "Deployment",
    "DaemonSet",
    "Service",
    "PodDisruptionBudget",
}
# The chart's default priority class of each component's pods.
PRIORITY_CLASSES = {
    "controller": "system-cluster-critical",
    "kubelet-plugin": "system-node-critical",
    "node-agent": "system-node-critical",
}
COMPONENT_LABEL = "app.kubernetes.io/component"


# --- fixtures -----------------------------------------------------------------------------------------


# A control plane of our own (the session's already has the CRDs and a controller), with audit logs.
plane = private_control_plane("cluster-chart-", ClusterOptions(audit=True))


@pytest_asyncio.fixture(scope="module")
async def admin(plane: ControlPlane) -> client.ApiClient:
    """An admin client of the private cluster, whose fake GPU nodes are Ready."""
    await add_ready_nodes(plane.api, NODES)
    return plane.api


@pytest.fixture(scope="module")
def tools(plane: ControlPlane) -> Tooling:
    return Tooling(plane.cluster.kubeconfig, plane.cluster.workdir / "helm")


@pytest_asyncio.fixture(scope="module")
async def release(tools: Tooling, admin: client.ApiClient) -> AsyncIterator[list[Object]]:
    """The chart installed as release `cdop`; yields the objects of its first revision."""
    (await tools.install(RELEASE, NAMESPACE, f"image.repository={IMAGE_REPOSITORY}")).check()
    yield await tools.manifest(RELEASE, NAMESPACE)
    # The uninstall test normally got here first; then this finds nothing to do.
    await tools.helm("uninstall", RELEASE, "--namespace", NAMESPACE)


# --- helpers ------------------------------------------------------------------------------------------


def only(manifests: list[Object], kind: str, name_part: str = "") -> Object:
    """The one object of `kind` whose name contains `name_part`."""
    found = [m for m in manifests if m["kind"] == kind and name_part in m["metadata"]["name"]]
    assert len(found) == 1, f"expected one {kind} *{name_part}*, got {[m['metadata']['name'] for m in found]}"
    return found[0]


async def get(
    api: client.ApiClient, group: str, version: str, plural: str, name: str, ns: str = ""
) -> Object:
    """One object of any non-core kind as the server's JSON."""
    custom = client.CustomObjectsApi(api)
    if ns:
        body: Object = await custom.get_namespaced_custom_object(group, version, ns, plural, name)
    else:
        body = await custom.get_cluster_custom_object(group, version, plural, name)
    return body


async def deployment(api: client.ApiClient, manifests: list[Object]) -> Object:
    return await get(
        api, "apps", "v1", "deployments", only(manifests, "Deployment")["metadata"]["name"], NAMESPACE
    )


def env_of(body: Object) -> dict[str, str]:
    container = body["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container.get("env") or []}


def domain_condition(body: Object, kind: str) -> Object:
    conditions = (body.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


# --- tests --------------------------------------------------------------------------------------------


async def test_install_creates_the_operator(
    admin: client.ApiClient, tools: Tooling, release: list[Object]
) -> None:
    assert {m["kind"] for m in release} == CHART_KINDS
    # Everything the release rendered exists (kubectl names what it finds, one line per object).
    found = (await tools.kubectl("get", "-f", "-", "-o", "name", stdin=yaml.safe_dump_all(release))).check()
    assert len(found.split()) == len(release)

    extensions = client.ApiextensionsV1Api(admin)
    for crd in CRDS:
        definition = await extensions.read_custom_resource_definition(crd)
        conditions = definition.status.conditions
        assert any(c.type == "Established" and c.status == "True" for c in conditions), crd

    accounts = {m["metadata"]["name"] for m in release if m["kind"] == "ServiceAccount"}
    controller_account = (await deployment(admin, release))["spec"]["template"]["spec"]["serviceAccountName"]
    assert names.DAEMON_SERVICE_ACCOUNT in accounts
    assert controller_account in accounts

    rbac = client.RbacAuthorizationV1Api(admin)
    selector = f"app.kubernetes.io/instance={RELEASE}"
    cluster_roles = await rbac.list_cluster_role(label_selector=selector)
    roles = await rbac.list_namespaced_role(NAMESPACE, label_selector=selector)
    live_roles: list[Object] = admin.sanitize_for_serialization([*cluster_roles.items, *roles.items])
    assert len(live_roles) == len([m for m in release if m["kind"] in ("Role", "ClusterRole")])
    for role in live_roles:
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule, role["metadata"]["name"]
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(key, []), f"wildcard in {role['metadata']['name']}: {rule}"

    # The DeviceClasses, written by Helm in resource.k8s.io/v1 (the highest version the server serves).
    for expected in device_classes("v1"):
        live = await get(admin, RESOURCE_GROUP, "v1", "deviceclasses", expected["metadata"]["name"])
        assert live["spec"] == expected["spec"]
        written = {f["apiVersion"] for f in live["metadata"]["managedFields"] if f["manager"] == HELM_MANAGER}
        assert written == {f"{RESOURCE_GROUP}/v1"}

    # One admission policy for each account that RBAC alone cannot narrow enough.
    admission = "admissionregistration.k8s.io"
    for component in ("node-agent", "imex-daemon", "kubelet-plugin"):
        policy = only(release, "ValidatingAdmissionPolicy", component)["metadata"]["name"]
        live_policy = await get(admin, admission, "v1", "validatingadmissionpolicies", policy)
        assert live_policy["spec"]["failurePolicy"] == "Fail"
        binding = await get(admin, admission, "v1", "validatingadmissionpolicybindings", policy)
        assert binding["spec"]["policyName"] == policy
        assert binding["spec"]["validationActions"] == ["Deny"]

    # KWOK runs the controller replicas and node agents as fakes: enough to see that they are admitted,
    # scheduled and counted.
    async def replicas_available() -> Object | None:
        body = await deployment(admin, release)
        return body if (body.get("status") or {}).get("availableReplicas") == 2 else None

    live_deployment = await eventually(replicas_available, timeout=90, what="2 controller replicas available")
    assert live_deployment["spec"]["replicas"] == 2

    agent = only(release, "DaemonSet", "node-agent")["metadata"]["name"]

    async def agents_scheduled() -> bool:
        body = await get(admin, "apps", "v1", "daemonsets", agent, NAMESPACE)
        return (body.get("status") or {}).get("desiredNumberScheduled") == len(NODES)

    await eventually(agents_scheduled, timeout=60, what="a node agent on every GPU node")


async def test_critical_pods_are_admitted_and_the_budget_counts_the_controller(
    admin: client.ApiClient, release: list[Object]
) -> None:
    """On an API server with its default admission plugins, the chart's system-node-critical and
    system-cluster-critical pods are admitted in the release namespace (not kube-system), with the
    priority of their class; the controller's PodDisruptionBudget selects its two replicas and allows
    evicting one of them, never both."""
    assert NAMESPACE != "kube-system"
    core = client.CoreV1Api(admin)
    scheduling = client.SchedulingV1Api(admin)
    priorities = {
        name: (await scheduling.read_priority_class(name)).value for name in set(PRIORITY_CLASSES.values())
    }
    wanted = {"controller": 2, "kubelet-plugin": len(NODES), "node-agent": len(NODES)}
    seen: list[dict[str, int]] = [{}]

    async def all_created() -> dict[str, list[Any]] | None:
        pods = await core.list_namespaced_pod(
            NAMESPACE, label_selector=f"app.kubernetes.io/instance={RELEASE}"
        )
        found: dict[str, list[Any]] = {}
        for pod in pods.items:
            found.setdefault(pod.metadata.labels.get(COMPONENT_LABEL, ""), []).append(pod)
        seen[0] = {component: len(items) for component, items in found.items()}
        return found if all(len(found.get(c, [])) == n for c, n in wanted.items()) else None

    try:
        found = await eventually(all_created, timeout=90, what="every pod of the chart created")
    except AssertionError as error:
        raise AssertionError(f"{error}; pods by component: {seen[0]}") from None
    for component, class_name in PRIORITY_CLASSES.items():
        for pod in found[component]:
            assert pod.spec.priority_class_name == class_name, pod.metadata.name
            # Resolved by the Priority admission plugin when the pod was admitted.
            assert pod.spec.priority == priorities[class_name], pod.metadata.name

    budget = only(release, "PodDisruptionBudget")["metadata"]["name"]
    policy = client.PolicyV1Api(admin)
    status: list[Any] = [None]

    async def budget_counts_both() -> bool:
        live = await policy.read_namespaced_pod_disruption_budget(budget, NAMESPACE)
        state = status[0] = live.status
        return bool(
            state
            and state.expected_pods == 2
            and state.current_healthy == 2
            and state.desired_healthy == 1
            and state.disruptions_allowed == 1
        )

    try:
        await eventually(
            budget_counts_both, timeout=60, what=f"PodDisruptionBudget {budget} counting 2 replicas"
        )
    except AssertionError as error:
        raise AssertionError(f"{error}; its status: {status[0]}") from None


async def test_controller_runs_a_domain_under_the_chart_rbac(
    plane: ControlPlane, admin: client.ApiClient, tools: Tooling, release: list[Object]
) -> None:
    live = await deployment(admin, release)
    account = live["spec"]["template"]["spec"]["serviceAccountName"]
    env = deployment_env(live, pod_name="controller-local")
    assert env["LEADER_ELECTION"] == "true"
    assert env["NAMESPACE"] == NAMESPACE
    # The pod's port would clash with other processes here; the test bed picks a free one.
    env.pop("HTTP_PORT")
    kubeconfig = await service_account_kubeconfig(
        admin, plane.cluster.kubeconfig, NAMESPACE, account, plane.cluster.workdir / "kubeconfig-sa"
    )
    controller = ControllerProcess(kubeconfig, plane.cluster.logs / "controller.log", env)
    controller.start()
    user = username(NAMESPACE, account)
    try:
        coordination = client.CoordinationV1Api(admin)

        async def leading() -> bool:
            try:
                lease = await coordination.read_namespaced_lease(env["LEASE_NAME"], NAMESPACE)
            except ApiException as error:
                if error.status == 404:
                    return False
                raise
            return str(lease.spec.holder_identity or "").startswith("controller-local")

        await eventually(leading, timeout=60, what=f"controller holding lease {env['LEASE_NAME']}")
        await publish_slices(admin, [n.name for n in NODES])
        await run_example(admin, tools, image=env["IMAGE_NAME"])
    finally:
        code = controller.stop()
        # Checked even when the flow failed: a denial is the likeliest cause, and says what to fix.
        events = audit_events(plane.cluster.audit_log, user)
        denied = sorted({permission_of(e) for e in events if e.get("responseStatus", {}).get("code") == 403})
        assert not denied, f"the chart's RBAC denied the controller {denied}; see {controller.log}"
    assert code == 0, f"controller exited with {code}; see {controller.log}"

    rbac = client.RbacAuthorizationV1Api(admin)
    name = f"{release_fullname(release)}-controller"
    cluster_role = admin.sanitize_for_serialization(await rbac.read_cluster_role(name))
    role = admin.sanitize_for_serialization(await rbac.read_namespaced_role(name, NAMESPACE))
    granted = permissions(cluster_role) | permissions(role)
    assert unneeded(granted, permissions_used(events)) == [], "granted to the controller, never needed"


async def restores_hand_edits(admin: client.ApiClient, daemon: str, image: str) -> None:
    """Change the daemon DaemonSet's image and drop a daemon template label; wait until both are back."""
    custom: Any = client.CustomObjectsApi(admin)
    await custom.patch_namespaced_custom_object(
        "apps",
        "v1",
        NAMESPACE,
        "daemonsets",
        daemon,
        [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "edited/by-hand:1"}],
        _content_type="application/json-patch+json",
    )
    target = names.TARGET_LABEL.replace("/", "~1")
    await custom.patch_namespaced_custom_object(
        RESOURCE_GROUP,
        "v1",
        NAMESPACE,
        "resourceclaimtemplates",
        daemon,
        [{"op": "remove", "path": f"/metadata/labels/{target}"}],
        _content_type="application/json-patch+json",
    )

    async def restored() -> bool:
        daemonset = await get(admin, "apps", "v1", "daemonsets", daemon, NAMESPACE)
        template = await get(admin, RESOURCE_GROUP, "v1", "resourceclaimtemplates", daemon, NAMESPACE)
        images = [c["image"] for c in daemonset["spec"]["template"]["spec"]["containers"]]
        return images == [image] and names.TARGET_LABEL in template["metadata"].get("labels", {})

    await eventually(restored, timeout=60, what="the hand-edited DaemonSet and template restored")


async def ready_again_after_a_daemon_hiccup(
    admin: client.ApiClient, name: str, namespace: str, uid: str
) -> None:
    """One IMEX daemon pod stops being Ready (KWOK leaves a running pod's conditions as written) until
    the domain is NotReady, then is Ready again; the controller's second DomainReady Event is counted on
    its first one."""
    core = client.CoreV1Api(admin)

    async def settled_daemon() -> str | None:
        # A hand edit just rolled the DaemonSet twice: take a pod of the finished rollout, not one the
        # DaemonSet controller is about to replace.
        daemonset = await get(admin, "apps", "v1", "daemonsets", names.daemon_name(uid), NAMESPACE)
        state = daemonset.get("status") or {}
        desired = state.get("desiredNumberScheduled")
        rolled = (
            state.get("observedGeneration") == daemonset["metadata"]["generation"]
            and desired
            and state.get("updatedNumberScheduled") == desired
            and state.get("numberReady") == desired
        )
        listing = await core.list_namespaced_pod(NAMESPACE, label_selector=f"{names.DOMAIN_LABEL}={uid}")
        live = [p.metadata.name for p in listing.items if not p.metadata.deletion_timestamp]
        return live[0] if rolled and len(live) == desired else None

    pod = await eventually(settled_daemon, timeout=60, what=f"the daemons of {name} rolled out")

    async def set_ready(status: str) -> None:
        # A strategic merge patch: the condition of that type changes, the others stay.
        patcher: Any = core
        await patcher.patch_namespaced_pod_status(
            pod,
            NAMESPACE,
            {"status": {"conditions": [{"type": "Ready", "status": status}]}},
            _content_type="application/strategic-merge-patch+json",
        )

    async def domain_status() -> str:
        body = await get(admin, names.GROUP, names.VERSION, names.DOMAIN_PLURAL, name, namespace)
        return str((body.get("status") or {}).get("status", ""))

    async def ready_events() -> list[Object]:
        listing = await core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.uid={uid},reason=DomainReady"
        )
        found: list[Object] = admin.sanitize_for_serialization(listing.items)
        return found

    async def not_ready() -> bool:
        return await domain_status() == "NotReady"

    async def ready_again() -> list[Object] | None:
        # At least twice: the DaemonSet controller may replace a pod of the hiccup, and each time
        # the domain is Ready again it says so once more.
        found = await ready_events()
        return found if await domain_status() == "Ready" and sum(e["count"] for e in found) >= 2 else None

    await set_ready("False")
    await eventually(not_ready, timeout=60, what=f"ComputeDomain {name} NotReady while a daemon is not")
    await set_ready("True")
    [event] = await eventually(ready_again, timeout=60, what=f"ComputeDomain {name} Ready again, said again")
    assert event["count"] >= 2


def release_fullname(release: list[Object]) -> str:
    """The chart's name prefix for this release (the controller Deployment is `<prefix>-controller`)."""
    return str(only(release, "Deployment")["metadata"]["name"]).removesuffix("-controller")


async def run_example(admin: client.ApiClient, tools: Tooling, image: str) -> None:
    """examples/01 from start to finish, its namespace deleted at the end; the IMEX daemons must run
    `image`."""
    namespace_doc = yaml.safe_load((EXAMPLE / "namespace.yaml").read_text())
    namespace = str(namespace_doc["metadata"]["name"])
    (await tools.kubectl("apply", "-f", str(EXAMPLE / "namespace.yaml"))).check()
    (await tools.kubectl("apply", "-f", str(EXAMPLE))).check()
    domain_doc = yaml.safe_load((EXAMPLE / "computedomain.yaml").read_text())
    name, want = domain_doc["metadata"]["name"], int(domain_doc["spec"]["numNodes"])
    template = domain_doc["spec"]["channel"]["resourceClaimTemplate"]["name"]

    async def domain() -> Object | None:
        try:
            return await get(admin, names.GROUP, names.VERSION, names.DOMAIN_PLURAL, name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    seen: list[Object] = [{}]

    async def ready() -> Object | None:
        body = await domain()
        status = seen[0] = (body or {}).get("status") or {}
        done = status.get("status") == "Ready" and status.get("readyNodes") == want
        return body if done and domain_condition(body or {}, "Ready").get("status") == "True" else None

    try:
        body = await eventually(ready, timeout=120, what=f"ComputeDomain {name} Ready with {want} nodes")
    except AssertionError as error:
        raise AssertionError(f"{error}; its status: {seen[0] or 'none'}") from None
    uid = body["metadata"]["uid"]
    assert body["status"]["cliqueCount"] == 1
    assert names.FINALIZER in body["metadata"]["finalizers"]
    # The children, where the controller puts them.
    daemon = names.daemon_name(uid)
    daemonset = await get(admin, "apps", "v1", "daemonsets", daemon, NAMESPACE)
    assert [c["image"] for c in daemonset["spec"]["template"]["spec"]["containers"]] == [image]
    await get(admin, RESOURCE_GROUP, "v1", "resourceclaimtemplates", daemon, NAMESPACE)
    workload = await get(admin, RESOURCE_GROUP, "v1", "resourceclaimtemplates", template, namespace)
    assert workload["metadata"]["labels"][names.DOMAIN_LABEL] == uid
    core = client.CoreV1Api(admin)
    labelled = await core.list_node(label_selector=f"{names.DOMAIN_LABEL}={uid}")
    assert len(labelled.items) == want

    # Someone edits the children by hand: the controller puts them back (its patch permissions).
    await restores_hand_edits(admin, daemon, image)
    # Ready again after a daemon's hiccup: said again on the first DomainReady Event (its patch on events).
    await ready_again_after_a_daemon_hiccup(admin, name, namespace, uid)

    # The training finishes: its pods complete, their claims go, the nodes leave the domain.
    pods = await core.list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={name}")
    assert len(pods.items) == want
    for pod in pods.items:
        await core.patch_namespaced_pod(
            pod.metadata.name, namespace, {"metadata": {"annotations": {COMPLETE_ANNOTATION: "true"}}}
        )

    async def nodes_left() -> bool:
        job = await client.BatchV1Api(admin).read_namespaced_job(name, namespace)
        if job.status.succeeded != want:
            return False
        claims = await client.CustomObjectsApi(admin).list_namespaced_custom_object(
            RESOURCE_GROUP, "v1", namespace, "resourceclaims"
        )
        members = await core.list_node(label_selector=f"{names.DOMAIN_LABEL}={uid}")
        return not claims["items"] and not members.items

    await eventually(nodes_left, timeout=90, what="Job succeeded, its claims gone, nodes out of the domain")

    await client.CustomObjectsApi(admin).delete_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.DOMAIN_PLURAL, name
    )

    async def leftovers() -> list[str]:
        left = ["the ComputeDomain"] if await domain() is not None else []
        custom = client.CustomObjectsApi(admin)
        selector = f"{names.DOMAIN_LABEL}={uid}"
        for group, version, plural in (
            ("apps", "v1", "daemonsets"),
            (RESOURCE_GROUP, "v1", "resourceclaimtemplates"),
            (names.GROUP, names.VERSION, names.CLIQUE_PLURAL),
        ):
            listing = await custom.list_cluster_custom_object(group, version, plural, label_selector=selector)
            left += [f"{plural}/{item['metadata']['name']}" for item in listing["items"]]
        left += [
            f"label on node {n.metadata.name}" for n in (await core.list_node(label_selector=selector)).items
        ]
        return left

    async def torn_down() -> bool:
        return not await leftovers()

    await eventually(torn_down, timeout=60, what=f"ComputeDomain {name} and all it had gone")
    await delete_namespace(admin, namespace)


async def test_upgrade_reaches_the_controller_deployment(
    admin: client.ApiClient, tools: Tooling, release: list[Object]
) -> None:
    before = await deployment(admin, release)
    assert env_of(before)["LOG_VERBOSITY_CD_DAEMON"] == "4"
    (
        await tools.helm(
            "upgrade",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--reuse-values",
            "--set",
            "daemon.logVerbosity=7",
            "--set",
            "image.tag=0.2.0",
        )
    ).check()
    status = json.loads((await tools.helm("status", RELEASE, "--namespace", NAMESPACE, "-o", "json")).check())
    assert status["version"] == 2

    after = await deployment(admin, release)
    env = env_of(after)
    assert env["LOG_VERBOSITY_CD_DAEMON"] == "7"
    # --reuse-values keeps what was set at install; the new tag reaches the daemons' image too.
    image = f"{IMAGE_REPOSITORY}:0.2.0"
    assert env["IMAGE_NAME"] == image
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert after["metadata"]["generation"] > before["metadata"]["generation"]

    # The Deployment rolls its (fake) replicas over to the new template.
    async def rolled_out() -> bool:
        body = await deployment(admin, release)
        state = body.get("status") or {}
        return (
            state.get("observedGeneration") == body["metadata"]["generation"]
            and state.get("updatedReplicas") == 2
            and state.get("availableReplicas") == 2
            and state.get("replicas") == 2
        )

    await eventually(rolled_out, timeout=90, what="controller Deployment rolled out")


async def test_uninstall_removes_everything_but_the_crds(
    admin: client.ApiClient, tools: Tooling, release: list[Object]
) -> None:
    installed = await tools.manifest(RELEASE, NAMESPACE)
    assert {m["kind"] for m in installed} == CHART_KINDS
    (await tools.helm("uninstall", RELEASE, "--namespace", NAMESPACE)).check()

    listing = yaml.safe_dump_all(installed)

    async def all_gone() -> bool:
        found = await tools.kubectl("get", "-f", "-", "--ignore-not-found", "-o", "name", stdin=listing)
        return found.check().strip() == ""

    await eventually(all_gone, timeout=90, what="every object of the release deleted")
    assert (await tools.helm("status", RELEASE, "--namespace", NAMESPACE)).returncode != 0

    # Helm never deletes what a chart ships in crds/: deleting a CRD would delete every ComputeDomain.
    extensions = client.ApiextensionsV1Api(admin)
    for crd in CRDS:
        assert (await extensions.read_custom_resource_definition(crd)).metadata.deletion_timestamp is None
