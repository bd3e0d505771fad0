"""Which nodes belong to a domain, decided from the scheduler's allocations and the daemon pods.

A node joins a domain as soon as a workload channel claim of that domain is allocated to it (the
scheduler's decision), so the IMEX daemon starts beside the workload instead of after it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from computedomain.api import names
from computedomain.controller.plan.cliques import Member
from computedomain.dra.allocation import allocated_node

# A Kubernetes object as the caches hold it (planners read, never fetch).
Object = dict[str, Any]


def wanted_nodes(claims: Iterable[Object], namespace: str) -> set[str]:
    """Nodes holding at least one allocated workload claim of the domain.

    Only claims in the domain's own namespace count: NVIDIA's kubelet plugin refuses a channel of a
    domain in another namespace, so such a claim must not start an IMEX daemon either.
    """
    return {
        node
        for claim in claims
        if claim.get("metadata", {}).get("namespace") == namespace and (node := allocated_node(claim))
    }


@dataclass
class LabelPlan:
    """Node label changes for one domain."""

    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    # node -> UID of the other domain whose label the node already carries
    conflicts: dict[str, str] = field(default_factory=dict)


def label_plan(uid: str, wanted: Iterable[str], labelled: Mapping[str, str]) -> LabelPlan:
    """Compare wanted member nodes with `labelled` (node -> domain UID of every labelled node)."""
    plan = LabelPlan()
    wanted_set = set(wanted)
    for node in sorted(wanted_set):
        owner = labelled.get(node)
        if owner is None:
            plan.add.append(node)
        elif owner != uid:
            plan.conflicts[node] = owner
    plan.remove = sorted(node for node, owner in labelled.items() if owner == uid and node not in wanted_set)
    return plan


def _pod_ready(pod: Object) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def owned_by(pod: Object, daemonset: str) -> bool:
    """True when `pod` is controlled by the DaemonSet named `daemonset` (its own namespace)."""
    return any(
        ref.get("kind") == "DaemonSet"
        and ref.get("apiVersion") == "apps/v1"
        and ref.get("name") == daemonset
        and ref.get("controller") is True
        for ref in pod["metadata"].get("ownerReferences") or []
    )


def members(
    pods: Iterable[Object], node_cliques: Mapping[str, str], daemonset: str
) -> tuple[list[Member], list[str]]:
    """The domain's daemons, as members; and the pods that carry its label but do not count.

    Only a pod that the domain's own DaemonSet controls, on a node labelled for the domain (a key of
    `node_cliques`), with an IP and not being deleted, counts: a label on anything else (a pod
    someone labelled by hand, a daemon left on a node that has left) never makes a member. The
    clique comes from the label the daemon puts on its own pod; before the daemon has run, the
    node's `nvidia.com/gpu.clique` label (from the node agent or GPU Feature Discovery) stands in.
    """
    found: list[Member] = []
    ignored: list[str] = []
    for pod in pods:
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        node, ip = spec.get("nodeName"), status.get("podIP")
        if not node or not ip or meta.get("deletionTimestamp"):
            continue
        if node not in node_cliques or not owned_by(pod, daemonset):
            ignored.append(str(meta.get("name", "")))
            continue
        labels = meta.get("labels") or {}
        clique = labels.get(names.CLIQUE_LABEL, node_cliques[node])
        found.append(Member(node=node, ip=ip, clique_id=clique, ready=_pod_ready(pod)))
    return sorted(found, key=lambda m: m.node), sorted(ignored)
