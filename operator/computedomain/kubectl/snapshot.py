"""What `kubectl computedomain` read about one domain, as plain values (no I/O).

`gather` fills a `Snapshot` from the API server; the constructors here turn each raw object into the
few facts the explanation and the table use, so both are tested from objects built by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from computedomain.api import names
from computedomain.dra.allocation import allocated_node, node_named_by
from computedomain.objects import Object, pod_ready


@dataclass(frozen=True)
class Condition:
    """One condition of the domain's status."""

    type: str
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class NodeEntry:
    """One entry of the domain's `status.nodes`."""

    name: str
    clique: str
    index: int
    status: str
    ip: str = ""


@dataclass(frozen=True)
class Slot:
    """A daemon's entry in one of the domain's ComputeDomainCliques."""

    node: str
    clique: str
    index: int
    status: str


@dataclass(frozen=True)
class NodeInfo:
    """The labels of a node that matter to a domain."""

    name: str
    clique: str = ""
    product: str = ""
    domain: str = ""
    ready: bool = True


@dataclass(frozen=True)
class PodInfo:
    """A pod's place and state, as `kubectl get pods` would summarise it."""

    namespace: str
    name: str
    uid: str = ""
    node: str = ""
    # The node a DaemonSet pod is bound for before it is scheduled (its required affinity).
    target: str = ""
    phase: str = "Pending"
    ready: bool = False
    deleting: bool = False
    # The scheduler's message while PodScheduled is False.
    unschedulable: str = ""
    # The first waiting or terminated container's reason (ContainerCreating, CrashLoopBackOff...).
    waiting: str = ""
    restarts: int = 0
    # The last lines of the crashed container's log, where they were read.
    log_tail: str = ""

    @property
    def where(self) -> str:
        """The node the pod runs on, or is meant for."""
        return self.node or self.target

    @property
    def state(self) -> str:
        """One word for the table: Ready, Running (not ready), a container's reason, or the phase."""
        if self.deleting:
            return "Terminating"
        if self.ready:
            return "Ready"
        if self.unschedulable:
            return "Unschedulable"
        if self.waiting:
            return self.waiting
        return "NotReady" if self.phase == "Running" else self.phase


@dataclass(frozen=True)
class ClaimInfo:
    """A workload channel claim of the domain."""

    namespace: str
    name: str
    node: str = ""
    # The pods that own the claim (its generating pod) or have it reserved.
    pods: tuple[str, ...] = ()


@dataclass(frozen=True)
class EventInfo:
    """One Event, about the domain, a pod or a node."""

    kind: str
    name: str
    type: str
    reason: str
    message: str
    source: str = ""
    count: int = 1
    uid: str = ""


@dataclass(frozen=True)
class Snapshot:
    """Everything read about one domain at one moment."""

    namespace: str
    name: str
    uid: str
    operator_namespace: str
    num_nodes: int = 0
    generation: int = 1
    deleting: bool = False
    template: str = ""
    # `status.status` ("" when the domain has no status yet).
    status: str = ""
    observed_generation: int | None = None
    conditions: tuple[Condition, ...] = ()
    nodes: tuple[NodeEntry, ...] = ()
    daemonset_exists: bool = True
    slots: tuple[Slot, ...] = ()
    daemon_pods: tuple[PodInfo, ...] = ()
    claims: tuple[ClaimInfo, ...] = ()
    # Pending pods that own one of the claims (the workload's pods not yet placed).
    pending_pods: tuple[PodInfo, ...] = ()
    node_info: Mapping[str, NodeInfo] = field(default_factory=dict)
    # The kubelet plugin's pod on each node read (absent: none runs there).
    plugin_pods: Mapping[str, PodInfo] = field(default_factory=dict)
    events: tuple[EventInfo, ...] = ()

    def condition(self, kind: str = "Ready") -> Condition | None:
        """The condition of that type, or None."""
        return next((c for c in self.conditions if c.type == kind), None)

    @property
    def key(self) -> str:
        """`namespace/name`."""
        return f"{self.namespace}/{self.name}"


def domain_facts(domain: Object) -> dict[str, Any]:
    """The `Snapshot` fields read from the ComputeDomain itself."""
    meta = domain.get("metadata") or {}
    spec = domain.get("spec") or {}
    status = domain.get("status") or {}
    observed = status.get("observedGeneration")
    return {
        "namespace": str(meta.get("namespace", "")),
        "name": str(meta.get("name", "")),
        "uid": str(meta.get("uid", "")),
        "num_nodes": int(spec.get("numNodes") or 0),
        "generation": int(meta.get("generation") or 1),
        "deleting": bool(meta.get("deletionTimestamp")),
        "template": str(((spec.get("channel") or {}).get("resourceClaimTemplate") or {}).get("name", "")),
        "status": str(status.get("status") or ""),
        "observed_generation": int(observed) if observed is not None else None,
        "conditions": tuple(
            Condition(
                type=str(c.get("type", "")),
                status=str(c.get("status", "")),
                reason=str(c.get("reason", "")),
                message=str(c.get("message", "")),
            )
            for c in status.get("conditions") or []
            if isinstance(c, dict)
        ),
        "nodes": tuple(
            NodeEntry(
                name=str(n.get("name", "")),
                clique=str(n.get("cliqueID", "")),
                index=int(n.get("index", -1)),
                status=str(n.get("status", "")),
                ip=str(n.get("ipAddress", "")),
            )
            for n in status.get("nodes") or []
            if isinstance(n, dict)
        ),
    }


def slots_of(cliques: Iterable[Object]) -> tuple[Slot, ...]:
    """The daemons listed in the domain's ComputeDomainCliques."""
    return tuple(
        Slot(
            node=str(d.get("nodeName", "")),
            clique=str(d.get("cliqueID", "")),
            index=int(d.get("index", -1)),
            status=str(d.get("status", "")),
        )
        for clique in cliques
        for d in clique.get("daemons") or []
    )


def pod_info(pod: Object, log_tail: str = "") -> PodInfo:
    """A pod's facts; `log_tail` is what was read of its crashed container's log."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    scheduled: Object = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"),
        {},
    )
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    return PodInfo(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        node=str(spec.get("nodeName") or ""),
        target=node_named_by(required) or "",
        phase=str(status.get("phase") or "Pending"),
        ready=pod_ready(pod),
        deleting=bool(meta.get("deletionTimestamp")),
        unschedulable=str(scheduled.get("message") or scheduled.get("reason") or "")
        if scheduled.get("status") == "False"
        else "",
        waiting=_container_reason(statuses),
        restarts=sum(int(s.get("restartCount") or 0) for s in statuses),
        log_tail=log_tail,
    )


def _container_reason(statuses: list[Any]) -> str:
    for container in statuses:
        state = container.get("state") or {}
        for phase in ("waiting", "terminated"):
            reason = (state.get(phase) or {}).get("reason")
            if reason and reason != "Completed":
                return str(reason)
    return ""


def claim_info(claim: Object) -> ClaimInfo:
    """A channel claim's facts: where it is allocated and which pods it serves."""
    meta = claim.get("metadata") or {}
    owners = [str(o.get("name")) for o in meta.get("ownerReferences") or [] if o.get("kind") == "Pod"]
    reserved = [
        str(r.get("name"))
        for r in (claim.get("status") or {}).get("reservedFor") or []
        if r.get("resource") == "pods"
    ]
    return ClaimInfo(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        node=allocated_node(claim) or "",
        pods=tuple(dict.fromkeys([*owners, *reserved])),
    )


def node_info(node: Object) -> NodeInfo:
    """A node's labels that matter to a domain, and whether it is Ready."""
    meta = node.get("metadata") or {}
    labels = meta.get("labels") or {}
    conditions = (node.get("status") or {}).get("conditions")
    return NodeInfo(
        name=str(meta.get("name", "")),
        clique=str(labels.get(names.GPU_CLIQUE_LABEL, "")),
        product=str(labels.get(names.GPU_PRODUCT_LABEL, "")),
        domain=str(labels.get(names.DOMAIN_LABEL, "")),
        # A metadata-only read has no status: take the node as Ready then.
        ready=conditions is None
        or any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions),
    )


def event_info(event: Object) -> EventInfo:
    """An Event's facts."""
    involved = event.get("involvedObject") or {}
    source = (event.get("source") or {}).get("component") or event.get("reportingComponent") or ""
    return EventInfo(
        kind=str(involved.get("kind", "")),
        name=str(involved.get("name", "")),
        uid=str(involved.get("uid", "")),
        type=str(event.get("type", "")),
        reason=str(event.get("reason", "")),
        message=str(event.get("message") or event.get("note") or ""),
        source=str(source),
        count=int(event.get("count") or 1),
    )
