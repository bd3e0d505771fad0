"""Clique mode: which domain holds which IMEX channel of each NVLink clique, decided from the cache.

Nothing but the `<domain UID>.<clique ID>` objects records the pool: a channel is in use in a clique
while one of them holds it, so a restarted controller plans exactly what the last one wrote.
Domains that wait for a channel are served in the order they came to the clique, each taking the
lowest free channel; channel 0 is never given. A domain came when its first claim there was
allocated. The claim's allocation time has whole seconds only: claims of one second are ordered by
the moment the controller's claim watch saw them (the watch delivers in the order the API server
stored), so that two jobs submitted within one second are not ordered by their random UIDs. The
domain's object records that moment (`queuedAt`), so a restarted controller keeps the order. A domain's
object goes (and its channel back to the pool) only when none of its claims is allocated in that
clique any more.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from computedomain.api import names
from computedomain.objects import Object

FIRST_CHANNEL = 1


@dataclass(frozen=True, slots=True)
class ChannelClaim:
    """What the channel planner reads of one allocated workload claim of a domain."""

    domain: str
    namespace: str
    node: str
    # RFC 3339 times; allocated_at is "" where the API server did not record it.
    allocated_at: str
    created: str
    uid: str
    # When the controller's watch saw the allocation (`stamp`), which orders the claims of one
    # second; "" for one it found in a first list.
    seen: str = ""

    def order(self) -> tuple[str, str, str, str]:
        """Queue position: allocation time (creation time where unknown), when the watch saw it,
        creation time, UID."""
        return (self.allocated_at or self.created, self.seen, self.created, self.uid)


@dataclass(frozen=True, slots=True)
class Holding:
    """One `<domain UID>.<clique ID>` object and the channel it holds, if any."""

    domain: str
    clique: str
    channel: int | None
    # Its queue position, `queuedAt` (see `stamp`); "" in an object written before the field existed.
    queued: str = ""
    # The nodes of the clique its domain's claims were allocated on when it was last written.
    nodes: tuple[str, ...] = ()


def holding_of(obj: Object) -> Holding | None:
    """The holding an object of ours records (None for one without both labels)."""
    labels = obj.get("metadata", {}).get("labels") or {}
    domain, clique = labels.get(names.DOMAIN_LABEL), labels.get(names.CLIQUE_LABEL)
    if not domain or not clique:
        return None
    channel = obj.get("channel")
    queued = obj.get("queuedAt")
    nodes = obj.get("nodes")
    return Holding(
        str(domain),
        str(clique),
        channel if isinstance(channel, int) else None,
        queued if isinstance(queued, str) else "",
        tuple(str(n) for n in nodes) if isinstance(nodes, list) else (),
    )


def stamp(moment: datetime) -> str:
    """`queuedAt` for a moment: RFC 3339 in UTC with microseconds, so that stamps sort as text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class CliqueChannels:
    """The decision for one clique: each domain's channel, and the domains that wait, in queue order."""

    channels: dict[str, int] = field(default_factory=dict)
    waiting: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChannelPlan:
    """One domain's part of the pool."""

    # Clique ID -> the channel the domain holds there (kept or newly given).
    channels: dict[str, int] = field(default_factory=dict)
    # Cliques where the domain has claims but waits for a free channel, sorted.
    waiting: tuple[str, ...] = ()
    # Clique ID -> the nodes of that clique (or that left it) where the domain's claims are, for each
    # clique of `channels` and `waiting`: recorded in its object, so that a node that leaves the
    # clique keeps the channel held, even across a restart, until the claims on it go.
    clique_nodes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Clique ID -> when the domain came there (`queuedAt`; "" where unknown), for each clique of
    # `channels` and `waiting`: what its object records, else when the watch saw its first claim.
    queued: dict[str, str] = field(default_factory=dict)
    # Cliques whose object goes: none of the domain's claims is allocated there any more.
    release: tuple[str, ...] = ()
    # Node -> its clique ("" without an NVLink fabric), for every node the domain's claims landed on.
    nodes: dict[str, str] = field(default_factory=dict)


def queues(
    claims: Iterable[ChannelClaim],
    node_cliques: Mapping[str, str],
    eligible: Mapping[str, str],
    holdings: Iterable[Holding] = (),
) -> dict[str, list[tuple[str, str]]]:
    """Clique -> the eligible domains (UID -> namespace) with a claim allocated there, in queue order,
    each with its `queuedAt` ("" where unknown).

    A domain's place is its first claim's there (`ChannelClaim.order`), with the moment its object
    records in place of the claim's own: a controller that found the claim in its first list did not
    see it come. Only claims in their domain's own namespace count (the plugin refuses the others),
    and only nodes with a clique: a node without an NVLink fabric has no IMEX peer to share memory
    with.
    """
    recorded = {(h.domain, h.clique): h.queued for h in holdings if h.queued}
    first: dict[str, dict[str, tuple[str, str, str, str]]] = defaultdict(dict)
    for claim in claims:
        clique = node_cliques.get(claim.node, "")
        if not clique or eligible.get(claim.domain) != claim.namespace:
            continue
        known = first[clique].get(claim.domain)
        if known is None or claim.order() < known:
            first[clique][claim.domain] = claim.order()
    result: dict[str, list[tuple[str, str]]] = {}
    for clique, domains in first.items():
        placed = sorted(
            ((at, recorded.get((uid, clique), seen), created, uid), uid)
            for uid, (at, seen, created, _) in domains.items()
        )
        result[clique] = [(uid, key[1]) for key, uid in placed]
    return result


def plan_clique(queue: Iterable[str], holdings: Iterable[Holding], channels: int) -> CliqueChannels:
    """Channels of one clique: holders keep theirs, then queued domains take the lowest free ones.

    `queue` is every domain that wants a channel in the clique, in order; `holdings` are the clique's
    objects. A holding outlives its domain's claims until its object is deleted, so its channel stays
    in use meanwhile (a process of that domain may still hold it). Should two objects ever name one
    channel, the first in the queue keeps it and the other waits: never two holders of one channel.
    """
    order = list(queue)
    position = {uid: index for index, uid in enumerate(order)}
    held: dict[int, str] = {}
    by_rank = sorted(
        (h for h in holdings if h.channel is not None and h.channel >= FIRST_CHANNEL),
        key=lambda h: (position.get(h.domain, len(order)), h.domain),
    )
    for holding in by_rank:
        assert holding.channel is not None
        held.setdefault(holding.channel, holding.domain)
    result = {uid: channel for channel, uid in held.items()}
    free = (channel for channel in range(FIRST_CHANNEL, channels) if channel not in held)
    waiting: list[str] = []
    for uid in order:
        if uid in result:
            continue
        channel = next(free, None)
        if channel is None:
            waiting.append(uid)
        else:
            result[uid] = channel
    return CliqueChannels(channels=result, waiting=tuple(waiting))


def plan_channels(
    domain: str,
    claims: Iterable[ChannelClaim],
    node_cliques: Mapping[str, str],
    holdings: Iterable[Holding],
    eligible: Mapping[str, str],
    channels: int,
    former_cliques: Mapping[str, str] | None = None,
) -> ChannelPlan:
    """One domain's channels, from every domain's allocated claims and every clique object.

    `claims` are the allocated workload claims of all domains, `node_cliques` maps nodes to their
    NVLink clique, `eligible` maps the domains that may take a channel (not being deleted, not
    refused) to their namespace, `channels` is the pool size (channels 1 to channels-1 are given).
    `former_cliques` maps nodes that left a clique (label removed, node deleted) to that clique, as
    this process saw them leave; the domain's objects add the nodes they recorded. A claim still
    allocated on such a node keeps the domain's channel in that clique, since its pods may still run.
    """
    claims = list(claims)
    holdings = list(holdings)
    by_clique: dict[str, list[Holding]] = defaultdict(list)
    for holding in holdings:
        by_clique[holding.clique].append(holding)
    own = [c for c in claims if c.domain == domain]
    nodes = {claim.node: node_cliques.get(claim.node, "") for claim in own}
    former = dict(former_cliques or {})
    for holding in holdings:
        if holding.domain == domain:
            for node in holding.nodes:
                if node_cliques.get(node, "") != holding.clique:
                    former.setdefault(node, holding.clique)
    wanted = queues(claims, node_cliques, eligible, holdings)
    given: dict[str, int] = {}
    waiting: list[str] = []
    queued: dict[str, str] = {}
    for clique in sorted({c for c in nodes.values() if c}):
        position = dict(wanted.get(clique, ()))
        if domain not in position:
            continue
        queued[clique] = position[domain]
        order = [uid for uid, _ in wanted[clique]]
        decided = plan_clique(order, by_clique.get(clique, ()), channels)
        if domain in decided.channels:
            given[clique] = decided.channels[domain]
        else:
            waiting.append(clique)
    in_use = set(nodes.values()) | {former.get(node, "") for node in nodes}
    clique_nodes = {
        clique: tuple(sorted(n for n, c in nodes.items() if clique in (c, former.get(n))))
        for clique in [*given, *waiting]
    }
    release = sorted(
        clique
        for clique, held in by_clique.items()
        if clique not in in_use and any(h.domain == domain for h in held)
    )
    return ChannelPlan(
        channels=given,
        waiting=tuple(waiting),
        queued=queued,
        release=tuple(release),
        nodes=nodes,
        clique_nodes=clique_nodes,
    )
