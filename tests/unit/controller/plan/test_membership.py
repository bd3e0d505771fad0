"""Domain membership: which nodes are wanted, which labels change, which daemons are members."""

from __future__ import annotations

from typing import Any

from computedomain.api import names
from computedomain.controller.plan.cliques import Member
from computedomain.controller.plan.membership import label_plan, members, wanted_nodes

UID = "0c9d7c4e-7b1a-4a63-9a55-1f1f0d6f2a10"
OTHER = "9f0e2d1c-0000-4000-8000-000000000001"
RACK = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22.32766"
RACK_B = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22.32767"
DAEMONSET = names.daemon_name(UID)


def claim(
    pool: str | None = None,
    selector_node: str | None = None,
    driver: str = names.DRIVER,
    namespace: str = "team-a",
) -> Any:
    allocation: dict[str, Any] = {}
    if pool is not None:
        allocation["devices"] = {
            "results": [{"request": "channel", "driver": driver, "pool": pool, "device": "channel-0"}]
        }
    if selector_node is not None:
        term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [selector_node]}]}
        allocation["nodeSelector"] = {"nodeSelectorTerms": [term]}
    meta = {"name": "c", "namespace": namespace}
    return {"metadata": meta, "status": {"allocation": allocation} if allocation else {}}


def pod(
    node: str | None,
    ip: str | None,
    ready: bool = True,
    clique: str | None = None,
    deleting: bool = False,
    owner: str | None = DAEMONSET,
) -> Any:
    meta: dict[str, Any] = {"name": f"daemon-{node}", "labels": {names.DOMAIN_LABEL: UID}}
    if owner is not None:
        reference = {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "name": owner,
            "uid": "u",
            "controller": True,
        }
        meta["ownerReferences"] = [reference]
    if clique is not None:
        meta["labels"][names.CLIQUE_LABEL] = clique
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status["podIP"] = ip
    return {"metadata": meta, "spec": {"nodeName": node} if node else {}, "status": status}


# --- wanted_nodes ----------------------------------------------------------------------------------


def test_wanted_nodes_are_the_allocated_ones_without_duplicates() -> None:
    claims = [claim(pool="n1"), claim(), claim(selector_node="n2"), claim(pool="n1")]
    assert wanted_nodes(claims, "team-a") == {"n1", "n2"}


def test_claims_outside_the_domains_namespace_are_not_wanted() -> None:
    claims = [claim(pool="n1"), claim(pool="n2", namespace="team-b")]
    assert wanted_nodes(claims, "team-a") == {"n1"}


# --- label_plan --------------------------------------------------------------------------------------


def test_new_nodes_are_labelled_in_name_order() -> None:
    plan = label_plan(UID, {"n3", "n1", "n2"}, {})
    assert plan.add == ["n1", "n2", "n3"]
    assert plan.remove == []
    assert plan.conflicts == {}


def test_nodes_already_ours_are_left_alone_and_those_we_no_longer_want_are_unlabelled() -> None:
    plan = label_plan(UID, {"n1", "n2"}, {"n1": UID, "n3": UID, "n4": UID})
    assert plan.add == ["n2"]
    assert plan.remove == ["n3", "n4"]


def test_another_domains_label_is_a_conflict_and_never_touched() -> None:
    plan = label_plan(UID, {"n1", "n2"}, {"n1": OTHER, "n5": OTHER})
    assert plan.add == ["n2"]
    assert plan.conflicts == {"n1": OTHER}
    assert plan.remove == []  # n5 belongs to the other domain


def test_nothing_wanted_and_nothing_labelled_is_a_no_op() -> None:
    plan = label_plan(UID, set(), {"n1": OTHER})
    assert (plan.add, plan.remove, plan.conflicts) == ([], [], {})


# --- members -----------------------------------------------------------------------------------------


def test_members_are_daemon_pods_with_a_node_and_an_ip_sorted_by_node() -> None:
    pods = [pod("n2", "10.0.0.2"), pod("n1", "10.0.0.1", ready=False), pod(None, None), pod("n3", None)]
    found, unknown = members(pods, {"n1": RACK, "n2": RACK, "n3": RACK}, DAEMONSET)
    assert found == [
        Member(node="n1", ip="10.0.0.1", clique_id=RACK, ready=False),
        Member(node="n2", ip="10.0.0.2", clique_id=RACK, ready=True),
    ]
    assert unknown == []


def test_a_pod_being_deleted_is_no_longer_a_member() -> None:
    found, _ = members([pod("n1", "10.0.0.1", deleting=True)], {"n1": RACK}, DAEMONSET)
    assert found == []


def test_the_pods_own_clique_label_wins_over_the_nodes() -> None:
    found, _ = members([pod("n1", "10.0.0.1", clique=RACK_B)], {"n1": RACK}, DAEMONSET)
    assert [m.clique_id for m in found] == [RACK_B]


def test_a_node_without_fabric_is_a_member_with_an_empty_clique() -> None:
    found, unknown = members([pod("h1", "10.0.0.9")], {"h1": ""}, DAEMONSET)
    assert [(m.node, m.clique_id) for m in found] == [("h1", "")]
    assert unknown == []


def test_a_daemon_on_a_node_not_labelled_for_the_domain_is_no_member() -> None:
    found, ignored = members([pod("n7", "10.0.0.7"), pod("n6", "10.0.0.6")], {}, DAEMONSET)
    assert found == []
    assert ignored == ["daemon-n6", "daemon-n7"]


def test_a_pod_the_domains_daemonset_does_not_control_is_no_member() -> None:
    forged = pod("n1", "10.0.0.66", clique=RACK, owner=None)
    other = pod("n2", "10.0.0.67", clique=RACK, owner=names.daemon_name(OTHER))
    found, ignored = members([forged, other], {"n1": RACK, "n2": RACK}, DAEMONSET)
    assert found == []
    assert ignored == ["daemon-n1", "daemon-n2"]
