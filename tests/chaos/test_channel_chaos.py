"""Clique mode's channel pool under churn while the controller is SIGKILLed mid-assignment and a node
is deleted: no channel of a clique is ever held by two domains, none leaks, every waiting domain is
served.

Two cliques of KWOK-shaped nodes (nothing here needs them Ready: no scheduler runs, the test writes
each claim's allocation as kube-scheduler would) and a pool of three channels per clique
(IMEX_CHANNELS=4), so that domains queue. Each domain is a job: created with two claims on random
nodes, it waits until it holds a channel in every clique its claims landed in, works a moment, then
its claims go and it is deleted (sometimes the other way round: a deleted domain keeps its channel
until its claims go). A watch of the ComputeDomainClique objects checks at every event that no
channel is named twice in a clique.

The controller is killed right after it gave a channel (so it is likely writing more), restarted,
and each time the churn pauses until the objects match what the claims call for (the settle time).
"""

from __future__ import annotations

import asyncio
import datetime
import random
import signal
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio

from cdtestbed.cluster import LocalCluster
from cdtestbed.nodes import create_nodes
from cdtestbed.topology import nvl72_racks
from computedomain.api import names
from support.channels import ChannelWatch, allocate_claim, delete_claims, delete_domain
from support.chaos import admin_of, chaos_plane, plain_namespace, replica, report, scaled
from support.domains import Cluster, Object, domain_manifest
from support.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.chaos]

NAMESPACE = "computedomain-system"
# Channels 1 to 3 in each clique: ten jobs at once over two cliques keep a queue in both.
POOL = 4
NODES_PER_CLIQUE = 4
CONCURRENT_JOBS = 10
FAST_LEASE = {"LEASE_DURATION_SECONDS": "6", "RENEW_DEADLINE_SECONDS": "4", "RETRY_PERIOD_SECONDS": "1"}
# A job waits this long for its channels at most: the queue ahead of it is at most a few jobs long.
SERVED_WITHIN = 180.0


@pytest.fixture(scope="module")
def chaos_cluster() -> Iterator[LocalCluster]:
    with chaos_plane("cluster-chaos-channels-") as cluster:
        yield cluster


@pytest_asyncio.fixture(scope="module")
async def chaos(chaos_cluster: LocalCluster) -> AsyncIterator[Cluster]:
    async with admin_of(chaos_cluster) as admin:
        yield admin


@dataclass
class Job:
    """One domain of the churn and the claims it has allocated now (name -> node)."""

    name: str
    uid: str
    claims: dict[str, str] = field(default_factory=dict)
    deleted: bool = False


@dataclass
class Ledger:
    """What the test has asked for: the jobs, the nodes and their cliques. Changed only under `lock`,
    so that a settle check sees it still."""

    nodes: dict[str, str]
    jobs: dict[str, Job] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # (domain, clique) whose wait ended without a channel because its claims there went with a
    # deleted node: it had nothing left to be served in that clique.
    excused: set[tuple[str, str]] = field(default_factory=set)

    def wanting(self) -> dict[str, set[str]]:
        """Clique -> the domains with a claim allocated on one of its nodes."""
        found: dict[str, set[str]] = defaultdict(set)
        for job in self.jobs.values():
            for node in job.claims.values():
                found[self.nodes[node]].add(job.uid)
        return found

    def cliques_of(self, job: Job) -> set[str]:
        """The cliques the job's claims are allocated in now."""
        return {self.nodes[node] for node in job.claims.values()}


def _problems(ledger: Ledger, watch: ChannelWatch, domains: list[Object]) -> list[str]:
    """How the objects differ from what the claims call for (empty once the controller has settled)."""
    found: list[str] = []
    wanting = ledger.wanting()
    seen = watch.by_clique()
    for clique in sorted(set(wanting) | set(seen)):
        want, have = wanting.get(clique, set()), seen.get(clique, {})
        if set(have) != want:
            found.append(
                f"clique {clique[:8]}: objects of {sorted(set(have) - want)} without claims, "
                f"none for {sorted(want - set(have))}"
            )
        holding = sum(1 for channel in have.values() if channel is not None)
        if holding != min(len(want), POOL - 1):
            found.append(f"clique {clique[:8]}: {holding} holders for {len(want)} wanting (pool {POOL - 1})")
    expected = {job.name for job in ledger.jobs.values() if not job.deleted or job.claims}
    present = {d["metadata"]["name"] for d in domains}
    if present != expected:
        found.append(f"domains {sorted(present - expected)} linger, {sorted(expected - present)} missing")
    return found


async def _domains(chaos: Cluster, namespace: str) -> list[Object]:
    listed = await chaos.custom.list_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.DOMAIN_PLURAL
    )
    items: list[Object] = listed["items"]
    return items


async def _wait_settled(chaos: Cluster, namespace: str, ledger: Ledger, watch: ChannelWatch) -> None:
    last: list[str] = []

    async def settled() -> bool:
        last[:] = _problems(ledger, watch, await _domains(chaos, namespace))
        return not last

    try:
        await eventually(settled, timeout=120, interval=0.2, what="the channel pool to settle")
    except AssertionError as error:
        raise AssertionError(f"{error}\nstill wrong: {last}") from None


async def test_no_channel_is_doubled_or_leaked_while_the_controller_is_killed_mid_assignment(
    chaos_cluster: LocalCluster, chaos: Cluster
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    namespace = await plain_namespace(chaos, "chaos-channels")
    racks = nvl72_racks(2, NODES_PER_CLIQUE, prefix="chaos-ch")
    await create_nodes(chaos.api, racks)
    ledger = Ledger(nodes={node.name: node.clique_id for node in racks})
    granted = asyncio.Event()
    watch = ChannelWatch(chaos.api, NAMESPACE, POOL, on_grant=lambda *_: granted.set())
    await watch.start()
    controller = replica(
        chaos_cluster,
        NAMESPACE,
        "channels-0",
        "channels",
        IMEX_MODE="clique",
        IMEX_CHANNELS=str(POOL),
        **FAST_LEASE,
    )
    await asyncio.to_thread(controller.start)
    count, kills = scaled(24), scaled(4)
    gate = asyncio.Semaphore(CONCURRENT_JOBS)

    async def job(index: int) -> None:
        async with gate:
            await _run_job(chaos, namespace, ledger, watch, rng, index)

    jobs = asyncio.gather(*(job(i) for i in range(count)))
    settle_times: list[float] = []
    node_kept_channel = False
    try:
        for kill in range(kills):
            # The chaos itself: strike while the controller is giving channels out.
            granted.clear()

            def giving() -> bool:
                return granted.is_set() or jobs.done()

            await eventually(giving, timeout=120, interval=0.02, what="a channel given")
            if jobs.done():
                break
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            killed = time.monotonic()
            controller.stop(signal.SIGKILL)
            async with ledger.lock:
                await asyncio.to_thread(controller.start)
                await _wait_settled(chaos, namespace, ledger, watch)
                settle_times.append(time.monotonic() - killed)
                if kill == kills // 2:
                    node_kept_channel = await _delete_a_node(chaos, namespace, ledger, watch, rng)
                    await _wait_settled(chaos, namespace, ledger, watch)
        await jobs
        async with ledger.lock:
            await _wait_settled(chaos, namespace, ledger, watch)
    finally:
        if not jobs.done():
            jobs.cancel()
        await watch.stop()
        controller.stop()

    assert len(settle_times) == kills, f"the churn ended after {len(settle_times)} of {kills} kills"
    assert not watch.objects, f"leaked clique objects: {watch.objects}"
    assert watch.double_moments == 0, f"a channel held twice: {watch.doubles[:5]}"
    assert not watch.out_of_range, watch.out_of_range[:5]
    assert watch.waited, "no domain ever waited: the pool was never exhausted, the queue went untested"
    unserved = watch.waited - set(watch.served) - ledger.excused
    assert not unserved, f"never served: {sorted(unserved)}"
    report(
        "channels-under-kills",
        seed=seed,
        domains=count,
        kills=len(settle_times),
        waited=len(watch.waited),
        events=watch.events,
        max_concurrent_holders=max(watch.high_water.values()),
        double_held_moments=watch.double_moments,
        node_deleted_kept_channel=node_kept_channel,
        settle_after_kill_s=" ".join(f"{t:.1f}" for t in settle_times),
    )


async def _run_job(
    chaos: Cluster, namespace: str, ledger: Ledger, watch: ChannelWatch, rng: random.Random, index: int
) -> None:
    """One domain's life: claims allocated, channels awaited, work, then claims and domain gone."""
    async with ledger.lock:
        created = await chaos.create_domain(domain_manifest(f"job-{index:03d}", namespace))
        job = Job(created["metadata"]["name"], created["metadata"]["uid"])
        ledger.jobs[job.uid] = job
        live = sorted(ledger.nodes)
        # Mostly within one clique (as a topology-aware scheduler places a gang); some span both.
        first = rng.choice(live)
        same = [n for n in live if ledger.nodes[n] == ledger.nodes[first]]
        second = rng.choice(live if rng.random() < 0.3 else same)
        for node in (first, second):
            claim = await allocate_claim(
                chaos.api, namespace, job.uid, node, datetime.datetime.now(datetime.UTC)
            )
            job.claims[claim["metadata"]["name"]] = node

    def served() -> bool:
        return all(watch.channel_of(job.uid, clique) for clique in ledger.cliques_of(job))

    await eventually(served, timeout=SERVED_WITHIN, interval=0.1, what=f"channels for {job.name}")
    await asyncio.sleep(rng.uniform(0.2, 1.5))  # the job's work
    if rng.random() < 0.3:
        # Deleted while its pods still run: it keeps its channels until its claims go.
        async with ledger.lock:
            await delete_domain(chaos.api, namespace, job.name)
            job.deleted = True
        await asyncio.sleep(rng.uniform(0.1, 0.5))
    async with ledger.lock:
        await delete_claims(chaos.api, namespace, list(job.claims))
        job.claims.clear()
        if not job.deleted:
            await delete_domain(chaos.api, namespace, job.name)
            job.deleted = True


async def _delete_a_node(
    chaos: Cluster, namespace: str, ledger: Ledger, watch: ChannelWatch, rng: random.Random
) -> bool:
    """Delete a node with claims on it (called under the ledger's lock); True if a live domain whose
    claims in that clique were all there kept its channel until they went, as it must."""

    def lone_holders(node: str) -> list[Job]:
        # Domains whose claims in the node's clique are all on it: only they keep their channel there.
        clique = ledger.nodes[node]
        return [
            job
            for job in ledger.jobs.values()
            if {n for n in job.claims.values() if ledger.nodes[n] == clique} == {node}
            and watch.channel_of(job.uid, clique)
        ]

    busy = sorted({node for job in ledger.jobs.values() for node in job.claims.values()})
    if not busy:
        return False
    telling = [node for node in busy if any(not job.deleted for job in lone_holders(node))]
    node = rng.choice(telling or busy)
    clique = ledger.nodes[node]
    on_node = [job for job in ledger.jobs.values() if node in job.claims.values()]
    lone = lone_holders(node)
    before = {job.uid: watch.channel_of(job.uid, clique) for job in lone}
    await chaos.core.delete_node(node)
    for job in lone:
        if job.deleted:
            continue

        def cliqueless(body: Object) -> bool:
            entries = (body.get("status") or {}).get("nodes") or []
            return any(e["name"] == node and not e.get("cliqueID") for e in entries)

        # The controller has planned again with the node gone.
        await chaos.wait_domain(namespace, job.name, cliqueless, f"{node} without a clique", 60)
    for job in lone:
        assert watch.channel_of(job.uid, clique) == before[job.uid], (
            f"{job.name} lost its channel while its claim on deleted node {node} was still allocated"
        )
    # The node's pods are gone with it, and their claims are deallocated: the test does both at once.
    for job in on_node:
        others = [n for n in job.claims.values() if n != node and ledger.nodes[n] == clique]
        if not others and not watch.channel_of(job.uid, clique):
            ledger.excused.add((job.uid, clique))
        gone = [name for name, n in job.claims.items() if n == node]
        await delete_claims(chaos.api, namespace, gone)
        for name in gone:
            del job.claims[name]
    del ledger.nodes[node]
    return any(not job.deleted for job in lone)
