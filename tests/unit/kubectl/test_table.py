"""`status`: the per-node table and its JSON, and the facts read from raw objects."""

from __future__ import annotations

from computedomain.api import names
from computedomain.kubectl.snapshot import (
    ClaimInfo,
    Condition,
    NodeEntry,
    NodeInfo,
    PodInfo,
    Slot,
    Snapshot,
    claim_info,
    domain_facts,
    event_info,
    node_info,
    pod_info,
    slots_of,
)
from computedomain.kubectl.table import render_json, render_table, rows

UID = "11111111-2222-4333-8444-555555555555"
CLIQUE = "c0ffee.32766"
OPS = "computedomain-system"


def domain() -> Snapshot:
    return Snapshot(
        namespace="team-a",
        name="train",
        uid=UID,
        operator_namespace=OPS,
        num_nodes=3,
        status="NotReady",
        conditions=(Condition("Ready", "False", "DaemonsNotReady", "1 of 2 nodes ready"),),
        nodes=(NodeEntry("gb-n00", CLIQUE, 0, "Ready"), NodeEntry("h100-n00", "", -1, "NotReady")),
        slots=(Slot("gb-n00", CLIQUE, 0, "Ready"),),
        daemon_pods=(
            PodInfo(OPS, "d-a", node="gb-n00", phase="Running", ready=True),
            PodInfo(OPS, "d-b", target="h100-n00", unschedulable="Too many pods"),
        ),
        claims=(
            ClaimInfo("team-a", "w-0-channel", node="gb-n00"),
            ClaimInfo("team-a", "w-1-channel", node="h100-n00"),
            ClaimInfo("team-a", "w-2-channel"),
        ),
        node_info={"gb-n00": NodeInfo("gb-n00", CLIQUE)},
    )


def test_the_table_has_a_row_per_node_with_daemon_and_claims() -> None:
    assert render_table(domain()).splitlines() == [
        "ComputeDomain team-a/train: NotReady, 1/3 nodes ready, 1 cliques; "
        "Ready=False DaemonsNotReady: 1 of 2 nodes ready",
        "1 channel claim(s) not allocated yet",
        "NODE       CLIQUE         INDEX   DAEMON POD   DAEMON          CLAIMS",
        "gb-n00     c0ffee.32766   0       d-a          Ready           w-0-channel",
        "h100-n00   -              -1      d-b          Unschedulable   w-1-channel",
    ]


def test_a_domain_without_nodes() -> None:
    s = Snapshot(namespace="team-a", name="idle", uid=UID, operator_namespace=OPS)
    assert (
        render_table(s)
        == "ComputeDomain team-a/idle: no status, 0/0 nodes ready, 0 cliques\nno node has joined\n"
    )


def test_a_node_with_a_claim_but_not_joined_shows_its_label_clique() -> None:
    s = Snapshot(
        namespace="t",
        name="d",
        uid=UID,
        operator_namespace=OPS,
        claims=(ClaimInfo("t", "c", node="gb-n05"),),
        node_info={"gb-n05": NodeInfo("gb-n05", CLIQUE)},
    )
    [row] = rows(s)
    assert (row.node, row.clique, row.index, row.daemon_pod, row.claims) == (
        "gb-n05",
        CLIQUE,
        None,
        "",
        ("c",),
    )


def test_json_holds_the_same_facts() -> None:
    document = render_json(domain())
    assert document["ready"] == {
        "status": "False",
        "reason": "DaemonsNotReady",
        "message": "1 of 2 nodes ready",
    }
    assert document["unallocatedClaims"] == ["w-2-channel"]
    assert document["nodes"][1] == {
        "name": "h100-n00",
        "cliqueID": "",
        "index": -1,
        "daemonPod": "d-b",
        "daemonState": "Unschedulable",
        "claims": ["w-1-channel"],
    }


def test_facts_read_from_raw_objects() -> None:
    facts = domain_facts(
        {
            "metadata": {"namespace": "t", "name": "d", "uid": UID, "generation": 2},
            "spec": {"numNodes": 4, "channel": {"resourceClaimTemplate": {"name": "d-channel"}}},
            "status": {
                "status": "NotReady",
                "observedGeneration": 2,
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "WaitingForNodes", "message": "m"}
                ],
                "nodes": [
                    {"name": "n", "cliqueID": CLIQUE, "index": 3, "status": "Ready", "ipAddress": "10.0.0.2"}
                ],
            },
        }
    )
    assert facts["num_nodes"] == 4
    assert facts["template"] == "d-channel"
    assert facts["conditions"] == (Condition("Ready", "False", "WaitingForNodes", "m"),)
    assert facts["nodes"] == (NodeEntry("n", CLIQUE, 3, "Ready", "10.0.0.2"),)
    assert slots_of(
        [{"daemons": [{"nodeName": "n", "cliqueID": CLIQUE, "index": 3, "status": "Ready"}]}]
    ) == (Slot("n", CLIQUE, 3, "Ready"),)


def test_a_pending_daemon_pod_reads_its_target_node_and_the_scheduler_s_message() -> None:
    pod = pod_info(
        {
            "metadata": {"namespace": OPS, "name": "d", "uid": "u"},
            "spec": {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchFields": [
                                        {"key": "metadata.name", "operator": "In", "values": ["gb-n07"]}
                                    ]
                                }
                            ]
                        }
                    }
                }
            },
            "status": {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "Too many pods",
                    }
                ],
            },
        }
    )
    assert (pod.where, pod.unschedulable, pod.state) == ("gb-n07", "Too many pods", "Unschedulable")


def test_a_crashing_pod_reads_its_container_reason_and_restarts() -> None:
    pod = pod_info(
        {
            "metadata": {"namespace": OPS, "name": "d"},
            "spec": {"nodeName": "n"},
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {"restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
                ],
            },
        }
    )
    assert (pod.state, pod.restarts) == ("CrashLoopBackOff", 4)


def test_a_claim_reads_its_node_and_pods() -> None:
    claim = claim_info(
        {
            "metadata": {"namespace": "t", "name": "c", "ownerReferences": [{"kind": "Pod", "name": "w-0"}]},
            "status": {
                "allocation": {
                    "devices": {
                        "results": [{"driver": names.DRIVER, "pool": "gb-n01", "device": "channel-0"}]
                    }
                },
                "reservedFor": [{"resource": "pods", "name": "w-0"}],
            },
        }
    )
    assert claim == ClaimInfo("t", "c", node="gb-n01", pods=("w-0",))


def test_a_node_and_an_event() -> None:
    node = node_info(
        {
            "metadata": {
                "name": "n",
                "labels": {
                    names.GPU_CLIQUE_LABEL: CLIQUE,
                    names.GPU_PRODUCT_LABEL: "NVIDIA-GB200",
                    names.DOMAIN_LABEL: UID,
                },
            },
            "status": {"conditions": [{"type": "Ready", "status": "False"}]},
        }
    )
    assert node == NodeInfo("n", CLIQUE, "NVIDIA-GB200", UID, ready=False)
    event = event_info(
        {
            "involvedObject": {"kind": "Pod", "name": "w", "uid": "u"},
            "type": "Warning",
            "reason": "NoNVLinkClique",
            "message": "m",
            "source": {"component": "compute-domain-kubelet-plugin"},
            "count": 3,
        }
    )
    assert (event.kind, event.reason, event.source, event.count) == (
        "Pod",
        "NoNVLinkClique",
        "compute-domain-kubelet-plugin",
        3,
    )
