"""Peer bookkeeping: which IMEX daemon holds which slot of which NVLink clique.

The controller is the only writer of these slots. A daemon keeps its slot for as long as it stays in the
clique, so its peers' IMEX configuration never changes under it; a newcomer takes the lowest free slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from computedomain.api import names
from computedomain.api.models import CliqueDaemon, ComputeDomainClique

NON_FABRIC_INDEX = -1


@dataclass(frozen=True)
class Member:
    """A daemon pod of the domain that has a node and an IP, with the clique its node reported."""

    node: str
    ip: str
    clique_id: str  # "" for a node without a multi-node NVLink fabric
    ready: bool


@dataclass(frozen=True)
class CliquePlan:
    """The desired peer layout of one domain."""

    # Clique ID -> its daemons, sorted by index. Only cliques with at least one daemon appear.
    cliques: dict[str, tuple[CliqueDaemon, ...]] = field(default_factory=dict)
    # Clique ID -> nodes left without a slot because the clique is full, sorted by name.
    overflow: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Daemons on nodes without an NVLink fabric (index -1, no clique object), sorted by node name.
    non_fabric: tuple[CliqueDaemon, ...] = ()
    # The clique size the plan was made for.
    max_nodes: int = names.DEFAULT_MAX_NODES_PER_CLIQUE

    def daemons(self) -> list[CliqueDaemon]:
        """Every daemon of the plan, sorted by clique then index, non-fabric nodes first."""
        placed = [daemon for clique_id in sorted(self.cliques) for daemon in self.cliques[clique_id]]
        return [*self.non_fabric, *placed]


def plan_cliques(
    cliques: Iterable[ComputeDomainClique],
    members: Iterable[Member],
    max_nodes: int,
) -> CliquePlan:
    """Assign every member a slot in its clique, keeping the slots already held.

    `cliques` are the domain's current clique objects (the previous assignment). A node keeps its index
    if it is still in the same clique and the index is valid; newcomers, in node-name order, take the
    lowest free index. At most `max_nodes` daemons share a clique; the rest go to `overflow`.
    """
    previous = _previous_indices(cliques, max_nodes)
    by_clique: dict[str, list[Member]] = {}
    non_fabric: list[CliqueDaemon] = []
    for member in _one_per_node(members):
        if member.clique_id:
            by_clique.setdefault(member.clique_id, []).append(member)
        else:
            non_fabric.append(_daemon(member, NON_FABRIC_INDEX))
    planned: dict[str, tuple[CliqueDaemon, ...]] = {}
    overflow: dict[str, tuple[str, ...]] = {}
    for clique_id, clique_members in sorted(by_clique.items()):
        daemons, left_out = _assign(clique_members, previous.get(clique_id, {}), max_nodes)
        planned[clique_id] = daemons
        if left_out:
            overflow[clique_id] = left_out
    return CliquePlan(cliques=planned, overflow=overflow, non_fabric=tuple(non_fabric), max_nodes=max_nodes)


def _previous_indices(cliques: Iterable[ComputeDomainClique], max_nodes: int) -> dict[str, dict[str, int]]:
    """Clique ID -> node -> valid index; when two nodes claim one index, the first by name keeps it."""
    previous: dict[str, dict[str, int]] = {}
    for clique in cliques:
        label = clique.metadata.labels.get(names.CLIQUE_LABEL, "")
        for daemon in sorted(clique.daemons, key=lambda daemon: daemon.node_name):
            clique_id = daemon.clique_id or label
            index = daemon.index
            if not clique_id or index is None or not 0 <= index < max_nodes:
                continue
            held = previous.setdefault(clique_id, {})
            if index not in held.values() and daemon.node_name not in held:
                held[daemon.node_name] = index
    return previous


def _one_per_node(members: Iterable[Member]) -> list[Member]:
    """One member per node, sorted by node name.

    Two pods can share a node for a moment while the DaemonSet replaces one; prefer the ready one, then
    the lowest IP, so the choice does not depend on listing order.
    """
    chosen: dict[str, Member] = {}
    for member in members:
        current = chosen.get(member.node)
        if current is None or (not member.ready, member.ip) < (not current.ready, current.ip):
            chosen[member.node] = member
    return [chosen[node] for node in sorted(chosen)]


def _assign(
    members: Sequence[Member],
    previous: dict[str, int],
    max_nodes: int,
) -> tuple[tuple[CliqueDaemon, ...], tuple[str, ...]]:
    """Daemons of one clique sorted by index, and the nodes left without a slot."""
    taken: dict[str, int] = {m.node: previous[m.node] for m in members if m.node in previous}
    used = set(taken.values())
    free = (index for index in range(max_nodes) if index not in used)
    left_out: list[str] = []
    for member in members:  # already in node-name order
        if member.node in taken:
            continue
        index = next(free, None)
        if index is None:
            left_out.append(member.node)
        else:
            taken[member.node] = index
    daemons = sorted((_daemon(m, taken[m.node]) for m in members if m.node in taken), key=_index)
    return tuple(daemons), tuple(left_out)


def _daemon(member: Member, index: int) -> CliqueDaemon:
    return CliqueDaemon(
        node_name=member.node,
        ip_address=member.ip,
        clique_id=member.clique_id,
        index=index,
        status="Ready" if member.ready else "NotReady",
    )


def _index(daemon: CliqueDaemon) -> int:
    return NON_FABRIC_INDEX if daemon.index is None else daemon.index
