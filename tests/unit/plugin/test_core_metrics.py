"""The kubelet plugin's per-claim metrics: every refused claim is counted under the reason that names
its trouble, an internal failure as Internal, and each unprepare's time is observed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from computedomain.plugin.kubelet.driver import ClaimRef
from support.pluginview import MemoryView, Node, allocated_claim, channel_config, make_core

ERRORS = "computedomain_plugin_claim_errors_total"


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return make_core(tmp_path, MemoryView(), wait=0.2)


def ref(claim: dict[str, Any]) -> ClaimRef:
    meta = claim["metadata"]
    return ClaimRef(meta["namespace"], meta["name"], meta["uid"])


def errors(call: str = "prepare") -> dict[str, float]:
    """reason -> claims counted so far."""
    return {
        sample.labels["reason"]: sample.value
        for family in REGISTRY.collect()
        if family.name == ERRORS.removesuffix("_total")
        for sample in family.samples
        if sample.name == ERRORS and sample.labels["call"] == call
    }


def added(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {
        reason: after[reason] - before.get(reason, 0.0)
        for reason in after
        if after[reason] != before.get(reason)
    }


async def test_each_refusal_is_counted_under_its_reason(node: Node) -> None:
    domain = node.view.add_domain("team", "cd")
    unready = node.view.add_domain("team", "unready")
    node.view.set_ready(domain.uid)
    missing = node.view.add_claim(allocated_claim("team", "m", "channel-0", channel_config("0000-missing")))
    bare = node.view.add_claim(allocated_claim("team", "bare", "channel-0", None))
    replaced = node.view.add_claim(allocated_claim("team", "replaced", "channel-0", None))
    foreign = node.view.add_claim(allocated_claim("other", "f", "channel-0", channel_config(domain.uid)))
    waiting = node.view.add_claim(allocated_claim("team", "w", "channel-0", channel_config(unready.uid)))
    before = errors()

    outcomes = await node.core.prepare(
        [
            ref(missing),
            ref(bare),
            ClaimRef("team", "gone", "uid-gone"),
            ClaimRef("team", "replaced", "old-uid"),
            ref(foreign),
            ref(waiting),
        ]
    )

    assert all(outcome.error for outcome in outcomes.values()), outcomes
    assert replaced["metadata"]["uid"] != "old-uid"
    assert added(before, errors()) == {
        "DomainNotFound": 1,
        "InvalidClaim": 1,
        "ClaimNotFound": 1,
        "ClaimReplaced": 1,
        "DomainNamespace": 1,
        "DaemonNotReady": 1,
    }


async def test_a_taken_device_and_a_broken_prepare_are_counted(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    domain = node.view.add_domain("team", "cd")
    node.view.set_ready(domain.uid)
    holder = node.view.add_claim(allocated_claim("team", "a", "channel-0", channel_config(domain.uid)))
    other = node.view.add_claim(allocated_claim("team", "b", "channel-0", channel_config(domain.uid)))
    assert (await node.core.prepare([ref(holder)]))[holder["metadata"]["uid"]].error == ""
    before = errors()

    assert (await node.core.prepare([ref(other)]))[other["metadata"]["uid"]].error
    # A fault of the plugin itself, not of the claim: the CDI folder cannot be written.
    broken = node.view.add_claim(allocated_claim("team", "c", "channel-0", channel_config(domain.uid)))
    monkeypatch.setattr(node.core.specs, "write", _fail)
    await node.core.unprepare([ref(holder)])
    assert (await node.core.prepare([ref(broken)]))[broken["metadata"]["uid"]].error

    assert added(before, errors()) == {"Taken": 1, "Internal": 1}


def _fail(*_: Any) -> bool:
    raise OSError(30, "Read-only file system")


async def test_unprepare_time_is_observed_and_its_failure_counted(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    domain = node.view.add_domain("team", "cd")
    node.view.set_ready(domain.uid)
    claim = node.view.add_claim(allocated_claim("team", "a", "channel-0", channel_config(domain.uid)))
    assert (await node.core.prepare([ref(claim)]))[claim["metadata"]["uid"]].error == ""
    observed = REGISTRY.get_sample_value("computedomain_plugin_unprepare_seconds_count") or 0.0
    failed = errors("unprepare")

    assert await node.core.unprepare([ref(claim)]) == {claim["metadata"]["uid"]: ""}
    assert REGISTRY.get_sample_value("computedomain_plugin_unprepare_seconds_count") == observed + 1

    monkeypatch.setattr(node.core.specs, "remove", _fail)
    answer = await node.core.unprepare([ref(claim)])
    assert "unprepare of claim team/a failed" in answer[claim["metadata"]["uid"]]
    assert added(failed, errors("unprepare")) == {"Internal": 1}
    assert REGISTRY.get_sample_value("computedomain_plugin_unprepare_seconds_count") == observed + 1
