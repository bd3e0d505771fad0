"""Membership on the real API server: nodes join as workload claims are allocated to them, keep their
IMEX slot while others come and go, nodes without NVLink join without one, and domains side by side
keep to their own nodes."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes_asyncio import client

from cdtestbed.controller_process import ControllerProcess
from cdtestbed.topology import rack_clique_id
from support.domains import Cluster, condition, domain_manifest, unique
from support.examples import delete_namespace
from support.waiting import eventually

pytestmark = pytest.mark.cluster

RACK0 = rack_clique_id(0)
RACK1 = rack_clique_id(1)


def rack(number: int, slots: range) -> list[str]:
    return [f"gb200-r{number}-n{slot:02d}" for slot in slots]


async def slots(cd: Cluster, uid: str) -> dict[str, int]:
    """Node -> slot in the domain's one clique object of rack 0."""
    cliques = await cd.cliques(uid)
    assert list(cliques) == [RACK0]
    return dict(cliques[RACK0])


@pytest.fixture
def cd(api: client.ApiClient, operator_ready: str, controller: ControllerProcess) -> Cluster:
    return Cluster(api, operator_ready)


async def test_indices_stay_put_when_a_node_leaves_and_a_newcomer_takes_the_lowest_free_one(
    cd: Cluster, namespace: str
) -> None:
    name = unique("cd")
    template = f"{name}-channel"
    uid = (await cd.create_domain(domain_manifest(name, namespace)))["metadata"]["uid"]
    await cd.wait_reconciled(namespace, name)
    nodes = rack(0, range(5, 9))
    pods = dict(zip(nodes, await cd.start_workload(namespace, template, nodes), strict=True))
    await cd.wait_nodes(namespace, name, nodes)
    first = await slots(cd, uid)
    # Slots go to nodes in the order they join, which the scheduler decides.
    assert sorted(first) == nodes
    assert sorted(first.values()) == [0, 1, 2, 3]
    assert await cd.labelled_nodes(uid) == nodes
    assert await cd.daemon_nodes(uid) == nodes

    # The holder of slot 1 leaves: the others keep theirs.
    leaving = next(node for node, index in first.items() if index == 1)
    await cd.stop_workload(namespace, [pods.pop(leaving)])
    remaining = sorted(set(nodes) - {leaving})
    await cd.wait_nodes(namespace, name, remaining)
    kept = {node: index for node, index in first.items() if node != leaving}
    assert await slots(cd, uid) == kept
    assert await cd.labelled_nodes(uid) == remaining

    # A newcomer takes the lowest free slot (1), not the next unused one (4).
    newcomer = rack(0, range(9, 10))[0]
    pods[newcomer] = (await cd.start_workload(namespace, template, [newcomer]))[0]
    body = await cd.wait_nodes(namespace, name, [*remaining, newcomer])
    assert await slots(cd, uid) == {**kept, newcomer: 1}
    assert {e["name"]: e["index"] for e in body["status"]["nodes"]} == {**kept, newcomer: 1}

    await cd.stop_workload(namespace, pods.values())
    await cd.delete_domain(namespace, name)
    await cd.wait_nothing_left(uid)


async def test_nodes_without_nvlink_join_with_index_minus_one_and_no_clique_object(
    cd: Cluster, namespace: str
) -> None:
    name = unique("cd")
    uid = (await cd.create_domain(domain_manifest(name, namespace, num_nodes=3)))["metadata"]["uid"]
    await cd.wait_reconciled(namespace, name)
    plain = ["h100-n00", "h100-n01"]
    fabric = rack(1, range(17, 18))
    pods = await cd.start_workload(namespace, f"{name}-channel", plain + fabric)
    body = await cd.wait_nodes(namespace, name, plain + fabric)

    entries = {e["name"]: e for e in body["status"]["nodes"]}
    for node in plain:
        assert (entries[node]["index"], entries[node]["cliqueID"]) == (-1, "")
    assert (entries[fabric[0]]["index"], entries[fabric[0]]["cliqueID"]) == (0, RACK1)
    assert await cd.cliques(uid) == {RACK1: [(fabric[0], 0)]}
    assert body["status"]["cliqueCount"] == 1
    assert body["status"]["status"] == "Ready"
    ready = condition(body)
    assert (ready["status"], ready["reason"]) == ("True", "DomainReady")
    assert "2 nodes without NVLink fabric" in ready["message"]
    assert await cd.daemon_nodes(uid) == sorted(plain + fabric)

    await cd.stop_workload(namespace, pods)
    await cd.delete_domain(namespace, name)
    await cd.wait_nothing_left(uid)


async def test_domains_side_by_side_do_not_interfere(cd: Cluster, namespace: str) -> None:
    layout = {
        unique("a"): rack(0, range(0, 3)),
        unique("b"): rack(1, range(0, 3)),
        unique("c"): [*rack(0, range(3, 5)), "h100-n00"],
    }
    created = await asyncio.gather(*(cd.create_domain(domain_manifest(n, namespace)) for n in layout))
    uids = {body["metadata"]["name"]: body["metadata"]["uid"] for body in created}
    workloads = await asyncio.gather(
        *(cd.start_workload(namespace, f"{name}-channel", nodes) for name, nodes in layout.items())
    )
    for name, nodes in layout.items():
        await cd.wait_nodes(namespace, name, nodes)
    for name, nodes in layout.items():
        uid = uids[name]
        assert await cd.labelled_nodes(uid) == sorted(nodes), name
        assert await cd.daemon_nodes(uid) == sorted(nodes), name
        fabric = sorted(n for n in nodes if n.startswith("gb200"))
        clique = RACK0 if fabric[0].startswith("gb200-r0") else RACK1
        daemons = (await cd.cliques(uid))[clique]
        # Each domain numbers its own daemons from 0, in the order they joined.
        assert sorted(n for n, _ in daemons) == fabric, name
        assert [i for _, i in daemons] == list(range(len(fabric))), name

    # Deleting one leaves the others as they are.
    first, *others = layout
    before = {name: (await cd.domain(namespace, name) or {}).get("status") for name in others}
    await cd.delete_domain(namespace, first)
    await cd.wait_nothing_left(uids[first])
    for name in others:
        after = await cd.domain(namespace, name)
        assert after is not None
        assert after["status"] == before[name]
        assert await cd.labelled_nodes(uids[name]) == sorted(layout[name])
        assert await cd.daemonset(uids[name]) is not None

    for pods in workloads:
        await cd.stop_workload(namespace, pods)
    for name in others:
        await cd.delete_domain(namespace, name)
        await cd.wait_nothing_left(uids[name])


async def test_claims_from_another_namespace_do_not_make_nodes_join(cd: Cluster, namespace: str) -> None:
    name = unique("cd")
    uid = (await cd.create_domain(domain_manifest(name, namespace)))["metadata"]["uid"]
    await cd.wait_reconciled(namespace, name)
    own, foreign = rack(0, range(12, 13)), rack(0, range(13, 14))
    # Someone in another namespace copies the domain's template, label and UID included: NVIDIA's
    # kubelet plugin refuses such a channel, so its node must not join either.
    other = await cd.create_namespace(unique("other"))
    try:
        copy = await cd.claim_template(namespace, f"{name}-channel")
        assert copy is not None
        copy["metadata"] = {"name": "copied", "labels": copy["metadata"]["labels"]}
        await cd.custom.create_namespaced_custom_object(
            "resource.k8s.io", "v1", other, "resourceclaimtemplates", copy
        )
        foreign_pods = await cd.start_workload(other, "copied", foreign)
        assert await wait_allocated(cd, other, foreign) == foreign

        pods = await cd.start_workload(namespace, f"{name}-channel", own)
        await cd.wait_nodes(namespace, name, own)
        assert await cd.labelled_nodes(uid) == own
        assert await cd.daemon_nodes(uid) == own

        await cd.stop_workload(other, foreign_pods)
        await cd.stop_workload(namespace, pods)
    finally:
        await delete_namespace(cd.api, other)
    await cd.delete_domain(namespace, name)
    await cd.wait_nothing_left(uid)


async def wait_allocated(cd: Cluster, namespace: str, nodes: list[str]) -> list[str]:
    async def probe() -> list[str] | None:
        found = await cd.allocated_nodes(namespace)
        return found if found == nodes else None

    found: list[str] = await eventually(probe, timeout=60, what=f"claims allocated on {nodes}")
    return found
