"""Clique mode's channel prepare: each domain's own channel, the wait for it, and what is refused."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from computedomain.api import names
from computedomain.plugin.channels import (
    PREPARE_ANNOTATION,
    Assignment,
    assignment,
    channel_holder,
    prepare_mark,
    waiting_reason,
)
from computedomain.plugin.checkpoint import ClaimRecord
from computedomain.plugin.claimdevice import ClaimDevice
from computedomain.plugin.kubelet.driver import ClaimRef
from support.plugindriver import install_imex_tools
from support.pluginview import (
    MemoryChannels,
    MemoryView,
    Node,
    allocated_claim,
    channel_config,
    daemon_config,
    make_core,
)

CLIQUE = "cluster-a.1"


class RecordingChannels(MemoryChannels):
    """`MemoryChannels` whose objects have UIDs, with the prepare's write applied as the API server
    applies its JSON patch: only to the object read, while it holds the same channel."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: list[tuple[str, str, str]] = []
        # Runs between a prepare's read and its write: what the controller does meanwhile.
        self.before_write: Callable[[str], None] | None = None

    def assign(self, domain_uid: str, clique: str, channel: int | None) -> None:
        super().assign(domain_uid, clique, channel)
        self.cliques[names.clique_name(domain_uid, clique)]["metadata"]["uid"] = str(uuid.uuid4())

    def release(self, domain_uid: str, clique: str) -> None:
        del self.cliques[names.clique_name(domain_uid, clique)]

    async def record_prepare(self, obj: Mapping[str, Any], node: str, claim_uid: str) -> str | None:
        name = obj["metadata"]["name"]
        if self.before_write is not None:
            self.before_write(name)
        live = self.cliques.get(name)
        if live is None:
            return "the controller deleted it"
        if live["metadata"].get("uid") != obj["metadata"]["uid"] or live.get("channel") != obj["channel"]:
            return "it was replaced or its channel changed"
        live["metadata"].setdefault("annotations", {})[PREPARE_ANNOTATION] = f"{node}/{claim_uid}"
        self.marks.append((name, node, claim_uid))
        return None


@pytest.fixture
def channels() -> RecordingChannels:
    return RecordingChannels()


@pytest.fixture
def node(tmp_path: Path, channels: MemoryChannels) -> Node:
    return make_core(tmp_path, MemoryView(clique=CLIQUE), channels=channels)


def ref(claim: dict[str, Any]) -> ClaimRef:
    meta = claim["metadata"]
    return ClaimRef(meta["namespace"], meta["name"], meta["uid"])


def uid(claim: dict[str, Any]) -> str:
    return str(claim["metadata"]["uid"])


def workload(node: Node, namespace: str, name: str, domain_uid: str, **config: Any) -> dict[str, Any]:
    return node.view.add_claim(
        allocated_claim(
            namespace,
            name,
            "channel",
            channel_config(domain_uid, **config),
            pods=((f"{name}-pod", f"{name}-pod-uid"),),
        )
    )


def channel_nodes(node: Node, claim: dict[str, Any]) -> list[dict[str, Any]]:
    [device] = node.spec(claim)["devices"]
    assert device["name"] == f"{uid(claim)}-channel"
    nodes: list[dict[str, Any]] = device["containerEdits"]["deviceNodes"]
    return nodes


# --- pure parts -------------------------------------------------------------------------------------


def test_an_assignment_is_read_from_the_clique_object() -> None:
    assert assignment(None) == Assignment(exists=False, channel=None)
    assert assignment({"daemons": []}) == Assignment(exists=True, channel=None)
    assert assignment({"channel": 7}) == Assignment(exists=True, channel=7)
    assert assignment({"channel": 2047}).channel == 2047
    for broken in (0, 2048, "7", True):
        assert assignment({"channel": broken}) == Assignment(exists=True, channel=None, invalid=broken)


def test_the_waiting_reason_says_what_is_missing() -> None:
    name = "uid.clique"
    assert "has not made ComputeDomainClique uid.clique yet" in waiting_reason(
        name, Assignment(False, None), True, "n1"
    )
    assert "no channel is free in the clique yet" in waiting_reason(name, Assignment(True, None), True, "n1")
    assert "IMEX daemon on node n1 is not ready" in waiting_reason(name, Assignment(True, 4), False, "n1")
    assert "holds channel 0, which is not a channel between 1 and 2047" in waiting_reason(
        name, Assignment(True, None, 0), True, "n1"
    )


def test_a_channel_is_held_only_by_claims_of_another_domain() -> None:
    device = ClaimDevice("channel", "n1", "channel", "channel", "domain-a", channel=5)
    record = ClaimRecord("claim-a", "team", "a", "PrepareStarted", 0.0, (device,))
    assert channel_holder([record], "claim-b", "domain-b", 5) == record
    assert channel_holder([record], "claim-b", "domain-a", 5) is None
    assert channel_holder([record], "claim-b", "domain-b", 6) is None
    assert channel_holder([record], "claim-a", "domain-b", 5) is None


def test_the_prepare_mark_tests_the_object_read_and_sets_the_annotation() -> None:
    obj = {"metadata": {"name": "d.c", "uid": "u-1"}, "channel": 5}
    tests = [
        {"op": "test", "path": "/metadata/uid", "value": "u-1"},
        {"op": "test", "path": "/channel", "value": 5},
    ]
    assert prepare_mark(obj, "n1", "claim-1", "T") == [
        *tests,
        {"op": "add", "path": "/metadata/annotations", "value": {PREPARE_ANNOTATION: "n1/claim-1 T"}},
    ]
    obj["metadata"]["annotations"] = {"other": "kept"}
    assert prepare_mark(obj, "n1", "claim-1", "T") == [
        *tests,
        {
            "op": "add",
            "path": "/metadata/annotations/resource.nvidia.com~1lastPrepare",
            "value": "n1/claim-1 T",
        },
    ]


# --- prepare ----------------------------------------------------------------------------------------


async def test_a_prepare_writes_to_the_object_it_read(node: Node, channels: RecordingChannels) -> None:
    domain = node.view.add_domain("team", "cd")
    channels.assign(domain.uid, CLIQUE, 5)
    claim = workload(node, "team", "job", domain.uid)

    assert (await node.core.prepare([ref(claim)]))[uid(claim)].error == ""

    name = f"{domain.uid}.{CLIQUE}"
    assert channels.marks == [(name, "node-a", uid(claim))]
    assert channels.cliques[name]["metadata"]["annotations"] == {PREPARE_ANNOTATION: f"node-a/{uid(claim)}"}


async def test_a_channel_released_between_read_and_write_prepares_nothing(
    node: Node, channels: RecordingChannels
) -> None:
    d = node.view.add_domain("team-d", "cd")
    e = node.view.add_domain("team-e", "cd")
    channels.assign(d.uid, CLIQUE, 5)
    claim_d = workload(node, "team-d", "job-d", d.uid)
    claim_e = workload(node, "team-e", "job-e", e.uid)

    def release_to_e(name: str) -> None:
        # The controller, not yet aware of the claim, frees D's channel and gives it to E.
        channels.before_write = None
        channels.release(d.uid, CLIQUE)
        channels.assign(e.uid, CLIQUE, 5)

    channels.before_write = release_to_e
    refused = (await node.core.prepare([ref(claim_d)]))[uid(claim_d)]

    assert f"channel 5 of ComputeDomainClique {d.uid}.{CLIQUE} was released while this prepare ran" in (
        refused.error
    )
    assert "the controller deleted it" in refused.error
    assert not node.specs.path(uid(claim_d)).exists()
    assert [dev.channel for dev in node.checkpoint.claims[uid(claim_d)].devices] == [None]
    # This node no longer holds channel 5 for D: E's claim gets it here.
    assert (await node.core.prepare([ref(claim_e)]))[uid(claim_e)].error == ""
    assert channel_nodes(node, claim_e)[0]["minor"] == 5


async def test_a_channel_that_changed_between_read_and_write_prepares_nothing(
    node: Node, channels: RecordingChannels
) -> None:
    domain = node.view.add_domain("team", "cd")
    channels.assign(domain.uid, CLIQUE, 5)
    claim = workload(node, "team", "job", domain.uid)
    channels.before_write = lambda _name: channels.assign(domain.uid, CLIQUE, 6)

    refused = (await node.core.prepare([ref(claim)]))[uid(claim)]

    assert "it was replaced or its channel changed" in refused.error
    assert not node.specs.path(uid(claim)).exists()
    channels.before_write = None
    assert (await node.core.prepare([ref(claim)]))[uid(claim)].error == ""
    assert channel_nodes(node, claim)[0]["minor"] == 6


async def test_a_source_that_cannot_write_prepares_no_channel(tmp_path: Path) -> None:
    channels = MemoryChannels()
    node = make_core(tmp_path, MemoryView(clique=CLIQUE), channels=channels)
    domain = node.view.add_domain("team", "cd")
    channels.assign(domain.uid, CLIQUE, 5)
    claim = workload(node, "team", "job", domain.uid)

    refused = (await node.core.prepare([ref(claim)]))[uid(claim)]

    assert f"this plugin cannot write ComputeDomainClique {domain.uid}.{CLIQUE}" in refused.error
    assert not node.specs.path(uid(claim)).exists()


async def test_two_domains_on_one_node_get_exactly_their_own_channels(
    node: Node, channels: MemoryChannels
) -> None:
    a = node.view.add_domain("team-a", "cd")
    b = node.view.add_domain("team-b", "cd")
    channels.assign(a.uid, CLIQUE, 5)
    channels.assign(b.uid, CLIQUE, 9)
    claim_a = workload(node, "team-a", "job-a", a.uid)
    claim_b = workload(node, "team-b", "job-b", b.uid)

    outcomes = await node.core.prepare([ref(claim_a), ref(claim_b)])

    assert {key: o.error for key, o in outcomes.items()} == {uid(claim_a): "", uid(claim_b): ""}
    for claim, channel in ((claim_a, 5), (claim_b, 9)):
        assert channel_nodes(node, claim) == [
            {
                "path": f"/dev/nvidia-caps-imex-channels/channel{channel}",
                "type": "c",
                "major": 234,
                "minor": channel,
                "fileMode": 0o666,
            }
        ]
        [device] = outcomes[uid(claim)].devices
        assert device.cdi_device_ids == (f"k8s.compute-domain.nvidia.com/claim={uid(claim)}-channel",)
        [recorded] = node.checkpoint.claims[uid(claim)].devices
        assert recorded.channel == channel
    assert sorted(channels.reads) == sorted([f"{a.uid}.{CLIQUE}", f"{b.uid}.{CLIQUE}"])
    # The domain daemon gate of domain mode is not asked: the clique's daemon serves every domain.
    assert node.view.ready == set()


async def test_pods_of_one_domain_share_its_channel_on_a_node(node: Node, channels: MemoryChannels) -> None:
    domain = node.view.add_domain("team", "cd")
    channels.assign(domain.uid, CLIQUE, 3)
    first = workload(node, "team", "job-0", domain.uid)
    second = workload(node, "team", "job-1", domain.uid)

    outcomes = await node.core.prepare([ref(first), ref(second)])

    assert [o.error for o in outcomes.values()] == ["", ""]
    assert channel_nodes(node, first)[0]["minor"] == channel_nodes(node, second)[0]["minor"] == 3


async def test_a_claim_waits_for_its_channel_and_goes_on_once_it_is_assigned(
    node: Node, channels: MemoryChannels
) -> None:
    domain = node.view.add_domain("team", "cd")
    channels.assign(domain.uid, CLIQUE, None)
    claim = workload(node, "team", "job", domain.uid)

    prepare = asyncio.create_task(node.core.prepare([ref(claim)]))
    await asyncio.sleep(0.5)
    assert not prepare.done()
    channels.assign(domain.uid, CLIQUE, 12)
    outcome = (await asyncio.wait_for(prepare, 5))[uid(claim)]

    assert outcome.error == ""
    assert channel_nodes(node, claim)[0]["path"] == "/dev/nvidia-caps-imex-channels/channel12"
    waiting = [e for e in node.view.events if e["reason"] == "WaitingForIMEXChannel"]
    assert waiting, node.view.events
    assert waiting[0]["type"] == "Normal"
    assert waiting[0]["message"].startswith(
        f"waiting for an IMEX channel of clique {CLIQUE}: no channel is free"
    )
    assert waiting[0]["involvedObject"]["name"] == "job-pod"


async def test_a_claim_without_a_channel_by_the_deadline_is_retried_by_the_kubelet(
    tmp_path: Path, channels: MemoryChannels
) -> None:
    node = make_core(tmp_path, MemoryView(clique=CLIQUE), wait=0.6, channels=channels)
    domain = node.view.add_domain("team", "cd")
    claim = workload(node, "team", "job", domain.uid)

    outcome = (await node.core.prepare([ref(claim)]))[uid(claim)]

    assert f"no IMEX channel of clique {CLIQUE} after 1s" in outcome.error
    assert f"has not made ComputeDomainClique {domain.uid}.{CLIQUE} yet" in outcome.error
    assert not node.specs.path(uid(claim)).exists()
    [warning] = [e for e in node.view.events if e["type"] == "Warning"]
    assert warning["reason"] == "IMEXChannelNotReady"

    channels.assign(domain.uid, CLIQUE, 2)
    again = (await node.core.prepare([ref(claim)]))[uid(claim)]
    assert again.error == ""
    assert channel_nodes(node, claim)[0]["minor"] == 2


async def test_the_clique_daemon_on_the_node_gates_the_channel(node: Node, channels: MemoryChannels) -> None:
    channels.set_daemon_ready(False)
    domain = node.view.add_domain("team", "cd")
    channels.assign(domain.uid, CLIQUE, 4)
    claim = workload(node, "team", "job", domain.uid)

    prepare = asyncio.create_task(node.core.prepare([ref(claim)]))
    await asyncio.sleep(0.3)
    assert not prepare.done()
    channels.set_daemon_ready(True)
    outcome = (await asyncio.wait_for(prepare, 2))[uid(claim)]

    assert outcome.error == ""
    messages = [e["message"] for e in node.view.events if e["reason"] == "WaitingForIMEXChannel"]
    assert any("the clique's IMEX daemon on node node-a is not ready" in m for m in messages), messages


async def test_a_channel_held_by_another_domain_on_the_node_is_refused(
    node: Node, channels: MemoryChannels
) -> None:
    a = node.view.add_domain("team-a", "cd")
    b = node.view.add_domain("team-b", "cd")
    channels.assign(a.uid, CLIQUE, 5)
    # What only a fault elsewhere can bring: the other domain given the same channel.
    channels.assign(b.uid, CLIQUE, 5)
    claim_a = workload(node, "team-a", "job-a", a.uid)
    claim_b = workload(node, "team-b", "job-b", b.uid)
    assert (await node.core.prepare([ref(claim_a)]))[uid(claim_a)].error == ""

    refused = (await node.core.prepare([ref(claim_b)]))[uid(claim_b)]

    assert "IMEX channel 5 is already held on this node by ResourceClaim team-a/job-a" in refused.error
    assert a.uid in refused.error
    assert not node.specs.path(uid(claim_b)).exists()
    assert [d.channel for d in node.checkpoint.claims[uid(claim_b)].devices] == [None]

    await node.core.unprepare([ref(claim_a)])
    assert (await node.core.prepare([ref(claim_b)]))[uid(claim_b)].error == ""
    assert channel_nodes(node, claim_b)[0]["minor"] == 5


async def test_allocation_mode_all_is_refused(node: Node, channels: MemoryChannels) -> None:
    domain = node.view.add_domain("team", "cd")
    channels.assign(domain.uid, CLIQUE, 5)
    claim = workload(node, "team", "job", domain.uid, mode="All")

    outcome = (await node.core.prepare([ref(claim)]))[uid(claim)]

    assert "allocationMode All is refused in clique mode" in outcome.error
    assert not node.specs.path(uid(claim)).exists()
    assert channels.reads == []


async def test_a_node_without_a_clique_gets_no_channel(tmp_path: Path, channels: MemoryChannels) -> None:
    node = make_core(tmp_path, MemoryView(clique=""), channels=channels)
    domain = node.view.add_domain("team", "cd")
    claim = workload(node, "team", "job", domain.uid)

    outcome = (await node.core.prepare([ref(claim)]))[uid(claim)]

    assert "node node-a has no NVLink clique" in outcome.error
    assert "in clique mode a ComputeDomain's IMEX channel is given per clique" in outcome.error
    assert not node.specs.path(uid(claim)).exists()


async def test_an_unprepare_ends_the_wait(node: Node) -> None:
    domain = node.view.add_domain("team", "cd")
    claim = workload(node, "team", "job", domain.uid)

    prepare = asyncio.create_task(node.core.prepare([ref(claim)]))
    await asyncio.sleep(0.3)
    assert await node.core.unprepare([ref(claim)]) == {uid(claim): ""}
    outcome = (await asyncio.wait_for(prepare, 3))[uid(claim)]

    assert "unprepared while it waited for an IMEX channel" in outcome.error
    assert uid(claim) not in node.checkpoint.claims


def test_the_pool_names_the_shared_channel_device(node: Node) -> None:
    assert node.core.devices() == ("channel", "daemon-0")


async def test_a_clique_daemon_claim_gets_the_clique_without_a_domain(node: Node) -> None:
    install_imex_tools(node.root)
    claim = node.view.add_claim(
        allocated_claim(
            "computedomain-system", "daemon", "daemon-0", daemon_config("clique"), request="daemon"
        )
    )

    outcome = (await node.core.prepare([ref(claim)]))[uid(claim)]

    assert outcome.error == ""
    [device] = node.spec(claim)["devices"]
    env = device["containerEdits"]["env"]
    assert f"CLIQUE_ID={CLIQUE}" in env
    assert "IMEX_CONFIG_DIR=/imexd" in env
    assert not any(e.startswith("COMPUTE_DOMAIN_") for e in env)
    assert node.view.domain_reads == []
    assert (node.root / "state" / "domains" / "clique").is_dir()


async def test_in_domain_mode_a_clique_daemon_claim_names_no_domain(tmp_path: Path) -> None:
    node = make_core(tmp_path, MemoryView(clique=CLIQUE))
    claim = node.view.add_claim(
        allocated_claim(
            "computedomain-system", "daemon", "daemon-0", daemon_config("clique"), request="daemon"
        )
    )

    outcome = (await node.core.prepare([ref(claim)]))[uid(claim)]

    assert "no ComputeDomain has that UID" in outcome.error
