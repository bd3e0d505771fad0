"""Which nodes belong to a domain, decided from the scheduler's allocations and the daemon pods.

A node joins a domain as soon as a workload channel claim of that domain is allocated to it (the
scheduler's decision), so the IMEX daemon starts beside the workload instead of after it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from computedomain.api import names
from computedomain.controller.plan.cliques import Member
from computedomain.dra.allocation import allocated_node
from computedomain.objects import Object, pod_ready


@dataclass(frozen=True, slots=True)
class ClaimFacts:
    """All the membership planner reads of a claim: where it is and the node it is allocated to."""

    namespace: str
    node: str | None


def claim_facts(claim: Object) -> ClaimFacts:
    """The facts of one cached claim."""
    node = allocated_node(claim)
    return ClaimFacts(str(claim.get("metadata", {}).get("namespace", "")), node or None)


def wanted_nodes(claims: Iterable[Object], namespace: str) -> set[str]:
    """Nodes holding at least one allocated workload claim of the domain (see `nodes_wanted`)."""
    return nodes_wanted((claim_facts(claim) for claim in claims), namespace)


def nodes_wanted(claims: Iterable[ClaimFacts], namespace: str) -> set[str]:
    """Nodes holding at least one allocated workload claim of the domain.

    Only claims in the domain's own namespace count: NVIDIA's kubelet plugin refuses a channel of a
    domain in another namespace, so such a claim must not start an IMEX daemon either.
    """
    return {claim.node for claim in claims if claim.namespace == namespace and claim.node}


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


@dataclass(frozen=True, slots=True)
class DaemonFacts:
    """All the membership planner reads of a pod that carries a domain's label."""

    name: str
    node: str | None
    ip: str | None
    deleting: bool
    # The DaemonSet that controls the pod, if one does.
    daemonset: str | None
    # The clique the daemon reported on its own pod, if it did.
    clique_id: str | None
    ready: bool


def _controlling_daemonset(pod: Object) -> str | None:
    for ref in pod["metadata"].get("ownerReferences") or []:
        if (
            ref.get("kind") == "DaemonSet"
            and ref.get("apiVersion") == "apps/v1"
            and ref.get("controller") is True
        ):
            return str(ref.get("name", ""))
    return None


def daemon_facts(pod: Object) -> DaemonFacts:
    """The facts of one cached pod."""
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    clique = (meta.get("labels") or {}).get(names.CLIQUE_LABEL)
    return DaemonFacts(
        name=str(meta.get("name", "")),
        node=spec.get("nodeName") or None,
        ip=status.get("podIP") or None,
        deleting=bool(meta.get("deletionTimestamp")),
        daemonset=_controlling_daemonset(pod),
        clique_id=None if clique is None else str(clique),
        ready=pod_ready(pod),
    )


def members(
    pods: Iterable[Object], node_cliques: Mapping[str, str], daemonset: str
) -> tuple[list[Member], list[str]]:
    """`members_of` the pods' facts."""
    return members_of((daemon_facts(pod) for pod in pods), node_cliques, daemonset)


def members_of(
    pods: Iterable[DaemonFacts], node_cliques: Mapping[str, str], daemonset: str
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
        if not pod.node or not pod.ip or pod.deleting:
            continue
        if pod.node not in node_cliques or pod.daemonset != daemonset:
            ignored.append(pod.name)
            continue
        clique = node_cliques[pod.node] if pod.clique_id is None else pod.clique_id
        found.append(Member(node=pod.node, ip=pod.ip, clique_id=clique, ready=pod.ready))
    return sorted(found, key=lambda m: m.node), sorted(ignored)
