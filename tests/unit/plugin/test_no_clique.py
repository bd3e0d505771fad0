"""A channel claim on a node without an NVLink clique: prepared without a channel, and the pods told why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from computedomain.plugin.gate import clique_warning
from computedomain.plugin.kubelet.driver import ClaimRef
from support.pluginview import MemoryView, allocated_claim, channel_config, daemon_config, make_core

CLIQUE = "7d9c0f3e-1111-4222-8333-944455556666.3"


def ref(claim: dict[str, Any]) -> ClaimRef:
    meta = claim["metadata"]
    return ClaimRef(meta["namespace"], meta["name"], meta["uid"])


def test_a_node_with_a_clique_needs_no_warning() -> None:
    assert clique_warning("gb200-n01", CLIQUE) is None


def test_a_node_without_a_clique_says_what_is_missing_and_what_to_check() -> None:
    message = clique_warning("gb200-n01", "")
    assert message is not None
    assert "node gb200-n01 has no NVLink clique" in message
    assert "nvidia.com/gpu.clique label is missing or empty" in message
    assert "without an IMEX channel" in message
    assert "node agent" in message
    assert "fabric state" in message
    assert "computedomain-agent --once --no-kube" in message
    assert len(message) <= 1024  # an Event's message is cut there


async def test_channel_claim_without_clique_warns_every_pod_and_succeeds(tmp_path: Path) -> None:
    node = make_core(tmp_path, MemoryView(clique=""))
    domain = node.view.add_domain("team", "cd")
    node.view.set_ready(domain.uid)
    claim = node.view.add_claim(
        allocated_claim(
            "team", "c", "channel-0", channel_config(domain.uid), pods=(("w-0", "u0"), ("w-1", "u1"))
        )
    )

    outcome = (await node.core.prepare([ref(claim)]))[claim["metadata"]["uid"]]

    # NVIDIA's behaviour, kept: the pod starts, without a channel device.
    assert outcome.error == ""
    assert outcome.devices[0].cdi_device_ids == ()
    warnings = [e for e in node.view.events if e["reason"] == "NoNVLinkClique"]
    assert {(e["involvedObject"]["name"], e["involvedObject"]["uid"]) for e in warnings} == {
        ("w-0", "u0"),
        ("w-1", "u1"),
    }
    assert {e["type"] for e in warnings} == {"Warning"}
    assert all(e["metadata"]["namespace"] == "team" for e in warnings)
    assert all("node node-a has no NVLink clique" in e["message"] for e in warnings)

    # Answered from the checkpoint the second time: the pods are not told again.
    await node.core.prepare([ref(claim)])
    assert len([e for e in node.view.events if e["reason"] == "NoNVLinkClique"]) == 2


@pytest.mark.parametrize("clique", [CLIQUE, ""])
async def test_no_warning_with_a_clique_nor_for_the_daemons_own_claim(tmp_path: Path, clique: str) -> None:
    node = make_core(tmp_path, MemoryView(clique=clique))
    domain = node.view.add_domain("team", "cd")
    node.view.set_ready(domain.uid)
    claims = [
        node.view.add_claim(
            allocated_claim(
                "computedomain-system", "d", "daemon-0", daemon_config(domain.uid), request="daemon"
            )
        )
    ]
    if clique:
        claims.append(
            node.view.add_claim(allocated_claim("team", "c", "channel-0", channel_config(domain.uid)))
        )

    await node.core.prepare([ref(c) for c in claims])

    # Whatever the daemon's own claim gets (that depends on the node's driver files), it is no
    # workload's channel: only a channel claim on a node without a clique earns the warning.
    assert [e for e in node.view.events if e["reason"] == "NoNVLinkClique"] == []
