"""Clique mode's channel pool against a real API server: the controller gives each domain an IMEX
channel of its own per NVLink clique, queues domains when a clique has none left, serves them in the
order their claims were allocated, frees a channel only when the domain's claims in the clique are
gone, keeps every assignment across a restart, and refuses `allocationMode: All` and domains of the
other mode.

The pool holds channels 1 and 2 only (IMEX_CHANNELS=3). No scheduler runs: the test writes each
claim's allocation as kube-scheduler would (as `bench/standin.py` does), with the allocation time
that orders the queue. Each test uses cliques of its own, so the tests share nothing but the
controller.
"""

from __future__ import annotations

import datetime
import itertools
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import pytest
import pytest_asyncio
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from cdtestbed.cluster import ClusterOptions
from cdtestbed.controller_process import ControllerProcess
from cdtestbed.install import prepare_operator
from computedomain.api import names
from conftest import OPERATOR_NAMESPACE, controller_env
from support import metricsfixture
from support.domains import (
    RESOURCE_GROUP,
    RESOURCE_VERSION,
    Cluster,
    Object,
    condition,
    domain_manifest,
    unique,
)
from support.testbed import ControlPlane, private_control_plane
from support.waiting import eventually

pytestmark = pytest.mark.cluster

WAIT = 60.0
CHANNELS_AVAILABLE = "ChannelsAvailable"
_nodes = (f"gb200-pool-{i}" for i in itertools.count())

# Nothing but the test creates nodes, binds pods or allocates claims.
plane = private_control_plane("channel-pool-", ClusterOptions(controllers=False))


@pytest.fixture(scope="module")
def controller(plane: ControlPlane) -> Iterator[ControllerProcess]:
    """A clique-mode controller with a pool of two channels per clique (1 and 2)."""
    cluster = plane.cluster
    env = controller_env(
        OPERATOR_NAMESPACE, IMEX_MODE="clique", IMEX_CHANNELS="3", POD_NAME="controller-pool"
    )
    process = ControllerProcess(cluster.kubeconfig, cluster.logs / "controller-pool.log", env)
    yield process
    process.stop()


@pytest_asyncio.fixture(scope="module")
async def cd(plane: ControlPlane, controller: ControllerProcess) -> Cluster:
    await prepare_operator(plane.api, OPERATOR_NAMESPACE, [])
    controller.start()
    return Cluster(plane.api, OPERATOR_NAMESPACE)


@pytest_asyncio.fixture
async def namespace(cd: Cluster) -> AsyncIterator[str]:
    # Without a controller manager nothing finalizes a deleted namespace: each test keeps its own.
    name = unique("pool")
    await cd.core.create_namespace(cast(Any, {"metadata": {"name": name}}))
    yield name


async def new_clique(cd: Cluster, size: int = 2) -> tuple[str, list[str]]:
    """A fresh NVLink clique ID and `size` nodes labelled with it."""
    clique = f"{uuid.uuid4()}.{32766}"
    nodes = [next(_nodes) for _ in range(size)]
    for node in nodes:
        labels = {"kubernetes.io/hostname": node, names.GPU_CLIQUE_LABEL: clique}
        await cd.core.create_node(cast(Any, {"metadata": {"name": node, "labels": labels}}))
    return clique, nodes


async def new_domain(cd: Cluster, namespace: str, prefix: str, **extra: Any) -> Object:
    """A ComputeDomain, once the controller has reconciled it (or refused it)."""
    manifest = domain_manifest(unique(prefix), namespace, **extra.pop("channel", {}))
    manifest["metadata"].update(extra)
    created = await cd.create_domain(manifest)

    def reconciled(body: Object) -> bool:
        return (body.get("status") or {}).get("observedGeneration") == body["metadata"]["generation"] or (
            condition(body).get("reason") == "ImexModeMismatch"
        )

    return await cd.wait_domain(namespace, created["metadata"]["name"], reconciled, "reconciled", WAIT)


def _stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def allocate(cd: Cluster, domain: Object, node: str, allocated_at: datetime.datetime) -> str:
    """A workload claim of `domain` allocated on `node` at `allocated_at`, as the scheduler writes it;
    returns the claim's name."""
    namespace, uid = domain["metadata"]["namespace"], domain["metadata"]["uid"]
    name = unique("claim")
    claim: Object = {
        "apiVersion": f"{RESOURCE_GROUP}/{RESOURCE_VERSION}",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace, "labels": {names.DOMAIN_LABEL: uid}},
        "spec": {
            "devices": {
                "requests": [{"name": "channel", "exactly": {"deviceClassName": names.CHANNEL_DEVICE_CLASS}}]
            }
        },
    }
    created = await cd.custom.create_namespaced_custom_object(
        RESOURCE_GROUP, RESOURCE_VERSION, namespace, "resourceclaims", claim
    )
    created["status"] = {
        "allocation": {
            "devices": {
                "results": [{"request": "channel", "driver": names.DRIVER, "pool": node, "device": "channel"}]
            },
            "nodeSelector": {
                "nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
                ]
            },
            "allocationTimestamp": _stamp(allocated_at),
        }
    }
    written = await cd.custom.replace_namespaced_custom_object_status(
        RESOURCE_GROUP, RESOURCE_VERSION, namespace, "resourceclaims", name, created
    )
    # The queue's order rests on this field: an API server that dropped it would make the test moot.
    assert written["status"]["allocation"].get("allocationTimestamp") == _stamp(allocated_at)
    return name


async def release(cd: Cluster, namespace: str, claims: list[str]) -> None:
    """Delete claims (no controller manager holds them back with a finalizer)."""
    for name in claims:
        await cd.custom.delete_namespaced_custom_object(
            RESOURCE_GROUP, RESOURCE_VERSION, namespace, "resourceclaims", name
        )


async def record(cd: Cluster, domain: Object, clique: str) -> Object | None:
    """The domain's ComputeDomainClique `<uid>.<clique>`, or None."""
    try:
        found: Object = await cd.custom.get_namespaced_custom_object(
            names.GROUP,
            names.VERSION,
            OPERATOR_NAMESPACE,
            names.CLIQUE_PLURAL,
            names.clique_name(domain["metadata"]["uid"], clique),
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return found


async def channels_of(cd: Cluster, clique: str) -> dict[str, int | None]:
    """Domain UID -> the channel its object holds in `clique` (None while it waits); checks that no
    channel is held twice."""
    listing = await cd.custom.list_namespaced_custom_object(
        names.GROUP,
        names.VERSION,
        OPERATOR_NAMESPACE,
        names.CLIQUE_PLURAL,
        label_selector=f"{names.CLIQUE_LABEL}={clique}",
    )
    held = {o["metadata"]["labels"][names.DOMAIN_LABEL]: o.get("channel") for o in listing["items"]}
    given = [c for c in held.values() if c is not None]
    assert len(given) == len(set(given)), f"a channel held twice in clique {clique}: {held}"
    assert all(1 <= c <= 2 for c in given), held
    for obj in listing["items"]:
        assert obj.get("daemons") in (None, []), "a domain's clique object lists no daemons in clique mode"
    return held


async def wait_channel(cd: Cluster, domain: Object, clique: str) -> int:
    """Wait until the domain holds a channel in `clique`; returns it."""

    async def given() -> int | None:
        await channels_of(cd, clique)
        found = await record(cd, domain, clique)
        return None if found is None else found.get("channel")

    channel: int = await eventually(given, timeout=WAIT, what=f"a channel of {clique} for {_name(domain)}")
    return channel


async def wait_condition(cd: Cluster, domain: Object, kind: str, status: str, reason: str) -> Object:
    """Wait until the domain's condition `kind` has `status` and `reason`; returns the condition."""
    namespace, name = domain["metadata"]["namespace"], domain["metadata"]["name"]

    def done(body: Object) -> bool:
        found = condition(body, kind)
        return found.get("status") == status and found.get("reason") == reason

    body = await cd.wait_domain(namespace, name, done, f"{kind}={status} ({reason})", WAIT)
    return condition(body, kind)


def _name(domain: Object) -> str:
    return f"{domain['metadata']['namespace']}/{domain['metadata']['name']}"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


async def test_domains_of_one_clique_get_channels_of_their_own(cd: Cluster, namespace: str) -> None:
    clique, nodes = await new_clique(cd)
    first, second = await new_domain(cd, namespace, "a"), await new_domain(cd, namespace, "b")
    await allocate(cd, first, nodes[0], _now())
    assert await wait_channel(cd, first, clique) == 1
    # Both domains on one node too: the shared channel device allows several allocations.
    await allocate(cd, second, nodes[0], _now())
    await allocate(cd, second, nodes[1], _now())
    assert await wait_channel(cd, second, clique) == 2
    for domain in (first, second):
        available = await wait_condition(cd, domain, CHANNELS_AVAILABLE, "True", "ChannelsAssigned")
        assert available["message"]
    body = await cd.domain(namespace, second["metadata"]["name"])
    assert body is not None
    assert sorted(n["name"] for n in body["status"]["nodes"]) == sorted(nodes)
    assert all(n["status"] == "Ready" for n in body["status"]["nodes"])
    # No daemon of a domain's own in clique mode: no DaemonSet, no node label.
    assert await cd.daemonset(second["metadata"]["uid"]) is None
    assert await cd.labelled_nodes(second["metadata"]["uid"]) == []


async def test_an_exhausted_clique_is_a_queue_served_in_allocation_order(
    cd: Cluster, namespace: str, controller: ControllerProcess
) -> None:
    clique, nodes = await new_clique(cd)
    start = _now() - datetime.timedelta(seconds=60)
    holders = [await new_domain(cd, namespace, "h"), await new_domain(cd, namespace, "i")]
    claims: dict[str, list[str]] = {}
    for offset, holder in enumerate(holders):
        at = start + datetime.timedelta(seconds=offset)
        claims[holder["metadata"]["uid"]] = [await allocate(cd, holder, nodes[offset], at)]
        await wait_channel(cd, holder, clique)
    held = {holder["metadata"]["uid"]: await wait_channel(cd, holder, clique) for holder in holders}
    assert sorted(held.values()) == [1, 2]

    # The later-created domain's claim was allocated first: it is served first.
    late, early = await new_domain(cd, namespace, "late"), await new_domain(cd, namespace, "early")
    await allocate(cd, late, nodes[0], start + datetime.timedelta(seconds=20))
    await allocate(cd, early, nodes[1], start + datetime.timedelta(seconds=10))
    for waiter in (late, early):
        waiting = await wait_condition(cd, waiter, CHANNELS_AVAILABLE, "False", "ChannelPoolExhausted")
        assert clique in waiting["message"]
        assert condition(await cd.domain(namespace, waiter["metadata"]["name"]))["status"] == "False"
        event = await cd.wait_event(namespace, waiter["metadata"]["name"], "ChannelPoolExhausted")
        assert clique in event["message"]
        # Its object is there, without a channel, so that the plugin can say what it waits for.
        found = await record(cd, waiter, clique)
        assert found is not None
        assert "channel" not in found

    def pool_reported() -> str | None:
        text = controller.get("/metrics")[1]
        pool = {
            (sample.name, sample.labels.get("state", "")): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if family.name.startswith("computedomain_channel_pool") and sample.labels["clique"] == clique
        }
        wanted = {
            ("computedomain_channel_pool_channels", "held"): 2,
            ("computedomain_channel_pool_channels", "free"): 0,
            ("computedomain_channel_pool_waiting_domains", ""): 2,
        }
        return text if pool == wanted else None

    # The leader's /metrics says the same: both channels held, both latecomers waiting.
    text = await eventually(pool_reported, timeout=WAIT, what=f"the pool of {clique} reported full")
    metricsfixture.record("controller-clique", text, "a clique of 2 channels, both held, 2 domains waiting")

    # The first holder's claims go: its object goes, and its channel goes to the first in the queue.
    first = holders[0]["metadata"]["uid"]
    await release(cd, namespace, claims[first])
    assert await wait_channel(cd, early, clique) == held[first]
    assert await record(cd, holders[0], clique) is None
    assert (await channels_of(cd, clique)).get(late["metadata"]["uid"], 0) is None
    await wait_condition(cd, early, CHANNELS_AVAILABLE, "True", "ChannelsAssigned")

    second = holders[1]["metadata"]["uid"]
    await release(cd, namespace, claims[second])
    assert await wait_channel(cd, late, clique) == held[second]
    await wait_condition(cd, late, CHANNELS_AVAILABLE, "True", "ChannelsAssigned")


async def test_domains_allocated_within_one_second_are_served_in_the_order_they_came(
    cd: Cluster, namespace: str
) -> None:
    """Allocation times have whole seconds: four jobs whose claims all read the same second are
    served in the order their claims were allocated, not by their random UIDs, and the order is
    recorded in their objects (`queuedAt`)."""
    clique, nodes = await new_clique(cd)
    holders = [await new_domain(cd, namespace, f"s{index}") for index in range(2)]
    claims: dict[str, list[str]] = {}
    for holder in holders:
        claims[holder["metadata"]["uid"]] = [await allocate(cd, holder, nodes[0], _now())]
        await wait_channel(cd, holder, clique)
    waiters = [await new_domain(cd, namespace, f"w{index}") for index in range(4)]
    second = _now()
    for waiter in waiters:
        claims[waiter["metadata"]["uid"]] = [await allocate(cd, waiter, nodes[1], second)]
    stamps = []
    for waiter in waiters:
        await wait_condition(cd, waiter, CHANNELS_AVAILABLE, "False", "ChannelPoolExhausted")
        found = await record(cd, waiter, clique)
        assert found is not None
        stamps.append(found["queuedAt"])
    assert stamps == sorted(stamps), stamps
    assert len(set(stamps)) == len(stamps), stamps

    # Each freed channel goes to the first waiter still waiting.
    leaving = [*holders, *waiters[:2]]
    for leaver, taker in zip(leaving, waiters, strict=True):
        await release(cd, namespace, claims[leaver["metadata"]["uid"]])
        await wait_channel(cd, taker, clique)
        later = {w["metadata"]["uid"] for w in waiters[waiters.index(taker) + 1 :]}
        held = await channels_of(cd, clique)
        assert all(held.get(uid) is None for uid in later), (_name(taker), held)


async def test_a_channel_is_unique_per_clique_not_cluster_wide(cd: Cluster, namespace: str) -> None:
    (one, one_nodes), (two, two_nodes) = await new_clique(cd, 1), await new_clique(cd, 1)
    spanning, other = await new_domain(cd, namespace, "span"), await new_domain(cd, namespace, "other")
    await allocate(cd, spanning, one_nodes[0], _now())
    assert await wait_channel(cd, spanning, one) == 1
    await allocate(cd, other, two_nodes[0], _now())
    assert await wait_channel(cd, other, two) == 1
    # A domain in both cliques gets a channel in each, independently.
    await allocate(cd, spanning, two_nodes[0], _now())
    assert await wait_channel(cd, spanning, two) == 2
    assert await wait_channel(cd, spanning, one) == 1


async def test_a_restarted_controller_keeps_every_assignment(
    cd: Cluster, namespace: str, controller: ControllerProcess
) -> None:
    clique, nodes = await new_clique(cd)
    domains = [await new_domain(cd, namespace, f"r{i}") for i in range(3)]
    for index, domain in enumerate(domains):
        await allocate(cd, domain, nodes[index % 2], _now() + datetime.timedelta(seconds=index))
    for domain in domains[:2]:
        await wait_channel(cd, domain, clique)
    await wait_condition(cd, domains[2], CHANNELS_AVAILABLE, "False", "ChannelPoolExhausted")
    before: dict[str, tuple[str, int | None]] = {}
    for domain in domains:
        found = await record(cd, domain, clique)
        assert found is not None
        before[domain["metadata"]["uid"]] = (found["metadata"]["resourceVersion"], found.get("channel"))

    controller.stop(signal.SIGKILL)
    controller.start()
    # A new domain reconciled by the new process: it has read the world and planned from it.
    newcomer = await new_domain(cd, namespace, "after")
    await allocate(cd, newcomer, nodes[0], _now() + datetime.timedelta(seconds=10))
    await wait_condition(cd, newcomer, CHANNELS_AVAILABLE, "False", "ChannelPoolExhausted")
    for domain in domains:
        found = await record(cd, domain, clique)
        assert found is not None
        # Same channel, and not even rewritten.
        assert (found["metadata"]["resourceVersion"], found.get("channel")) == before[
            domain["metadata"]["uid"]
        ]
    assert (await channels_of(cd, clique))[newcomer["metadata"]["uid"]] is None


async def test_allocation_mode_all_is_refused(cd: Cluster, namespace: str) -> None:
    clique, nodes = await new_clique(cd, 1)
    domain = await new_domain(cd, namespace, "all", channel={"allocationMode": "All"})
    await allocate(cd, domain, nodes[0], _now())
    ready = await wait_condition(cd, domain, "Ready", "False", "AllChannelsRefused")
    assert "allocationMode: Single" in ready["message"]
    available = condition(await cd.domain(namespace, domain["metadata"]["name"]), CHANNELS_AVAILABLE)
    assert (available.get("status"), available.get("reason")) == ("False", "AllChannelsRefused")
    await cd.wait_event(namespace, domain["metadata"]["name"], "AllChannelsRefused")
    assert await record(cd, domain, clique) is None
    # It holds up nobody: the clique's whole pool is still free.
    other = await new_domain(cd, namespace, "single")
    await allocate(cd, other, nodes[0], _now())
    assert await wait_channel(cd, other, clique) == 1


async def test_a_domain_of_the_other_mode_is_left_alone(cd: Cluster, namespace: str) -> None:
    clique, nodes = await new_clique(cd, 1)
    annotations = {names.IMEX_MODE_ANNOTATION: names.IMEX_MODE_DOMAIN}
    domain = await new_domain(cd, namespace, "old", annotations=annotations)
    await allocate(cd, domain, nodes[0], _now())
    ready = await wait_condition(cd, domain, "Ready", "False", "ImexModeMismatch")
    assert "imex.mode=domain" in ready["message"]
    assert "switching to clique" in ready["message"]
    await cd.wait_event(namespace, domain["metadata"]["name"], "ImexModeMismatch")
    # A domain reconciled afterwards proves the claim was seen; the old one still got nothing.
    probe = await new_domain(cd, namespace, "probe")
    await allocate(cd, probe, nodes[0], _now())
    assert await wait_channel(cd, probe, clique) == 1
    uid = domain["metadata"]["uid"]
    assert await record(cd, domain, clique) is None
    assert await cd.claim_template(namespace, f"{domain['metadata']['name']}-channel") is None
    body = await cd.domain(namespace, domain["metadata"]["name"])
    assert body is not None
    assert names.FINALIZER not in (body["metadata"].get("finalizers") or [])
    assert await cd.labelled(names.CLIQUE_PLURAL, uid, OPERATOR_NAMESPACE) == []


async def test_a_node_leaving_its_clique_keeps_the_channel_until_the_claims_go(
    cd: Cluster, namespace: str
) -> None:
    clique, nodes = await new_clique(cd, 3)
    domains = [await new_domain(cd, namespace, f"n{i}") for i in range(3)]
    claims = [await allocate(cd, domain, nodes[i], _now()) for i, domain in enumerate(domains[:2])]
    held = [await wait_channel(cd, domain, clique) for domain in domains[:2]]
    await allocate(cd, domains[2], nodes[2], _now())
    await wait_condition(cd, domains[2], CHANNELS_AVAILABLE, "False", "ChannelPoolExhausted")

    # One node loses its clique label, another goes: their pods, and so their channels, may still run.
    await cd.core.patch_node(nodes[0], {"metadata": {"labels": {names.GPU_CLIQUE_LABEL: None}}})
    await cd.core.delete_node(nodes[1])
    for domain, node in zip(domains[:2], nodes[:2], strict=True):

        def cliqueless(body: Object, node: str = node) -> bool:
            entries = (body.get("status") or {}).get("nodes") or []
            return any(e["name"] == node and not e.get("cliqueID") for e in entries)

        # Planned again with the node outside the clique (the status shows it without one).
        await cd.wait_domain(namespace, domain["metadata"]["name"], cliqueless, f"{node} cliqueless", WAIT)
    channels = await channels_of(cd, clique)
    assert [channels.get(d["metadata"]["uid"], 0) for d in domains] == [*held, None]

    # Once the first domain's claim is gone, its channel goes to the waiting domain.
    await release(cd, namespace, claims[:1])
    assert await wait_channel(cd, domains[2], clique) == held[0]
    assert await record(cd, domains[0], clique) is None


async def test_a_node_that_left_its_clique_while_no_controller_ran_keeps_the_channel(
    cd: Cluster, namespace: str, controller: ControllerProcess
) -> None:
    """The objects record the nodes their domain's claims are on: a controller started after a node
    left the clique still holds the channel until the claims there go."""
    clique, nodes = await new_clique(cd, 3)
    domains = [await new_domain(cd, namespace, f"k{i}") for i in range(3)]
    claims = [await allocate(cd, domain, nodes[i], _now()) for i, domain in enumerate(domains[:2])]
    held = [await wait_channel(cd, domain, clique) for domain in domains[:2]]
    for domain, node in zip(domains[:2], nodes[:2], strict=True):
        found = await record(cd, domain, clique)
        assert found is not None
        assert found["nodes"] == [node]

    controller.stop(signal.SIGKILL)
    await cd.core.patch_node(nodes[0], {"metadata": {"labels": {names.GPU_CLIQUE_LABEL: None}}})
    await cd.core.delete_node(nodes[1])
    controller.start()
    # The new process plans the waiting domain (its claim allocated now) from what it found.
    await allocate(cd, domains[2], nodes[2], _now())
    await wait_condition(cd, domains[2], CHANNELS_AVAILABLE, "False", "ChannelPoolExhausted")
    channels = await channels_of(cd, clique)
    assert [channels.get(d["metadata"]["uid"], 0) for d in domains] == [*held, None]

    await release(cd, namespace, claims[1:])
    assert await wait_channel(cd, domains[2], clique) == held[1]
    assert await record(cd, domains[1], clique) is None
    assert (await channels_of(cd, clique))[domains[0]["metadata"]["uid"]] == held[0]


async def test_a_deleted_domain_keeps_its_channel_until_its_claims_go(cd: Cluster, namespace: str) -> None:
    clique, nodes = await new_clique(cd, 1)
    domains = [await new_domain(cd, namespace, f"d{i}") for i in range(3)]
    claims = [await allocate(cd, domain, nodes[0], _now()) for domain in domains[:2]]
    held = [await wait_channel(cd, domain, clique) for domain in domains[:2]]
    await allocate(cd, domains[2], nodes[0], _now())
    await wait_condition(cd, domains[2], CHANNELS_AVAILABLE, "False", "ChannelPoolExhausted")

    # Deleted while its pods still run: their processes hold the channel until they are unprepared.
    name = domains[0]["metadata"]["name"]
    await cd.custom.delete_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.DOMAIN_PLURAL, name
    )
    releasing = await wait_condition(cd, domains[0], "Ready", "False", "ReleasingChannels")
    assert clique in releasing["message"]
    channels = await channels_of(cd, clique)
    assert channels[domains[0]["metadata"]["uid"]] == held[0]
    assert channels[domains[2]["metadata"]["uid"]] is None

    # Its claim goes: the channel goes to the waiting domain, and the deleted domain is let go.
    await release(cd, namespace, claims[:1])
    assert await wait_channel(cd, domains[2], clique) == held[0]

    async def gone() -> bool:
        return await cd.domain(namespace, name) is None

    await eventually(gone, timeout=WAIT, what=f"{name} finalized")
    assert await cd.leftovers(domains[0]["metadata"]["uid"]) == []
