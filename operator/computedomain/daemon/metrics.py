"""Prometheus metrics of the IMEX daemon wrapper (served on /metrics by `computedomain.endpoints`).

IMEX's own view of its peers (which of them it is connected to) is not read: `nvidia-imex-ctl -q`
answers only READY or not. What the daemon knows is the peer list it gave IMEX and what the
controller says of each peer's daemon.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge

from computedomain.daemon.config import DaemonEntry

IMEX_RUNNING = Gauge("computedomain_daemon_imex_running", "1 while an nvidia-imex process runs.")
IMEX_READY = Gauge(
    "computedomain_daemon_imex_ready",
    "1 while the local IMEX daemon answers READY (or the node has no NVLink fabric and needs none).",
)
IMEX_RESTARTS = Counter(
    "computedomain_daemon_imex_restarts_total",
    "Starts of nvidia-imex after the first, by cause: exited (it ended by itself) or reconfigured "
    "(this node's index in the clique changed).",
    ["cause"],
)
IMEX_RELOADS = Counter(
    "computedomain_daemon_imex_reloads_total", "Peer lists nvidia-imex was told to reload (SIGUSR1)."
)
PEERS = Gauge(
    "computedomain_daemon_peers",
    "IMEX peers of this daemon's clique (itself included) that the controller listed with an index "
    "and an IP address.",
)
PEERS_READY = Gauge(
    "computedomain_daemon_peers_ready",
    "Of those peers, the ones whose IMEX daemon the controller says is Ready.",
)


def peer_counts(daemons: Iterable[DaemonEntry], clique_id: str) -> tuple[int, int]:
    """(known, ready): the daemons of `clique_id` that IMEX can address, and those of them Ready."""
    known = [d for d in daemons if d.clique_id == clique_id and d.index is not None and d.ip_address]
    return len(known), sum(1 for d in known if d.status == "Ready")


def count_peers(daemons: Iterable[DaemonEntry], clique_id: str) -> None:
    """Set the peer gauges from the clique's latest daemon list."""
    known, ready = peer_counts(daemons, clique_id)
    PEERS.set(known)
    PEERS_READY.set(ready)
