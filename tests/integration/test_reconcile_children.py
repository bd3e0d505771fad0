"""The reconcile of one ComputeDomain against the real API server: the children it creates, the writes it
does not make once settled, drift it repairs, names it never takes over, and what deletion leaves."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client

from cdtestbed.controller_process import ControllerProcess
from computedomain.api import names
from computedomain.controller.render.daemonset import STATE_PROBE
from conftest import DAEMON_IMAGE
from support.domains import Cluster, Object, condition, domain_manifest, unique
from support.examples import delete_namespace
from support.observe import RECONCILES, WRITES, quiet
from support.waiting import eventually

pytestmark = pytest.mark.cluster

# Nodes this file's workloads use; other files' tests never run at the same time.
NODES = ["gb200-r0-n10", "gb200-r0-n11"]


@pytest.fixture
def cd(api: client.ApiClient, operator_ready: str, controller: ControllerProcess) -> Cluster:
    return Cluster(api, operator_ready)


def env_names(daemonset: Object) -> list[str]:
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    return [e["name"] for e in container["env"]]


async def test_a_new_domain_gets_finalizer_children_and_status(cd: Cluster, namespace: str) -> None:
    name = unique("cd")
    created = await cd.create_domain(domain_manifest(name, namespace, num_nodes=2, allocationMode="All"))
    uid = created["metadata"]["uid"]
    body = await cd.wait_reconciled(namespace, name)

    assert body["metadata"]["finalizers"] == [names.FINALIZER]
    status = body["status"]
    assert status["status"] == "NotReady"
    assert status["observedGeneration"] == body["metadata"]["generation"]
    assert status["nodeSummary"] == "0/2"
    ready, children = condition(body, "Ready"), condition(body, "ChildrenReady")
    assert (ready["status"], ready["reason"]) == ("False", "WaitingForNodes")
    assert ready["message"] == "0 of 2 nodes joined; waiting for 2 more"
    assert (children["status"], children["reason"]) == ("True", "ChildrenApplied")
    assert ready["observedGeneration"] == children["observedGeneration"] == body["metadata"]["generation"]

    # The workload's channel template: in the domain's namespace, owned by the domain.
    workload = await cd.claim_template(namespace, f"{name}-channel")
    assert workload is not None
    assert workload["metadata"]["labels"] == {
        names.DOMAIN_LABEL: uid,
        names.TARGET_LABEL: names.TARGET_WORKLOAD,
    }
    (owner,) = workload["metadata"]["ownerReferences"]
    assert (owner["apiVersion"], owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        names.API_VERSION,
        names.DOMAIN_KIND,
        name,
        uid,
        True,
    )
    assert workload["spec"]["metadata"]["labels"] == {names.DOMAIN_LABEL: uid}
    devices = workload["spec"]["spec"]["devices"]
    (request,) = devices["requests"]
    assert request["name"] == names.CHANNEL_REQUEST
    assert request["exactly"]["deviceClassName"] == names.CHANNEL_DEVICE_CLASS
    (config,) = devices["config"]
    assert config["requests"] == [names.CHANNEL_REQUEST]
    assert config["opaque"] == {
        "driver": names.DRIVER,
        "parameters": {
            "apiVersion": names.API_VERSION,
            "kind": names.CHANNEL_CONFIG_KIND,
            "domainID": uid,
            "allocationMode": "All",
        },
    }

    # The daemons' template, next to the DaemonSet in the operator's namespace.
    daemon = await cd.claim_template(cd.operator_namespace, names.daemon_name(uid))
    assert daemon is not None
    assert daemon["metadata"]["labels"] == {names.DOMAIN_LABEL: uid, names.TARGET_LABEL: names.TARGET_DAEMON}
    devices = daemon["spec"]["spec"]["devices"]
    assert devices["requests"][0]["exactly"]["deviceClassName"] == names.DAEMON_DEVICE_CLASS
    assert devices["config"][0]["opaque"]["parameters"] == {
        "apiVersion": names.API_VERSION,
        "kind": names.DAEMON_CONFIG_KIND,
        "domainID": uid,
    }

    # The DaemonSet: labelled and node-selected by the domain label; the pod template of the reference.
    ds = await cd.daemonset(uid)
    assert ds is not None
    assert ds["metadata"]["labels"] == {names.DOMAIN_LABEL: uid}
    assert ds["spec"]["selector"] == {"matchLabels": {names.DOMAIN_LABEL: uid}}
    pod = ds["spec"]["template"]
    assert pod["metadata"]["labels"] == {names.DOMAIN_LABEL: uid}
    spec = pod["spec"]
    assert spec["nodeSelector"] == {names.DOMAIN_LABEL: uid}
    assert spec["serviceAccountName"] == names.DAEMON_SERVICE_ACCOUNT
    assert [(t["operator"], t["effect"]) for t in spec["tolerations"]] == [
        ("Exists", "NoSchedule"),
        ("Exists", "NoExecute"),
        ("Exists", "PreferNoSchedule"),
    ]
    assert spec["resourceClaims"] == [
        {"name": names.DAEMON_CLAIM, "resourceClaimTemplateName": names.daemon_name(uid)}
    ]
    (container,) = spec["containers"]
    assert container["name"] == names.DAEMON_CONTAINER
    assert container["image"] == DAEMON_IMAGE
    assert container["command"] == ["compute-domain-daemon", "-v", "$(LOG_VERBOSITY)", "run"]
    assert container["resources"]["claims"] == [{"name": names.DAEMON_CLAIM}]
    # Start and readiness read the daemon's state file in the shell (no interpreter per probe);
    # liveness asks IMEX itself.
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["exec"]["command"] == STATE_PROBE
    assert container["livenessProbe"]["exec"]["command"][-1] == "check"
    env = {e["name"]: e for e in container["env"]}
    for variable in (
        "LOG_VERBOSITY",
        "MAX_NODES_PER_IMEX_DOMAIN",
        "NODE_NAME",
        "POD_IP",
        "POD_UID",
        "POD_NAME",
        "POD_NAMESPACE",
        "NVIDIA_VISIBLE_DEVICES",
        "FEATURE_GATES",
    ):
        assert variable in env, variable
    assert env["MAX_NODES_PER_IMEX_DOMAIN"]["value"] == str(names.DEFAULT_MAX_NODES_PER_CLIQUE)
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "void"
    # No node carries the label yet, so no daemon runs.
    assert await cd.daemon_pods(uid) == []

    await cd.delete_domain(namespace, name)
    await cd.wait_nothing_left(uid)


async def no_domain_going(cd: Cluster) -> bool:
    """No ComputeDomain is being deleted, by itself or with its namespace."""
    namespaces = await cd.core.list_namespace()
    terminating = {ns.metadata.name for ns in namespaces.items if ns.status.phase == "Terminating"}
    domains = await cd.custom.list_cluster_custom_object(names.GROUP, names.VERSION, names.DOMAIN_PLURAL)
    return not any(
        d["metadata"].get("deletionTimestamp") or d["metadata"]["namespace"] in terminating
        for d in domains["items"]
    )


async def settled_writes(controller: ControllerProcess, cd: Cluster, namespace: str, name: str) -> float:
    """Writes the controller makes when a domain that is settled is reconciled once more."""
    # The count is the controller's, over all domains: the clean-up of a domain an earlier test left
    # in a namespace still being deleted would land in it.
    await eventually(lambda: no_domain_going(cd), timeout=120, what="earlier tests' domains to be gone")
    await quiet(controller)
    writes, reconciles = controller.metric(WRITES), controller.metric(RECONCILES)
    # An annotation changes nothing the controller renders, but its watch event starts a reconcile.
    await cd.patch_domain(namespace, name, {"metadata": {"annotations": {"test/poke": unique("x")}}})

    async def reconciled() -> bool:
        return controller.metric(RECONCILES) > reconciles

    await eventually(reconciled, timeout=30, what="a reconcile after the annotation")
    await quiet(controller)
    return controller.metric(WRITES) - writes


async def test_a_settled_domain_is_reconciled_without_writes(
    cd: Cluster, controller: ControllerProcess, namespace: str
) -> None:
    name = unique("cd")
    uid = (await cd.create_domain(domain_manifest(name, namespace, num_nodes=2)))["metadata"]["uid"]
    await cd.wait_reconciled(namespace, name)
    assert await settled_writes(controller, cd, namespace, name) == 0

    # With members: labels, daemon pods, a clique object and per-node status all in place.
    pods = await cd.start_workload(namespace, f"{name}-channel", NODES)
    await cd.wait_nodes(namespace, name, NODES)
    assert await settled_writes(controller, cd, namespace, name) == 0

    # Idle again after the workload: status.nodes is now absent on the server.
    await cd.stop_workload(namespace, pods)
    await cd.wait_nodes(namespace, name, [])
    assert await settled_writes(controller, cd, namespace, name) == 0

    await cd.delete_domain(namespace, name)
    await cd.wait_nothing_left(uid)


async def test_deleted_children_are_recreated(cd: Cluster, namespace: str) -> None:
    name = unique("cd")
    uid = (await cd.create_domain(domain_manifest(name, namespace)))["metadata"]["uid"]
    await cd.wait_reconciled(namespace, name)
    ds = await cd.daemonset(uid)
    daemon = await cd.claim_template(cd.operator_namespace, names.daemon_name(uid))
    workload = await cd.claim_template(namespace, f"{name}-channel")
    assert ds is not None
    assert daemon is not None
    assert workload is not None

    await cd.apps.delete_namespaced_daemon_set(names.daemon_name(uid), cd.operator_namespace)
    await cd.custom.delete_namespaced_custom_object(
        "resource.k8s.io", "v1", cd.operator_namespace, "resourceclaimtemplates", names.daemon_name(uid)
    )
    await cd.custom.delete_namespaced_custom_object(
        "resource.k8s.io", "v1", namespace, "resourceclaimtemplates", f"{name}-channel"
    )

    async def recreated() -> bool:
        new_ds = await cd.daemonset(uid)
        new_daemon = await cd.claim_template(cd.operator_namespace, names.daemon_name(uid))
        new_workload = await cd.claim_template(namespace, f"{name}-channel")
        return (
            new_ds is not None
            and new_daemon is not None
            and new_workload is not None
            and new_ds["metadata"]["uid"] != ds["metadata"]["uid"]
            and new_daemon["metadata"]["uid"] != daemon["metadata"]["uid"]
            and new_workload["metadata"]["uid"] != workload["metadata"]["uid"]
        )

    await eventually(recreated, timeout=60, what="DaemonSet and both templates recreated")
    new_workload = await cd.claim_template(namespace, f"{name}-channel")
    assert new_workload is not None
    assert new_workload["spec"] == workload["spec"]

    await cd.delete_domain(namespace, name)
    await cd.wait_nothing_left(uid)


async def edit_daemonset(cd: Cluster, uid: str, *operations: dict[str, Any]) -> None:
    """What `kubectl edit` would do to the domain's DaemonSet, as a JSON patch."""
    custom: Any = cd.custom  # `_content_type` is a keyword the client takes but does not declare
    await custom.patch_namespaced_custom_object(
        "apps",
        "v1",
        cd.operator_namespace,
        "daemonsets",
        names.daemon_name(uid),
        list(operations),
        _content_type="application/json-patch+json",
    )


async def test_a_hand_edited_daemonset_is_restored(cd: Cluster, namespace: str) -> None:
    name = unique("cd")
    uid = (await cd.create_domain(domain_manifest(name, namespace)))["metadata"]["uid"]
    await cd.wait_reconciled(namespace, name)
    original = await cd.daemonset(uid)
    assert original is not None
    container = original["spec"]["template"]["spec"]["containers"][0]
    edited_env = [e for e in container["env"] if e["name"] != "FEATURE_GATES"]
    # What `kubectl edit` would do: change the image, drop an env var.
    await edit_daemonset(
        cd,
        uid,
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "evil/image:1"},
        {"op": "replace", "path": "/spec/template/spec/containers/0/env", "value": edited_env},
    )

    async def restored() -> bool:
        ds = await cd.daemonset(uid)
        assert ds is not None
        live = ds["spec"]["template"]["spec"]["containers"][0]
        return live["image"] == container["image"] and env_names(ds) == env_names(original)

    await eventually(restored, timeout=60, what="the DaemonSet's image and env restored")

    await cd.delete_domain(namespace, name)
    await cd.wait_nothing_left(uid)


async def test_a_field_added_by_hand_to_the_daemonset_is_removed(cd: Cluster, namespace: str) -> None:
    name = unique("cd")
    uid = (await cd.create_domain(domain_manifest(name, namespace)))["metadata"]["uid"]
    await cd.wait_reconciled(namespace, name)
    original = await cd.daemonset(uid)
    assert original is not None
    extra = {"name": "ADDED_BY_HAND", "value": "1"}
    # Server-side apply alone would keep a field another manager added; the controller must not.
    await edit_daemonset(
        cd, uid, {"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": extra}
    )

    async def restored() -> bool:
        ds = await cd.daemonset(uid)
        assert ds is not None
        return env_names(ds) == env_names(original)

    await eventually(restored, timeout=60, what="the hand-added env var removed")

    await cd.delete_domain(namespace, name)
    await cd.wait_nothing_left(uid)


async def test_a_foreign_template_of_the_same_name_is_never_touched(cd: Cluster, namespace: str) -> None:
    template = unique("taken")
    foreign = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": template, "labels": {"owner": "someone-else"}},
        "spec": {"spec": {"devices": {"requests": [{"name": "x", "exactly": {"deviceClassName": "other"}}]}}},
    }
    before = await cd.custom.create_namespaced_custom_object(
        "resource.k8s.io", "v1", namespace, "resourceclaimtemplates", foreign
    )
    name = unique("cd")
    uid = (await cd.create_domain(domain_manifest(name, namespace, template=template)))["metadata"]["uid"]

    def conflicted(body: Object) -> bool:
        return condition(body).get("reason") == "NameConflict"

    body = await cd.wait_domain(namespace, name, conflicted, "Ready reason NameConflict")
    ready, children = condition(body, "Ready"), condition(body, "ChildrenReady")
    assert ready["status"] == "False"
    assert (children["status"], children["reason"]) == ("False", "NameConflict")
    assert f"ResourceClaimTemplate {namespace}/{template}" in ready["message"]
    assert "already exists" in ready["message"]
    event = await cd.wait_event(namespace, name, "NameConflict")
    assert template in event["message"]
    assert "left untouched" in event["message"]

    after = await cd.claim_template(namespace, template)
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

    # Deleting the domain leaves the other owner's template in place.
    await cd.delete_domain(namespace, name)
    await cd.wait_nothing_left(uid)
    kept = await cd.claim_template(namespace, template)
    assert kept is not None
    assert kept["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


async def test_the_second_domain_naming_the_same_template_reports_a_conflict(
    cd: Cluster, namespace: str
) -> None:
    template = unique("shared")
    first, second = unique("first"), unique("second")
    first_uid = (await cd.create_domain(domain_manifest(first, namespace, template=template)))["metadata"][
        "uid"
    ]
    await cd.wait_reconciled(namespace, first)
    second_uid = (await cd.create_domain(domain_manifest(second, namespace, template=template)))["metadata"][
        "uid"
    ]

    def conflicted(body: Object) -> bool:
        return condition(body).get("reason") == "NameConflict"

    body = await cd.wait_domain(namespace, second, conflicted, "Ready reason NameConflict")
    assert first_uid in condition(body)["message"]
    await cd.wait_event(namespace, second, "NameConflict")
    first_body = await cd.domain(namespace, first)
    assert condition(first_body, "ChildrenReady")["status"] == "True"
    owned = await cd.claim_template(namespace, template)
    assert owned is not None
    assert owned["metadata"]["labels"][names.DOMAIN_LABEL] == first_uid

    # The loser's deletion leaves the winner's template alone.
    await cd.delete_domain(namespace, second)
    await cd.wait_nothing_left(second_uid)
    kept = await cd.claim_template(namespace, template)
    assert kept is not None
    assert kept["metadata"]["uid"] == owned["metadata"]["uid"]

    await cd.delete_domain(namespace, first)
    await cd.wait_nothing_left(first_uid)


async def test_deletion_removes_everything_before_the_finalizer(cd: Cluster, namespace: str) -> None:
    name = unique("cd")
    uid = (await cd.create_domain(domain_manifest(name, namespace)))["metadata"]["uid"]
    await cd.wait_reconciled(namespace, name)
    pods = await cd.start_workload(namespace, f"{name}-channel", NODES)
    await cd.wait_nodes(namespace, name, NODES)
    assert await cd.labelled_nodes(uid) == NODES
    assert list(await cd.cliques(uid)) != []

    await cd.custom.delete_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.DOMAIN_PLURAL, name
    )

    async def gone() -> bool:
        return await cd.domain(namespace, name) is None

    await eventually(gone, timeout=60, what="the domain gone")
    # The finalizer is the last thing removed: once the domain is gone, nothing of it is left.
    assert await cd.leftovers(uid) == []

    await cd.stop_workload(namespace, pods)


async def test_deleting_the_namespace_takes_the_domain_without_errors(
    cd: Cluster, controller: ControllerProcess, namespace: str
) -> None:
    name = unique("cd")
    uid = (await cd.create_domain(domain_manifest(name, namespace)))["metadata"]["uid"]
    await cd.wait_reconciled(namespace, name)
    await cd.start_workload(namespace, f"{name}-channel", NODES)
    await cd.wait_nodes(namespace, name, NODES)
    errors = controller.metric("computedomain_reconcile_errors_total")

    # The namespace controller deletes the templates, pods and the domain in no particular order; the
    # domain must not try to recreate its template in a namespace that refuses new objects.
    await delete_namespace(cd.api, namespace)
    await cd.wait_nothing_left(uid)
    assert controller.metric("computedomain_reconcile_errors_total") == errors


async def test_domains_deleted_right_after_creation_leave_nothing_behind(cd: Cluster, namespace: str) -> None:
    # Deleted before the controller's finalizer is on them: the reconcile already under way must
    # not re-create them nor leave their children for the periodic sweep.
    uids = []
    for _ in range(8):
        created = await cd.create_domain(domain_manifest(unique("gone"), namespace))
        uids.append(created["metadata"]["uid"])
        await cd.delete_domain(namespace, created["metadata"]["name"])
    for uid in uids:
        await cd.wait_nothing_left(uid, timeout=30)
