"""Flows that need the controller with its own settings, or stopped and restarted: they run on a private
control plane with one fake NVL72 rack and one node without NVLink, and start their own controller."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio

from cdtestbed.cluster import LocalCluster
from cdtestbed.controller_process import ControllerProcess
from cdtestbed.install import prepare_operator
from cdtestbed.nodes import add_ready_nodes
from cdtestbed.topology import nvl72_racks, plain_gpu_nodes, rack_clique_id
from computedomain.api import names
from computedomain.api.models import ComputeDomain
from computedomain.controller.render.daemonset import daemonset
from computedomain.controller.settings import Settings
from conftest import controller_env
from support.domains import FOREIGN_UID, Cluster, Object, condition, domain_manifest, unique
from support.observe import RECONCILES, WRITES, StatusChanges, quiet
from support.testbed import ControlPlane, private_control_plane
from support.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

OPERATOR_NAMESPACE = "computedomain-system"
RACK = nvl72_racks(1, prefix="mini")
PLAIN = plain_gpu_nodes(1)
CLIQUE = rack_clique_id(0)


def node(slot: int) -> str:
    return RACK[slot].name


plane = private_control_plane("cluster-domain-")


@pytest_asyncio.fixture(scope="module")
async def prepared(plane: ControlPlane) -> ControlPlane:
    """The private control plane with its fake nodes Ready and the operator's prerequisites in place."""
    await add_ready_nodes(plane.api, RACK + PLAIN)
    await prepare_operator(plane.api, OPERATOR_NAMESPACE, [n.name for n in RACK + PLAIN])
    return plane


class Controllers:
    """Starts this module's controller processes with chosen settings; stops them after each test."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.running: list[ControllerProcess] = []

    def start(self, **settings: str) -> ControllerProcess:
        process = ControllerProcess(
            self.cluster.kubeconfig,
            Path(self.cluster.logs) / "controller.log",
            controller_env(OPERATOR_NAMESPACE, **settings),
        )
        process.start()
        self.running.append(process)
        return process

    def stop(self, process: ControllerProcess) -> None:
        # Killed, not asked to stop: the controller must cope with a crash, and it is quicker.
        process.stop(signal.SIGKILL)
        self.running.remove(process)


@pytest.fixture
def controllers(prepared: ControlPlane) -> Iterator[Controllers]:
    started = Controllers(prepared.cluster)
    yield started
    for process in list(started.running):
        started.stop(process)


@pytest_asyncio.fixture
async def cd(prepared: ControlPlane) -> Cluster:
    return Cluster(prepared.api, OPERATOR_NAMESPACE)


@pytest_asyncio.fixture
async def namespace(cd: Cluster) -> AsyncIterator[str]:
    name = await cd.create_namespace(unique("t"))
    yield name
    await cd.core.delete_namespace(name)


def reason(wanted: str) -> Callable[[Object], bool]:
    def check(body: Object) -> bool:
        return condition(body).get("reason") == wanted

    return check


async def test_a_node_beyond_the_clique_limit_gets_no_slot_until_one_frees_up(
    cd: Cluster, controllers: Controllers, namespace: str
) -> None:
    controllers.start(MAX_NODES_PER_IMEX_DOMAIN="2")
    name = unique("cd")
    uid = (await cd.create_domain(domain_manifest(name, namespace)))["metadata"]["uid"]
    await cd.wait_reconciled(namespace, name)
    ds = await cd.daemonset(uid)
    assert ds is not None
    env = {e["name"]: e.get("value") for e in ds["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MAX_NODES_PER_IMEX_DOMAIN"] == "2"

    nodes = [node(0), node(1), node(2)]
    pods = dict(zip(nodes, await cd.start_workload(namespace, f"{name}-channel", nodes), strict=True))
    body = await cd.wait_domain(namespace, name, reason("CliqueFull"), "Ready reason CliqueFull")
    # Every node runs a daemon, but only two hold a slot; the third is named in the condition.
    await eventually(lambda: _daemons_on(cd, uid, nodes), timeout=60, what="daemons on all three nodes")
    (slots,) = (await cd.cliques(uid)).values()
    assert sorted(index for _, index in slots) == [0, 1]
    (waiting,) = set(nodes) - {n for n, _ in slots}
    ready = condition(body)
    assert ready["status"] == "False"
    assert ready["message"].endswith(f"already has 2 daemons of this domain: {waiting}")
    assert waiting not in [e["name"] for e in body["status"]["nodes"]]
    event = await cd.wait_event(namespace, name, "CliqueFull")
    assert waiting in event["message"]

    # A node leaving frees its slot, and the waiting node takes it.
    leaving = next(n for n, index in slots if index == 0)
    await cd.stop_workload(namespace, [pods.pop(leaving)])
    staying = sorted(set(nodes) - {leaving})
    body = await cd.wait_nodes(namespace, name, staying)
    assert dict(next(iter((await cd.cliques(uid)).values()))) == {
        waiting: 0,
        next(n for n, index in slots if index == 1): 1,
    }
    assert condition(body)["reason"] == "DomainReady"

    await cd.stop_workload(namespace, pods.values())
    await cd.delete_domain(namespace, name)
    await cd.wait_nothing_left(uid)


async def _daemons_on(cd: Cluster, uid: str, nodes: list[str]) -> bool:
    return await cd.daemon_nodes(uid) == sorted(nodes)


async def test_a_node_labelled_for_another_domain_is_reported_and_never_relabelled(
    cd: Cluster, controllers: Controllers, namespace: str
) -> None:
    controllers.start()
    taken, free = node(3), node(4)
    await cd.core.patch_node(taken, {"metadata": {"labels": {names.DOMAIN_LABEL: FOREIGN_UID}}})
    try:
        name = unique("cd")
        uid = (await cd.create_domain(domain_manifest(name, namespace)))["metadata"]["uid"]
        pods = await cd.start_workload(namespace, f"{name}-channel", [taken, free])
        body = await cd.wait_domain(namespace, name, reason("LabelConflict"), "Ready reason LabelConflict")
        message = condition(body)["message"]
        assert f"{taken} (ComputeDomain UID {FOREIGN_UID})" in message
        event = await cd.wait_event(namespace, name, "LabelConflict")
        assert taken in event["message"]
        # The free node joined as usual; the taken one kept its label and got no daemon of ours.
        await cd.wait_domain(
            namespace,
            name,
            lambda b: [e["name"] for e in (b.get("status") or {}).get("nodes") or []] == [free],
            "the free node joined",
        )
        assert await cd.node_label(taken) == FOREIGN_UID
        assert await cd.labelled_nodes(uid) == [free]
        assert await cd.daemon_nodes(uid) == [free]

        await cd.stop_workload(namespace, pods)
        await cd.delete_domain(namespace, name)
        await cd.wait_nothing_left(uid)
        assert await cd.node_label(taken) == FOREIGN_UID
    finally:
        await cd.core.patch_node(taken, {"metadata": {"labels": {names.DOMAIN_LABEL: None}}})


async def test_a_new_daemon_image_rolls_out_to_existing_domains(
    cd: Cluster, controllers: Controllers, namespace: str
) -> None:
    first = controllers.start(IMAGE_NAME="registry.example/computedomain-operator:1.0.0")
    name = unique("cd")
    uid = (await cd.create_domain(domain_manifest(name, namespace)))["metadata"]["uid"]
    pods = await cd.start_workload(namespace, f"{name}-channel", [node(5)])
    await cd.wait_nodes(namespace, name, [node(5)])
    assert await _images(cd, uid) == ["registry.example/computedomain-operator:1.0.0"]

    controllers.stop(first)
    controllers.start(IMAGE_NAME="registry.example/computedomain-operator:1.1.0")

    async def rolled_out() -> bool:
        ds = await cd.daemonset(uid)
        assert ds is not None
        image = ds["spec"]["template"]["spec"]["containers"][0]["image"]
        return image == "registry.example/computedomain-operator:1.1.0" and await _images(cd, uid) == [
            "registry.example/computedomain-operator:1.1.0"
        ]

    await eventually(rolled_out, timeout=90, what="the new image in the DaemonSet and its pod")
    await cd.wait_nodes(namespace, name, [node(5)])

    await cd.stop_workload(namespace, pods)
    await cd.delete_domain(namespace, name)
    await cd.wait_nothing_left(uid)


async def test_a_setting_turned_off_leaves_the_live_daemonsets(
    cd: Cluster, controllers: Controllers, namespace: str
) -> None:
    first = controllers.start(DAEMON_PRIORITY_CLASS="system-node-critical")
    name = unique("cd")
    uid = (await cd.create_domain(domain_manifest(name, namespace)))["metadata"]["uid"]
    await cd.wait_reconciled(namespace, name)
    ds = await cd.daemonset(uid)
    assert ds is not None
    assert ds["spec"]["template"]["spec"]["priorityClassName"] == "system-node-critical"

    # Rendered no more, so gone from the live object, not just left alone.
    controllers.stop(first)
    second = controllers.start()

    async def dropped() -> bool:
        live = await cd.daemonset(uid)
        return live is not None and "priorityClassName" not in live["spec"]["template"]["spec"]

    await eventually(dropped, timeout=30, what="priorityClassName removed from the DaemonSet")
    # And once removed, nothing is left to write.
    controllers.stop(second)
    third = controllers.start()
    await eventually(lambda: _at_least(third, RECONCILES, 1), timeout=30, what="the domain reconciled")
    await quiet(third)
    assert third.metric(WRITES) == 0

    await cd.delete_domain(namespace, name)
    await cd.wait_nothing_left(uid)


async def test_a_daemonset_an_earlier_version_created_by_post_loses_a_dropped_field(
    cd: Cluster, controllers: Controllers, namespace: str
) -> None:
    # As an earlier version left it: the DaemonSet created by a plain POST under our field manager.
    name = unique("cd")
    domain = ComputeDomain.model_validate(await cd.create_domain(domain_manifest(name, namespace)))
    earlier = Settings.from_env(
        controller_env(OPERATOR_NAMESPACE, DAEMON_PRIORITY_CLASS="system-node-critical")
    )
    await cd.apps.create_namespaced_daemon_set(
        OPERATOR_NAMESPACE, cast(Any, daemonset(domain, earlier)), field_manager=names.FIELD_MANAGER
    )

    process = controllers.start()

    async def dropped() -> bool:
        live = await cd.daemonset(domain.uid)
        return live is not None and "priorityClassName" not in live["spec"]["template"]["spec"]

    await eventually(dropped, timeout=30, what="priorityClassName removed from the DaemonSet")
    await cd.wait_reconciled(namespace, name)
    controllers.stop(process)
    again = controllers.start()
    await eventually(lambda: _at_least(again, RECONCILES, 1), timeout=30, what="the domain reconciled")
    await quiet(again)
    assert again.metric(WRITES) == 0

    await cd.delete_domain(namespace, name)
    await cd.wait_nothing_left(domain.uid)


async def _images(cd: Cluster, uid: str) -> list[str]:
    return sorted(p["spec"]["containers"][0]["image"] for p in await cd.daemon_pods(uid))


async def test_a_domain_deleted_while_the_controller_is_down_goes_once_it_is_back(
    cd: Cluster, controllers: Controllers, namespace: str
) -> None:
    running = controllers.start()
    name = unique("cd")
    uid = (await cd.create_domain(domain_manifest(name, namespace)))["metadata"]["uid"]
    pods = await cd.start_workload(namespace, f"{name}-channel", [node(6), node(7)])
    await cd.wait_nodes(namespace, name, [node(6), node(7)])

    controllers.stop(running)
    await cd.custom.delete_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.DOMAIN_PLURAL, name
    )
    body = await cd.domain(namespace, name)
    assert body is not None
    assert body["metadata"].get("deletionTimestamp")
    assert body["metadata"]["finalizers"] == [names.FINALIZER]
    assert await cd.labelled_nodes(uid) == [node(6), node(7)]

    controllers.start()

    async def gone() -> bool:
        return await cd.domain(namespace, name) is None

    await eventually(gone, timeout=60, what="the domain finalized after the restart")
    assert await cd.leftovers(uid) == []
    await cd.stop_workload(namespace, pods)


async def test_the_periodic_sweep_removes_what_a_vanished_domain_left(
    cd: Cluster, controllers: Controllers, namespace: str
) -> None:
    controllers.start(SWEEP_INTERVAL_SECONDS="1")
    # A live domain with a member: the sweep must leave it alone.
    name = unique("live")
    uid = (await cd.create_domain(domain_manifest(name, namespace)))["metadata"]["uid"]
    pods = await cd.start_workload(namespace, f"{name}-channel", [node(8)])
    await cd.wait_nodes(namespace, name, [node(8)])
    live_before = await cd.leftovers(uid)

    # What a domain whose finalizer was removed by hand would leave behind (created after the
    # controller's first sweep, so only a later one can find them).
    label = {names.DOMAIN_LABEL: FOREIGN_UID}
    await cd.apps.create_namespaced_daemon_set(OPERATOR_NAMESPACE, cast(Any, _orphan_daemonset(label)))
    for template_namespace in (OPERATOR_NAMESPACE, namespace):
        await cd.custom.create_namespaced_custom_object(
            "resource.k8s.io", "v1", template_namespace, "resourceclaimtemplates", _orphan_template(label)
        )
    await cd.custom.create_namespaced_custom_object(
        names.GROUP, names.VERSION, OPERATOR_NAMESPACE, names.CLIQUE_PLURAL, _orphan_clique(label)
    )
    await cd.core.patch_node(node(9), {"metadata": {"labels": label}})
    assert len(await cd.leftovers(FOREIGN_UID)) == 5

    await cd.wait_nothing_left(FOREIGN_UID, timeout=30)
    assert await cd.leftovers(uid) == live_before
    assert await cd.labelled_nodes(uid) == [node(8)]

    await cd.stop_workload(namespace, pods)
    await cd.delete_domain(namespace, name)
    await cd.wait_nothing_left(uid)


def _orphan_daemonset(labels: dict[str, str]) -> Object:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": names.daemon_name(FOREIGN_UID), "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": labels,
                    "containers": [{"name": "c", "image": "registry.example/x:1"}],
                },
            },
        },
    }


def _orphan_template(labels: dict[str, str]) -> Object:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": names.daemon_name(FOREIGN_UID), "labels": labels},
        "spec": {"spec": {"devices": {"requests": [{"name": "d", "exactly": {"deviceClassName": "x"}}]}}},
    }


def _orphan_clique(labels: dict[str, str]) -> Object:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.CLIQUE_KIND,
        "metadata": {
            "name": names.clique_name(FOREIGN_UID, CLIQUE),
            "labels": {**labels, names.CLIQUE_LABEL: CLIQUE},
        },
        "daemons": [{"nodeName": node(9), "ipAddress": "10.0.0.9", "cliqueID": CLIQUE, "index": 0}],
    }


async def test_a_whole_rack_joining_at_once_costs_few_status_writes(
    cd: Cluster, controllers: Controllers, namespace: str
) -> None:
    # Status changes of one domain are gathered for a second before they are written.
    controllers.start(STATUS_BATCH_SECONDS="1")
    name = unique("cd")
    nodes = [n.name for n in RACK]
    uid = (await cd.create_domain(domain_manifest(name, namespace, num_nodes=18)))["metadata"]["uid"]
    await cd.wait_reconciled(namespace, name)
    changes = StatusChanges(cd, namespace, name)
    await changes.start()
    pods = await cd.start_workload(namespace, f"{name}-channel", nodes)
    body = await cd.wait_nodes(namespace, name, nodes)
    writes = await changes.stop()

    assert body["status"]["status"] == "Ready"
    assert body["status"]["nodeSummary"] == "18/18"
    # Newcomers take slots in the order they join; every slot of the rack is taken once.
    (daemons,) = (await cd.cliques(uid)).values()
    assert sorted(n for n, _ in daemons) == nodes
    assert [index for _, index in daemons] == list(range(18))
    assert writes < 8, f"{writes} status writes for 18 joining nodes: {changes.history}"

    await cd.stop_workload(namespace, pods)
    await cd.delete_domain(namespace, name)
    await cd.wait_nothing_left(uid)


async def test_a_restarted_controller_finds_nothing_to_write(
    cd: Cluster, controllers: Controllers, namespace: str
) -> None:
    first = controllers.start()
    ready, conflicted = unique("ready"), unique("conflicted")
    ready_uid = (await cd.create_domain(domain_manifest(ready, namespace)))["metadata"]["uid"]
    pods = await cd.start_workload(namespace, f"{ready}-channel", [node(10), node(11)])
    await cd.wait_nodes(namespace, ready, [node(10), node(11)])
    await cd.wait_event(namespace, ready, "DomainReady", kind="Normal")
    taken = domain_manifest(conflicted, namespace, template=f"{ready}-channel")
    conflicted_uid = (await cd.create_domain(taken))["metadata"]["uid"]
    await cd.wait_domain(namespace, conflicted, reason("NameConflict"), "Ready reason NameConflict")
    await cd.wait_event(namespace, conflicted, "NameConflict")
    events = len(await cd.events(namespace, ready)) + len(await cd.events(namespace, conflicted))

    controllers.stop(first)
    second = controllers.start()
    reconciles = await eventually(
        lambda: _at_least(second, RECONCILES, 2), timeout=30, what="both domains reconciled after the restart"
    )
    await quiet(second)
    written = [line for line in second.get("/metrics")[1].splitlines() if line.startswith(WRITES)]
    assert second.metric(WRITES) == 0, f"{written} after {reconciles} reconciles"
    assert len(await cd.events(namespace, ready)) + len(await cd.events(namespace, conflicted)) == events

    await cd.stop_workload(namespace, pods)
    for name, uid in ((conflicted, conflicted_uid), (ready, ready_uid)):
        await cd.delete_domain(namespace, name)
        await cd.wait_nothing_left(uid)


async def _at_least(process: ControllerProcess, metric: str, value: float) -> float | None:
    now = process.metric(metric)
    return now if now >= value else None
