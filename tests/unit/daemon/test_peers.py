"""Peer handling: from the controller's daemon list to start / reload / restart of IMEX (fake supervisor)."""

from __future__ import annotations

from pathlib import Path

import pytest

from computedomain.daemon.config import DaemonEntry, HostEntry, hosts_in_file
from computedomain.daemon.peers import ActionKind, PeerTracker, PeerUpdate, apply_update

CLIQUE = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22.32766"
OTHER = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22.1"
NODE = "gb200-n01"
POD_IP = "10.244.3.17"


def me(index: int | None, ip: str = POD_IP) -> DaemonEntry:
    return DaemonEntry(node_name=NODE, ip_address=ip, clique_id=CLIQUE, index=index)


def peer(n: int, index: int | None, ip: str | None = None, clique: str = CLIQUE) -> DaemonEntry:
    return DaemonEntry(
        node_name=f"gb200-n{n:02d}", ip_address=ip or f"10.244.{n}.9", clique_id=clique, index=index
    )


@pytest.fixture
def tracker() -> PeerTracker:
    return PeerTracker(NODE, POD_IP, CLIQUE, max_nodes=18)


class FakeSupervisor:
    """Records what the peer handling asks of IMEX."""

    def __init__(self, running: bool = False) -> None:
        self.calls: list[str] = []
        self.running = running

    async def ensure_started(self) -> bool:
        self.calls.append("ensure_started")
        started = not self.running
        self.running = True
        return started

    async def reload(self) -> bool:
        self.calls.append("reload")
        return self.running

    async def restart(self) -> None:
        self.calls.append("restart")
        self.running = True


@pytest.mark.parametrize(
    "daemons",
    [
        [],
        [peer(2, 0)],
        [me(None), peer(2, 0)],
        [DaemonEntry(NODE, POD_IP, OTHER, 0)],
    ],
    ids=["empty", "not-listed", "no-index", "other-clique"],
)
def test_nothing_to_do_until_this_node_has_an_index(tracker: PeerTracker, daemons: list[DaemonEntry]) -> None:
    assert tracker.on_clique_change(daemons) is None
    assert not tracker.started


def test_waits_for_the_controller_to_record_this_pods_ip(tracker: PeerTracker) -> None:
    assert tracker.on_clique_change([me(0, ip="10.244.99.1")]) is None
    update = tracker.on_clique_change([me(0)])
    assert update == PeerUpdate(hosts=(HostEntry(0, POD_IP),), imex=ActionKind.START)


def test_first_assignment_starts_imex_without_waiting_for_peers(tracker: PeerTracker) -> None:
    update = tracker.on_clique_change([me(1), peer(2, None)])
    assert update == PeerUpdate(hosts=(HostEntry(1, POD_IP),), imex=ActionKind.START)
    assert tracker.index == 1


def test_same_list_again_does_nothing(tracker: PeerTracker) -> None:
    daemons = [me(0), peer(2, 1)]
    assert tracker.on_clique_change(daemons) is not None
    assert tracker.on_clique_change(list(reversed(daemons))) is None


def test_status_change_alone_does_nothing(tracker: PeerTracker) -> None:
    tracker.on_clique_change([me(0), peer(2, 1)])
    ready = DaemonEntry("gb200-n02", "10.244.2.9", CLIQUE, 1, status="Ready")
    assert tracker.on_clique_change([me(0), ready]) is None


@pytest.mark.parametrize(
    "changed",
    [
        [me(0), peer(2, 1), peer(3, 2)],
        [me(0), peer(2, 1, ip="10.244.2.77")],
        [me(0)],
    ],
    ids=["peer-added", "peer-ip-changed", "peer-removed"],
)
def test_changed_mapping_reloads(tracker: PeerTracker, changed: list[DaemonEntry]) -> None:
    tracker.on_clique_change([me(0), peer(2, 1)])
    update = tracker.on_clique_change(changed)
    assert update is not None
    assert update.imex is ActionKind.RELOAD
    assert {entry.ip_address for entry in update.hosts} == {entry.ip_address for entry in changed}


def test_other_cliques_changes_are_ignored(tracker: PeerTracker) -> None:
    tracker.on_clique_change([me(0), peer(2, 1)])
    assert tracker.on_clique_change([me(0), peer(2, 1), peer(9, 2, clique=OTHER)]) is None


def test_own_index_change_restarts(tracker: PeerTracker) -> None:
    tracker.on_clique_change([me(0), peer(2, 1)])
    update = tracker.on_clique_change([me(3), peer(2, 1)])
    assert update == PeerUpdate(
        hosts=(HostEntry(1, "10.244.2.9"), HostEntry(3, POD_IP)), imex=ActionKind.RESTART
    )
    assert tracker.index == 3


def test_unusable_list_is_ignored_and_state_kept(tracker: PeerTracker) -> None:
    tracker.on_clique_change([me(0), peer(2, 1)])
    assert tracker.on_clique_change([me(0), peer(2, 1), peer(3, 1)]) is None
    assert tracker.on_clique_change([me(0), peer(2, 1), peer(3, 40)]) is None
    assert tracker.hosts == (HostEntry(0, POD_IP), HostEntry(1, "10.244.2.9"))
    update = tracker.on_clique_change([me(0), peer(2, 1), peer(3, 2)])
    assert update is not None
    assert update.imex is ActionKind.RELOAD


@pytest.mark.parametrize(
    ("kind", "running", "calls"),
    [
        (ActionKind.START, False, ["ensure_started"]),
        (ActionKind.RELOAD, True, ["reload"]),
        (ActionKind.RELOAD, False, ["reload", "ensure_started"]),
        (ActionKind.RESTART, True, ["restart"]),
    ],
)
async def test_apply_update_writes_hosts_then_drives_imex(
    tmp_path: Path, kind: ActionKind, running: bool, calls: list[str]
) -> None:
    hosts_file = tmp_path / "hosts"
    hosts_file.write_text("127.0.0.1\tlocalhost\n")
    supervisor = FakeSupervisor(running=running)
    hosts = (HostEntry(0, POD_IP), HostEntry(1, "10.244.2.9"))
    await apply_update(PeerUpdate(hosts=hosts, imex=kind), supervisor, hosts_file)
    assert supervisor.calls == calls
    text = hosts_file.read_text()
    assert text.startswith("127.0.0.1\tlocalhost\n")
    assert hosts_in_file(text) == hosts
