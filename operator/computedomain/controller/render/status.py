"""The status of a ComputeDomain: per-node detail, a summary for `kubectl get`, conditions that say why."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from computedomain.api.models import (
    CliqueDaemon,
    ComputeDomain,
    ComputeDomainStatus,
    Condition,
    ConditionStatus,
    NodeEntry,
    ReadyState,
)
from computedomain.controller.plan.cliques import CliquePlan
from computedomain.controller.plan.problems import Problem, ProblemReason

READY = "Ready"
CHILDREN_READY = "ChildrenReady"
CHANNELS_AVAILABLE = "ChannelsAvailable"
POOL_EXHAUSTED = "ChannelPoolExhausted"
ALL_REFUSED = "AllChannelsRefused"
MODE_MISMATCH = "ImexModeMismatch"
RELEASING = "ReleasingChannels"

# Problems that keep the domain's own objects from being in place, most fundamental first.
_CHILD_REASONS: tuple[ProblemReason, ...] = (
    "InvalidSpec",
    "ResourceAPIUnavailable",
    "NameConflict",
    "ReconcileError",
)
_NAMES_SHOWN = 5
_PROBLEMS_SHOWN = 3
_MESSAGE_CHARS = 400


@dataclass(frozen=True)
class ChannelState:
    """Clique mode: what the channel pool says of a domain."""

    # Cliques where the domain waits for a free channel.
    waiting: tuple[str, ...] = ()
    # Why the domain gets no channel at all (allocationMode: All), if it does not.
    refused: str = ""


def pool_exhausted(waiting: Sequence[str]) -> str:
    """The message of a domain that waits for channels in `waiting`."""
    noun = "clique" if len(waiting) == 1 else "cliques"
    return (
        f"no free IMEX channel in NVLink {noun} {some(list(waiting))}; "
        "the domain's pods wait in prepare and go on, in the order they came, once a channel frees"
    )


ALL_REFUSED_MESSAGE = (
    "allocationMode: All would give this domain's pods every IMEX channel, including those of the other "
    "domains of its cliques, which imex.mode=clique keeps apart; recreate the domain with "
    "allocationMode: Single (each domain gets a channel of its own)"
)


def mode_mismatch_message(recorded: str, current: str) -> str:
    """The message of a domain reconciled under another IMEX mode than the controller's."""
    return (
        f"this domain was created under imex.mode={recorded}; delete it (or finish its jobs) "
        f"before switching to {current}, or switch back"
    )


@dataclass(frozen=True)
class _Verdict:
    status: ConditionStatus
    reason: str
    message: str


def render_status(
    domain: ComputeDomain,
    plan: CliquePlan,
    problems: Sequence[Problem],
    generation: int,
    now: str,
    channels: ChannelState | None = None,
) -> dict[str, Any]:
    """The domain's `status` body.

    `now` (RFC 3339) becomes the lastTransitionTime of a condition whose status changed; a condition
    whose status stayed keeps the time from the domain's current status. `channels` is given in
    clique mode only, and adds the ChannelsAvailable condition.
    """
    nodes = [_node_entry(daemon) for daemon in plan.daemons()]
    ready = sum(1 for node in nodes if node.status == "Ready")
    expected = max(domain.spec.num_nodes, len(nodes))
    previous = {c.type: c for c in domain.status.conditions} if domain.status else {}
    verdicts = {
        READY: _readiness(domain, plan, problems, nodes),
        CHILDREN_READY: _children(problems),
    }
    if channels is not None:
        verdicts[CHILDREN_READY] = _children(problems, "ResourceClaimTemplate is in place")
        pool = _pool(channels)
        verdicts[CHANNELS_AVAILABLE] = pool
        if pool.status == "False" and verdicts[READY].reason not in _CHILD_REASONS:
            verdicts[READY] = pool
    status = ComputeDomainStatus(
        status=global_status(domain.spec.num_nodes, nodes),
        nodes=nodes,
        conditions=[_condition(kind, v, previous.get(kind), generation, now) for kind, v in verdicts.items()],
        observed_generation=generation,
        ready_nodes=ready,
        joined_nodes=len(nodes),
        clique_count=len(plan.cliques),
        node_summary=f"{ready}/{expected}",
    )
    return status.model_dump(mode="json", exclude_none=True)


def global_status(num_nodes: int, nodes: Sequence[NodeEntry]) -> ReadyState:
    """NVIDIA's rule: NotReady while fewer than numNodes nodes joined or any joined node is NotReady."""
    if len(nodes) < num_nodes or any(node.status == "NotReady" for node in nodes):
        return "NotReady"
    return "Ready"


def clique_full(plan: CliquePlan) -> Problem | None:
    """The nodes left without an IMEX slot because their clique is full, as a problem (None if none)."""
    if not plan.overflow:
        return None
    left_out = [node for clique in sorted(plan.overflow) for node in plan.overflow[clique]]
    return Problem(
        "CliqueFull",
        f"{_count(len(left_out), 'node')} got no IMEX slot because their NVLink clique already has "
        f"{plan.max_nodes} daemons of this domain: {some(left_out)}",
    )


def some(items: Sequence[str], shown: int = _NAMES_SHOWN) -> str:
    """`items` for a message, bounded: "a, b, c, d, e and 3 more"."""
    if len(items) <= shown:
        return ", ".join(items)
    return f"{', '.join(items[:shown])} and {len(items) - shown} more"


def _node_entry(daemon: CliqueDaemon) -> NodeEntry:
    return NodeEntry(
        name=daemon.node_name,
        ip_address=daemon.ip_address,
        clique_id=daemon.clique_id,
        index=daemon.index,
        status=daemon.status,
    )


def _readiness(
    domain: ComputeDomain,
    plan: CliquePlan,
    problems: Sequence[Problem],
    nodes: Sequence[NodeEntry],
) -> _Verdict:
    """The Ready condition: the most fundamental obstacle first, so the message names what to fix."""
    blocking = _by_priority(problems, (*_CHILD_REASONS, "LabelConflict"))
    if blocking:
        return _Verdict("False", blocking[0].reason, _messages(blocking))
    full = clique_full(plan)
    if full is not None:
        return _Verdict("False", full.reason, full.message)
    ready = sum(1 for node in nodes if node.status == "Ready")
    waiting = [node.name for node in nodes if node.status != "Ready"]
    wanted = domain.spec.num_nodes
    if len(nodes) < wanted:
        message = f"{len(nodes)} of {wanted} nodes joined; waiting for {wanted - len(nodes)} more"
        if waiting:
            message += f"; IMEX daemons not ready on {some(waiting)}"
        return _Verdict("False", "WaitingForNodes", message)
    if waiting:
        return _Verdict(
            "False",
            "DaemonsNotReady",
            f"{ready} of {len(nodes)} nodes ready; waiting for IMEX daemons on {some(waiting)}",
        )
    if not nodes:
        return _Verdict("True", "DomainReady", "No nodes have joined yet; numNodes is 0, so none are awaited")
    return _Verdict(
        "True",
        "DomainReady",
        f"{ready} of {len(nodes)} nodes ready in {_count(len(plan.cliques), 'NVLink clique')}"
        + (f" and {_count(len(plan.non_fabric), 'node')} without NVLink fabric" if plan.non_fabric else ""),
    )


def _children(
    problems: Sequence[Problem], applied: str = "DaemonSet and ResourceClaimTemplates are in place"
) -> _Verdict:
    """The ChildrenReady condition: whether the DaemonSet and claim templates are in place."""
    blocking = _by_priority(problems, _CHILD_REASONS)
    if blocking:
        return _Verdict("False", blocking[0].reason, _messages(blocking))
    return _Verdict("True", "ChildrenApplied", applied)


def _pool(channels: ChannelState) -> _Verdict:
    """The ChannelsAvailable condition (clique mode)."""
    if channels.refused:
        return _Verdict("False", ALL_REFUSED, channels.refused)
    if channels.waiting:
        return _Verdict("False", POOL_EXHAUSTED, pool_exhausted(channels.waiting))
    return _Verdict("True", "ChannelsAssigned", "every NVLink clique the domain uses gave it an IMEX channel")


def mismatch_status(current: dict[str, Any], message: str, generation: int, now: str) -> dict[str, Any]:
    """The domain's current status with Ready=False (ImexModeMismatch) and nothing else changed."""
    return _not_ready(current, MODE_MISMATCH, message, generation, now)


def releasing_message(cliques: Sequence[str]) -> str:
    """The message of a deleted domain whose claims still hold channels in `cliques`."""
    noun = "clique" if len(cliques) == 1 else "cliques"
    return (
        f"deleting: the domain keeps its IMEX channel in NVLink {noun} {some(list(cliques))} until its "
        "claims there are deallocated (their pods are gone), so that no other domain gets it meanwhile"
    )


def releasing_status(current: dict[str, Any], message: str, generation: int, now: str) -> dict[str, Any]:
    """The current status of a deleted domain with Ready=False (ReleasingChannels), nothing else changed."""
    return _not_ready(current, RELEASING, message, generation, now)


def _not_ready(
    current: dict[str, Any], reason: str, message: str, generation: int, now: str
) -> dict[str, Any]:
    previous = [Condition.model_validate(c) for c in current.get("conditions") or []]
    ready = next((c for c in previous if c.type == READY), None)
    condition = _condition(READY, _Verdict("False", reason, message), ready, generation, now)
    conditions = [c for c in previous if c.type != READY] + [condition]
    return {
        **current,
        "conditions": [c.model_dump(mode="json", exclude_none=True) for c in conditions],
    }


def _by_priority(problems: Sequence[Problem], reasons: Sequence[ProblemReason]) -> list[Problem]:
    rank = {reason: position for position, reason in enumerate(reasons)}
    return sorted((p for p in problems if p.reason in rank), key=lambda p: rank[p.reason])


def _messages(problems: Sequence[Problem]) -> str:
    shown = [_shorten(p.message) for p in problems[:_PROBLEMS_SHOWN]]
    hidden = len(problems) - len(shown)
    return "; ".join(shown) + (f"; and {_count(hidden, 'more problem')}" if hidden else "")


def _shorten(message: str) -> str:
    return message if len(message) <= _MESSAGE_CHARS else message[: _MESSAGE_CHARS - 3] + "..."


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _condition(
    kind: str,
    verdict: _Verdict,
    previous: Condition | None,
    generation: int,
    now: str,
) -> Condition:
    kept = previous is not None and previous.status == verdict.status
    return Condition(
        type=kind,
        status=verdict.status,
        reason=verdict.reason,
        message=verdict.message,
        last_transition_time=previous.last_transition_time if previous is not None and kept else now,
        observed_generation=generation,
    )
