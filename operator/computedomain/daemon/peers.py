"""From the controller's clique bookkeeping to what the daemon must do with IMEX.

`PeerTracker.on_clique_change` is a plain state machine (no I/O): it receives the clique's daemon list and
returns the actions to take. `apply_actions` carries them out against an IMEX supervisor and the hosts file.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from computedomain.daemon.config import DaemonEntry, HostEntry, PeerConfigError, own_entry, peer_hosts
from computedomain.daemon.files import update_hosts_file

log = logging.getLogger(__name__)


class ActionKind(enum.Enum):
    """What to do with IMEX after writing the hosts block."""

    START = "start"
    RELOAD = "reload"
    RESTART = "restart"


@dataclass(frozen=True)
class PeerUpdate:
    """Rewrite the hosts block with `hosts`, then `imex` (start, reload or restart IMEX)."""

    hosts: tuple[HostEntry, ...]
    imex: ActionKind


class Supervisor(Protocol):
    """The part of the IMEX supervisor the peer handling drives."""

    async def ensure_started(self) -> bool: ...

    async def reload(self) -> bool: ...

    async def restart(self) -> None: ...


class PeerTracker:
    """Remembers what IMEX was last given and decides what a new daemon list requires.

    Nothing happens until the controller lists this node with an index and this pod's IP. The first such
    list starts IMEX; a changed mapping reloads it (SIGUSR1); a changed own index restarts it, because
    IMEX learns its own identity only at start.
    """

    def __init__(self, node_name: str, pod_ip: str, clique_id: str, max_nodes: int) -> None:
        self.node_name = node_name
        self.pod_ip = pod_ip
        self.clique_id = clique_id
        self.max_nodes = max_nodes
        self.hosts: tuple[HostEntry, ...] | None = None
        self.index: int | None = None

    @property
    def started(self) -> bool:
        """Whether an update that starts IMEX was already handed out."""
        return self.hosts is not None

    def on_clique_change(self, daemons: Sequence[DaemonEntry]) -> PeerUpdate | None:
        """Return the update the new daemon list requires, or None when there is nothing to do."""
        own = own_entry(daemons, self.node_name, self.clique_id)
        if own is None or own.index is None:
            log.info(
                "waiting for the controller to assign node %s an index in clique %s",
                self.node_name,
                self.clique_id,
            )
            return None
        if own.ip_address != self.pod_ip:
            log.info(
                "waiting for the controller to record this pod's IP %s for node %s (clique lists %r)",
                self.pod_ip,
                self.node_name,
                own.ip_address,
            )
            return None
        try:
            hosts = peer_hosts(daemons, self.clique_id, self.max_nodes)
        except PeerConfigError as err:
            log.error("ignoring an unusable daemon list for clique %s: %s", self.clique_id, err)
            return None
        if self.hosts is None:
            kind = ActionKind.START
        elif own.index != self.index:
            kind = ActionKind.RESTART
        elif hosts != self.hosts:
            kind = ActionKind.RELOAD
        else:
            return None
        previous_index = self.index
        self.hosts = hosts
        self.index = own.index
        peers = ", ".join(f"{entry.name}={entry.ip_address}" for entry in hosts)
        if kind is ActionKind.RESTART:
            log.info("own index changed from %s to %d; peers: %s", previous_index, own.index, peers)
        else:
            log.info("own index %d, %d peer(s): %s", own.index, len(hosts), peers)
        return PeerUpdate(hosts=hosts, imex=kind)


async def apply_update(update: PeerUpdate, supervisor: Supervisor, hosts_file: Path) -> None:
    """Write the hosts block, then start, reload or restart IMEX as `update` says."""
    update_hosts_file(hosts_file, update.hosts)
    if update.imex is ActionKind.START:
        await supervisor.ensure_started()
    elif update.imex is ActionKind.RESTART:
        await supervisor.restart()
    elif not await supervisor.reload():
        # The watchdog is between a crash and a restart; a start reads the new mapping anyway.
        await supervisor.ensure_started()
