"""How the plugin's core finds the ComputeDomain a claim names: narrow reads on demand, a cache, no watch."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from computedomain.plugin.domains import DomainFinder, annotated_domain
from computedomain.plugin.kubelet.driver import ClaimRef
from computedomain.plugin.view import DomainRef
from support.plugindriver import install_imex_tools
from support.pluginview import (
    MemoryView,
    Node,
    allocated_claim,
    channel_config,
    daemon_config,
    domain_annotations,
    make_core,
)

OPERATOR_NAMESPACE = "computedomain-system"


@pytest.fixture
def node(tmp_path: Path) -> Node:
    made = make_core(tmp_path, MemoryView())
    install_imex_tools(tmp_path)
    return made


def ref(claim: dict[str, Any]) -> ClaimRef:
    meta = claim["metadata"]
    return ClaimRef(meta["namespace"], meta["name"], meta["uid"])


async def prepare(node: Node, *claims: dict[str, Any]) -> dict[str, str]:
    """Prepare the claims in one call; the error of each by claim name ('' when prepared)."""
    outcomes = await node.core.prepare([ref(c) for c in claims])
    return {c["metadata"]["name"]: outcomes[c["metadata"]["uid"]].error for c in claims}


def daemon_claim(domain: DomainRef, *, annotated: bool = True) -> dict[str, Any]:
    return allocated_claim(
        OPERATOR_NAMESPACE,
        f"daemon-{domain.name}",
        "daemon-0",
        daemon_config(domain.uid),
        request="daemon",
        domain=domain if annotated else None,
    )


async def test_a_channel_claims_domain_is_found_by_one_list_of_its_namespace(node: Node) -> None:
    node.view.add_domain("elsewhere", "cd")
    domain = node.view.add_domain("team", "cd")
    node.view.set_ready(domain.uid)
    claim = node.view.add_claim(allocated_claim("team", "c", "channel-0", channel_config(domain.uid)))

    assert await prepare(node, claim) == {"c": ""}
    assert node.view.domain_reads == [("list", "team")]


async def test_a_domain_of_another_namespace_is_refused_after_one_cluster_wide_list(node: Node) -> None:
    domain = node.view.add_domain("other", "cd")
    node.view.set_ready(domain.uid)
    claim = node.view.add_claim(allocated_claim("team", "c", "channel-0", channel_config(domain.uid)))

    errors = await prepare(node, claim)

    assert "ComputeDomain other/cd is in namespace other, not in the claim's namespace team" in errors["c"]
    assert node.view.domain_reads == [("list", "team"), ("search", domain.uid)]
    assert not node.specs.path(claim["metadata"]["uid"]).exists()


async def test_an_unknown_uid_is_refused_and_not_remembered(node: Node) -> None:
    node.view.add_domain("team", "cd")
    claim = node.view.add_claim(allocated_claim("team", "c", "channel-0", channel_config("0000-missing")))

    errors = await prepare(node, claim)

    assert "names ComputeDomain UID 0000-missing, and no ComputeDomain has that UID" in errors["c"]
    assert node.view.domain_reads == [("list", "team"), ("search", "0000-missing")]
    # The domain is created after all: the next prepare looks again and finds it.
    node.view.add_domain("team", "late", uid="0000-missing")
    node.view.set_ready("0000-missing")
    assert await prepare(node, claim) == {"c": ""}
    assert node.view.domain_reads[2:] == [("list", "team")]


async def test_a_daemon_claim_finds_its_domain_by_its_annotations_with_one_get(node: Node) -> None:
    domain = node.view.add_domain("team", "cd")
    claim = node.view.add_claim(daemon_claim(domain))

    assert await prepare(node, claim) == {"daemon-cd": ""}
    assert node.view.domain_reads == [("get", "team", "cd")]
    env = node.spec(claim)["devices"][0]["containerEdits"]["env"]
    assert "COMPUTE_DOMAIN_NAMESPACE=team" in env
    assert f"COMPUTE_DOMAIN_UUID={domain.uid}" in env


async def test_a_daemon_claim_without_annotations_searches_every_namespace(node: Node) -> None:
    domain = node.view.add_domain("team", "cd")
    claim = node.view.add_claim(daemon_claim(domain, annotated=False))

    assert await prepare(node, claim) == {"daemon-cd": ""}
    assert node.view.domain_reads == [("search", domain.uid)]


async def test_annotations_naming_another_domain_are_not_trusted(node: Node) -> None:
    domain = node.view.add_domain("team", "cd")
    impostor = node.view.add_domain("team", "impostor")
    claim = daemon_claim(domain)
    claim["metadata"]["annotations"] = domain_annotations(impostor)
    node.view.add_claim(claim)

    assert await prepare(node, claim) == {"daemon-cd": ""}
    assert node.view.domain_reads == [("get", "team", "impostor"), ("search", domain.uid)]
    assert "COMPUTE_DOMAIN_NAME=cd" in node.spec(claim)["devices"][0]["containerEdits"]["env"]


async def test_a_found_domain_is_not_asked_for_again(node: Node) -> None:
    domain = node.view.add_domain("team", "cd")
    node.view.set_ready(domain.uid)
    first = node.view.add_claim(allocated_claim("team", "first", "channel-0", channel_config(domain.uid)))
    # Another pool: one device is never prepared for two claims at once.
    second = node.view.add_claim(
        allocated_claim("team", "second", "channel-0", channel_config(domain.uid), node="node-b")
    )
    daemon = node.view.add_claim(daemon_claim(domain))

    assert await prepare(node, first) == {"first": ""}
    reads = list(node.view.domain_reads)
    assert await prepare(node, second, daemon) == {"second": "", "daemon-cd": ""}

    assert reads == [("list", "team")]
    assert node.view.domain_reads == reads


async def test_claims_of_one_domain_in_one_call_share_one_read(node: Node) -> None:
    domain = node.view.add_domain("team", "cd")
    node.view.set_ready(domain.uid)
    claims = [
        node.view.add_claim(
            allocated_claim("team", f"c{i}", "channel-0", channel_config(domain.uid), node=f"node-{i}")
        )
        for i in range(4)
    ]

    assert set((await prepare(node, *claims)).values()) == {""}
    assert node.view.domain_reads == [("list", "team")]


async def test_the_cache_keeps_the_most_recently_used_domains() -> None:
    view = MemoryView()
    domains = [view.add_domain("team", f"cd{i}") for i in range(3)]
    finder = DomainFinder(view, capacity=2)

    for domain in domains[:2]:
        assert await finder.find(domain.uid, namespace="team") == domain
    assert await finder.find(domains[0].uid) == domains[0]  # cached, and now the most recent
    assert await finder.find(domains[2].uid, namespace="team") == domains[2]  # evicts cd1
    view.domain_reads.clear()

    assert await finder.find(domains[0].uid) == domains[0]
    assert await finder.find(domains[1].uid, namespace="team") == domains[1]
    assert view.domain_reads == [("list", "team")]


async def test_a_failed_read_fails_every_waiter_and_the_next_find_reads_again() -> None:
    view = MemoryView()
    domain = view.add_domain("team", "cd")
    release = asyncio.Event()
    calls = 0

    async def failing(namespace: str) -> list[DomainRef]:
        nonlocal calls
        calls += 1
        await release.wait()
        raise ConnectionError("API server away")

    finder = DomainFinder(view)
    view.list_domains = failing  # type: ignore[method-assign]
    waiters = [asyncio.create_task(finder.find(domain.uid, namespace="team")) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)

    assert calls == 1
    assert all(isinstance(r, ConnectionError) for r in results)
    del view.list_domains
    assert await finder.find(domain.uid, namespace="team") == domain


def test_annotations_name_the_domain_only_with_both_keys() -> None:
    domain = DomainRef("uid-1", "team", "cd")
    annotated = allocated_claim("ns", "c", "channel-0", channel_config("uid-1"), domain=domain)
    half = allocated_claim("ns", "c", "channel-0", channel_config("uid-1"), domain=domain)
    del half["metadata"]["annotations"]["resource.nvidia.com/computeDomainName"]

    assert annotated_domain(annotated) == ("team", "cd")
    assert annotated_domain(half) is None
    assert annotated_domain(allocated_claim("ns", "c", "channel-0", channel_config("uid-1"))) is None
