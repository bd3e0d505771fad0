"""The membership plan of one domain, decided from the cache alone: which nodes gain or lose the
domain label, which nodes another domain holds, which daemon holds which clique slot, and which
clique objects are no longer wanted. The reconcile applies it (`controller.joining`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from computedomain.api import names
from computedomain.api.models import ComputeDomainClique
from computedomain.controller.plan.cliques import CliquePlan, plan_cliques
from computedomain.controller.plan.membership import (
    ClaimFacts,
    DaemonFacts,
    LabelPlan,
    label_plan,
    members_of,
    nodes_wanted,
)
from computedomain.controller.plan.problems import Problem
from computedomain.objects import Object

_NAMES_SHOWN = 5


@dataclass(frozen=True)
class MembershipPlan:
    """What a domain's membership needs: label changes, the clique layout, cliques to delete."""

    labels: LabelPlan = field(default_factory=LabelPlan)
    cliques: CliquePlan = field(default_factory=CliquePlan)
    # Cached clique objects of the domain whose clique has no daemon any more.
    prune: tuple[Object, ...] = ()


def plan_membership(
    uid: str,
    namespace: str,
    labelled_nodes: Mapping[str, tuple[str, str]],
    claims: Iterable[ClaimFacts],
    pods: Iterable[DaemonFacts],
    cliques: Iterable[Object],
    max_nodes: int,
) -> MembershipPlan:
    """Plan one domain's membership from cached objects.

    `labelled_nodes` maps every labelled node (any domain) to (domain UID, NVLink clique); `claims`,
    `pods` (as the facts the planner reads of them) and `cliques` are the domain's own. Daemon pods
    whose own label does not tell their clique take their node's clique, counting only the nodes
    that carry the domain label once the label changes are made.
    """
    labelled = {node: owner for node, (owner, _) in labelled_nodes.items()}
    labels = label_plan(uid, nodes_wanted(claims, namespace), labelled)
    members_after = ({n for n, owner in labelled.items() if owner == uid} | set(labels.add)) - set(
        labels.remove
    )
    node_cliques = {node: labelled_nodes[node][1] for node in members_after if node in labelled_nodes}
    found, _ignored = members_of(pods, node_cliques, names.daemon_name(uid))
    current = list(cliques)
    layout = plan_cliques([ComputeDomainClique.model_validate(c) for c in current], found, max_nodes)
    keep = {names.clique_name(uid, clique_id) for clique_id in layout.cliques}
    prune = tuple(c for c in current if c["metadata"]["name"] not in keep)
    return MembershipPlan(labels=labels, cliques=layout, prune=prune)


def label_conflict(conflicts: Mapping[str, str], refused: Sequence[str]) -> Problem | None:
    """The nodes that could not join because another domain (or another writer) holds their label."""
    detail = [f"{node} (ComputeDomain UID {owner})" for node, owner in sorted(conflicts.items())]
    detail += [f"{node} (label owned by another writer)" for node in refused]
    if not detail:
        return None
    more = len(detail) - _NAMES_SHOWN
    return Problem(
        "LabelConflict",
        "nodes already belong to another domain and cannot join this one: "
        + ", ".join(detail[:_NAMES_SHOWN])
        + (f" and {more} more" if more > 0 else ""),
    )
