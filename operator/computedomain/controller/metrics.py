"""Prometheus metrics of the controller (served on /metrics by `computedomain.endpoints`)."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Metric
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from computedomain.controller.plan.channels import FIRST_CHANNEL, Holding

RECONCILES = Counter("computedomain_reconcile_total", "Reconciles of ComputeDomains, by result.", ["result"])
RECONCILE_SECONDS = Histogram(
    "computedomain_reconcile_duration_seconds",
    "Time one reconcile of one ComputeDomain took.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RECONCILE_ERRORS = Counter(
    "computedomain_reconcile_errors_total",
    "Reconciles that failed and will be retried, by reason.",
    ["reason"],
)
DOMAINS = Gauge("computedomain_domains", "ComputeDomains known to the controller, by status.", ["status"])
API_WRITES = Counter(
    "computedomain_api_writes_total", "Write requests sent to the API server, by verb.", ["verb"]
)
QUEUE_DEPTH = Gauge("computedomain_queue_depth", "ComputeDomains waiting to be reconciled.")
LEADER = Gauge("computedomain_leader", "1 while this replica holds the leader Lease.")
FORMATION_SECONDS = Histogram(
    "computedomain_domain_formation_seconds",
    "Seconds from a ComputeDomain's creation to the first status that says it is Ready with its "
    "nodes joined; once per domain, only for domains this process saw before they were.",
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)


def count_write(verb: str) -> None:
    """The API client's write hook: count one write request by its verb."""
    API_WRITES.labels(verb=verb).inc()


def formed(status: Mapping[str, Any]) -> bool:
    """Whether a domain's status says it formed: Ready with at least one node joined. A domain that
    awaits no node (numNodes 0) is Ready from the start, and that says nothing about its IMEX."""
    return status.get("status") == "Ready" and bool(status.get("joinedNodes"))


def seconds_since(timestamp: str, now: float) -> float | None:
    """Seconds from an RFC 3339 `timestamp` (creationTimestamp) to `now` (epoch seconds), not below
    zero (the API server's clock and ours may differ); None when it cannot be read."""
    try:
        then = datetime.datetime.fromisoformat(timestamp)
    except ValueError:
        return None
    if then.tzinfo is None:
        return None
    return max(0.0, now - then.timestamp())


class Formation:
    """Observes each domain's formation time (creation to `formed`) once per controller process.

    Only a domain this process first saw unformed is observed, when a status it renders is formed: a
    domain already formed when first seen (by a restarted controller, or a replica that just took
    the lease) formed earlier, at a time nobody recorded. A domain seen unformed after a restart is
    counted from its creation even if it had formed before (it lost a node meanwhile), as nothing
    on the object says so. Kept across leadership terms, so that a replica that leads again does
    not observe a domain twice; a deleted domain is forgotten.
    """

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self._settled: set[str] = set()

    def see(self, uid: str, created: str, before: bool, after: bool, now: float) -> float | None:
        """One status of the domain: `before` the live one was formed, `after` the one written
        now is; the seconds observed, or None when this is not the domain's formation."""
        if uid in self._settled:
            return None
        if before:
            self._settled.add(uid)
            return None
        if not after:
            return None
        self._settled.add(uid)
        seconds = seconds_since(created, now)
        if seconds is not None:
            self.histogram.observe(seconds)
        return seconds

    def forget(self, uid: str) -> None:
        """The domain is gone."""
        self._settled.discard(uid)


FORMATION = Formation(FORMATION_SECONDS)


class NotReadyClock(Collector):
    """`computedomain_domain_not_ready_seconds{reason}`: per reason of the Ready condition, how long
    the domain not Ready longest has been so, read at scrape time (one series per reason, not per
    domain: bounded however many domains there are).

    The time comes from the Ready condition's lastTransitionTime, so a controller that restarts or
    takes over the lease reports the same age as the last one; where the status has none, from the
    moment this process first saw the domain not Ready. Kept by the leader's reconciler, as the
    `computedomain_domains` gauge is, and cleared when its term ends.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        # UID -> (reason, since: epoch seconds) of every domain not Ready.
        self._since: dict[str, tuple[str, float]] = {}

    def see(self, uid: str, status: Mapping[str, Any] | None, now: float) -> None:
        """The domain's latest status; None: the domain is gone."""
        ready = next(
            (
                c
                for c in (status or {}).get("conditions") or []
                if isinstance(c, Mapping) and c.get("type") == "Ready"
            ),
            {},
        )
        if status is None or (status.get("status") == "Ready" and ready.get("status", "True") == "True"):
            self._since.pop(uid, None)
            return
        known = self._since.get(uid)
        age = seconds_since(str(ready.get("lastTransitionTime") or ""), now)
        since = now - age if age is not None else (known[1] if known is not None else now)
        self._since[uid] = (str(ready.get("reason") or "Unknown"), since)

    def clear(self) -> None:
        """The term ended: another replica reports the domains now."""
        self._since.clear()

    def collect(self) -> Iterable[Metric]:
        """One gauge family: the longest age per reason, no series while every domain is Ready."""
        family = GaugeMetricFamily(
            "computedomain_domain_not_ready_seconds",
            "Seconds the ComputeDomain not Ready longest has been so (since its Ready condition turned "
            "False), by the condition's reason; no series while every domain is Ready.",
            labels=["reason"],
        )
        oldest: dict[str, float] = {}
        for reason, since in self._since.values():
            oldest[reason] = min(since, oldest.get(reason, since))
        now = self.clock()
        for reason, since in sorted(oldest.items()):
            family.add_metric([reason], max(0.0, now - since))
        yield family


NOT_READY = NotReadyClock()
REGISTRY.register(NOT_READY)


# Per cached kind: (objects, encoded bytes). Set while leading (the caches live as long as a term).
CacheFigures = Callable[[], dict[str, tuple[int, int]]]


class CacheCollector(Collector):
    """`computedomain_cache_objects{kind}` and `computedomain_cache_bytes{kind}`, read at scrape time
    from counts the caches keep anyway (no walk over the objects)."""

    def __init__(self) -> None:
        self.figures: CacheFigures | None = None

    def collect(self) -> Iterable[Metric]:
        """The two gauge families, empty while no caches exist."""
        objects = GaugeMetricFamily(
            "computedomain_cache_objects",
            "Objects held in the controller's caches, by kind.",
            labels=["kind"],
        )
        size = GaugeMetricFamily(
            "computedomain_cache_bytes",
            "Bytes of the objects held in the controller's caches (as stored: compact JSON), by kind.",
            labels=["kind"],
        )
        for kind, (count, stored) in sorted((self.figures() if self.figures else {}).items()):
            objects.add_metric([kind], count)
            size.add_metric([kind], stored)
        yield objects
        yield size


CACHES = CacheCollector()
REGISTRY.register(CACHES)


# Per clique: (channels held, channels free, domains waiting for one).
PoolFigures = tuple[int, int, int]


@dataclass(frozen=True)
class PoolSource:
    """Clique mode, while leading: where the pool collector reads the pool at scrape time."""

    # Every clique object of every domain (channel None: the domain waits there).
    holdings: Callable[[], Iterable[Holding]]
    # Node name -> its NVLink clique: a clique that no domain uses yet is reported too, all free.
    node_cliques: Callable[[], Mapping[str, str]]
    # IMEX_CHANNELS: channels 1 to channels-1 are given.
    channels: int


def pool_figures(
    holdings: Iterable[Holding], cliques: Iterable[str], channels: int
) -> dict[str, PoolFigures]:
    """Clique -> (held, free, waiting), for `cliques` and every clique an object names.

    A channel counts once however many objects name it (the planner never gives one twice; a stale
    pair would otherwise show a pool more than full). A domain waits in a clique while its object
    there holds no channel: what the controller writes for a domain the pool cannot serve yet.
    """
    size = max(channels - FIRST_CHANNEL, 0)
    held: dict[str, set[int]] = {clique: set() for clique in cliques if clique}
    waiting: dict[str, set[str]] = {clique: set() for clique in held}
    for holding in holdings:
        taken = held.setdefault(holding.clique, set())
        waiters = waiting.setdefault(holding.clique, set())
        if holding.channel is None:
            waiters.add(holding.domain)
        elif FIRST_CHANNEL <= holding.channel < channels:
            taken.add(holding.channel)
    return {clique: (len(taken), size - len(taken), len(waiting[clique])) for clique, taken in held.items()}


class PoolCollector(Collector):
    """`computedomain_channel_pool_channels{clique,state}` (held, free) and
    `computedomain_channel_pool_waiting_domains{clique}`, computed at scrape time from the clique
    objects the leader caches anyway: one pass over them and the nodes, no request. Nothing is
    reported in domain mode, nor by a replica that does not lead."""

    def __init__(self) -> None:
        self.source: PoolSource | None = None

    def collect(self) -> Iterable[Metric]:
        """The two gauge families, empty without a source."""
        channels = GaugeMetricFamily(
            "computedomain_channel_pool_channels",
            "Clique mode: IMEX channels of each NVLink clique's pool, by state (held by a domain, free).",
            labels=["clique", "state"],
        )
        waiting = GaugeMetricFamily(
            "computedomain_channel_pool_waiting_domains",
            "Clique mode: ComputeDomains with claims in the clique that wait for a free channel.",
            labels=["clique"],
        )
        source = self.source
        if source is not None:
            figures = pool_figures(source.holdings(), source.node_cliques().values(), source.channels)
            for clique, (held, free, queued) in sorted(figures.items()):
                channels.add_metric([clique, "held"], held)
                channels.add_metric([clique, "free"], free)
                waiting.add_metric([clique], queued)
        yield channels
        yield waiting


POOL = PoolCollector()
REGISTRY.register(POOL)
