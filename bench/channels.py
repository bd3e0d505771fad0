"""Clique mode's channel pool on an 18-node KWOK rack (one NVLink clique); prints its figures (not a
test).

    python bench/channels.py [--domains 200] [--queued 60] [--small-pool 5]

Churn: `--domains` domains arrive over time, each with two claims on random nodes of the rack (so
several domains per node), hold their channel a moment, then their claims and the domain go. Queue:
with a pool of `--small-pool` channels (IMEX_CHANNELS), `--queued` domains arrive faster than the
holders leave; holders leave one at a time, so each freed channel has exactly one rightful taker:
the waiting domain whose earliest claim was allocated first (the benchmark allocates one claim
after another, so its own count is the truth; the API server's allocation times have whole seconds
only). A grant to any other domain while such a one waits is an inversion.

A watch of the ComputeDomainClique objects counts, at every event, the moments at which two objects
of the clique (two domains) name one channel. The node side is not here: no kubelet plugin runs, so
the plugins' checkpoints (the channels prepared on each node) are not part of these figures.
No scheduler runs either: the benchmark writes each claim's allocation as kube-scheduler would.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes_asyncio import client, config

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testbed"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import scenarios as sc
from cdtestbed.cluster import ClusterOptions, LocalCluster
from cdtestbed.controller_process import ControllerProcess
from cdtestbed.install import prepare_operator
from cdtestbed.nodes import create_nodes
from cdtestbed.tools import Tools, repo_root
from cdtestbed.topology import nvl72_racks
from computedomain.api import names
from support.channels import ChannelWatch, allocate_claim, delete_claims, delete_domain
from support.waiting import eventually

DRIVER_CHANNELS = 2048
SERVED_WITHIN = 300.0


@dataclass
class Domain:
    """One benchmark domain: its name, UID, claims and its place in the queue."""

    name: str
    uid: str
    claims: list[str] = field(default_factory=list)
    # The rank of its first claim among all the claims the benchmark allocated.
    key: int = 0
    allocated: float = 0.0
    released: bool = False


class Pool:
    """One controller run against the rack, with a watch of the clique objects."""

    def __init__(self, cluster: LocalCluster, api: client.ApiClient, channels: int, nodes: list[str]) -> None:
        self.api = api
        self.channels = channels
        self.nodes = nodes
        env = {
            "NAMESPACE": sc.OPERATOR_NAMESPACE,
            "IMAGE_NAME": "registry.example/computedomain-operator:0.1.0",
            "POD_NAME": f"bench-channels-{channels}",
            "LEADER_ELECTION": "false",
            "IMEX_MODE": "clique",
            "IMEX_CHANNELS": str(channels),
        }
        self.controller = ControllerProcess(
            cluster.kubeconfig, cluster.logs / f"controller-{channels}.log", env
        )
        self.watch = ChannelWatch(api, sc.OPERATOR_NAMESPACE, channels)
        self.domains: dict[str, Domain] = {}
        self.allocations = 0

    async def start(self) -> None:
        """Start the watch, then the controller (ready)."""
        await self.watch.start()
        await asyncio.to_thread(self.controller.start)

    async def stop(self) -> None:
        """Stop the controller and the watch."""
        self.controller.stop()
        await self.watch.stop()

    async def arrive(self, namespace: str, name: str, rng: random.Random) -> Domain:
        """Create a domain and allocate its two claims on random nodes (perhaps one node)."""
        custom = client.CustomObjectsApi(self.api)
        body = await custom.create_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.DOMAIN_PLURAL, sc.domain(name, namespace)
        )
        domain = Domain(name, str(body["metadata"]["uid"]))
        self.domains[domain.uid] = domain
        first = None
        for node in (rng.choice(self.nodes), rng.choice(self.nodes)):
            claim = await allocate_claim(
                self.api, namespace, domain.uid, node, datetime.datetime.now(datetime.UTC)
            )
            domain.claims.append(str(claim["metadata"]["name"]))
            self.allocations += 1
            first = self.allocations if first is None else first
        domain.key = first or 0
        domain.allocated = time.monotonic()
        return domain

    async def served(self, domain: Domain, clique: str) -> float:
        """Wait until the domain holds a channel; returns the seconds since its claims were allocated."""
        deadline = time.monotonic() + SERVED_WITHIN
        while (domain.uid, clique) not in self.watch.served:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{domain.name} got no channel in {SERVED_WITHIN:.0f}s")
            await asyncio.sleep(0.05)
        return self.watch.served[(domain.uid, clique)] - domain.allocated

    async def leave(self, namespace: str, domain: Domain) -> None:
        """The domain's pods are done: its claims are deallocated, then it is deleted."""
        domain.released = True
        await delete_claims(self.api, namespace, domain.claims)
        await delete_domain(self.api, namespace, domain.name)

    async def drained(self, timeout: float = 120.0) -> bool:
        """Wait until no clique object is left (every channel back in the pool)."""
        try:
            await eventually(lambda: not self.watch.objects, timeout=timeout, what="every object gone")
        except AssertionError:
            return False
        return True


def report(figure: str, value: str) -> None:
    """Print one figure."""
    print(f"  {figure:<58} {value:>16}", flush=True)


async def churn(pool: Pool, clique: str, count: int, interval: float, rng: random.Random) -> None:
    """`count` domains arriving every `interval` seconds, each holding its channel 1-3 s."""
    namespace = "bench-churn"
    await sc.create_namespace(pool.api, namespace)
    latencies: list[float] = []

    async def life(index: int) -> None:
        await asyncio.sleep(index * interval)
        domain = await pool.arrive(namespace, f"churn-{index:03d}", rng)
        latencies.append(await pool.served(domain, clique))
        await asyncio.sleep(rng.uniform(1.0, 3.0))  # the job's work
        await pool.leave(namespace, domain)

    started = time.monotonic()
    await asyncio.gather(*(life(i) for i in range(count)))
    drained = await pool.drained()
    elapsed = time.monotonic() - started
    print(f"churn: {count} domains, two claims each, one every {interval:.2f}s, pool {pool.channels}")
    report("domains served / created", f"{len(latencies)} / {count}")
    report("claims allocated -> channel given, p50 / p99", _p50_p99(latencies))
    report("pool high-water mark (channels held at once)", str(pool.watch.high_water[clique]))
    report("moments two live domains held one channel", str(pool.watch.double_moments))
    report("clique objects left after the churn (leaks)", "0" if drained else str(len(pool.watch.objects)))
    report("watch events checked", str(pool.watch.events))
    report("wall time", f"{elapsed:.0f}s")


async def queue(pool: Pool, clique: str, count: int, interval: float) -> None:
    """`count` domains arriving faster than the holders leave, who leave one at a time."""
    namespace = "bench-queue"
    await sc.create_namespace(pool.api, namespace)
    rng = random.Random(7)
    inversions: list[str] = []
    grants: list[str] = []

    def granted(uid: str, clique_id: str, channel: int, waiting: list[str]) -> None:
        grants.append(uid)
        mine = pool.domains.get(uid)
        if mine is None:
            return
        ahead = [u for u in waiting if u in pool.domains and pool.domains[u].key < mine.key]
        if ahead:
            inversions.append(f"{mine.name} got channel {channel} before {len(ahead)} waiting ahead of it")

    pool.watch.on_grant = granted
    holders = pool.channels - 1

    async def arrivals() -> None:
        for index in range(count):
            await pool.arrive(namespace, f"queue-{index:03d}", rng)
            await asyncio.sleep(interval)

    arriving = asyncio.create_task(arrivals())
    started = time.monotonic()
    served_order: list[str] = []
    most_waiting = 0
    while len(served_order) < count:
        # Let every free channel be taken before the next holder leaves: one free channel at a time.
        while True:
            mine = pool.watch.by_clique().get(clique, {})
            held = [u for u, c in mine.items() if c is not None and not pool.domains[u].released]
            waiting = [u for u, c in mine.items() if c is None]
            most_waiting = max(most_waiting, len(waiting))
            everyone_here = arriving.done() and len(pool.domains) == count
            if len(held) == holders or (not waiting and everyone_here and held):
                break
            if time.monotonic() - started > SERVED_WITHIN:
                raise TimeoutError(f"queue stuck: {len(held)} held, {len(waiting)} waiting")
            await asyncio.sleep(0.05)
        # The holder served first leaves.
        first = min(held, key=lambda u: pool.watch.served[(u, clique)])
        served_order.append(first)
        await pool.leave(namespace, pool.domains[first])

        def returned(uid: str = first) -> bool:
            return pool.watch.channel_of(uid, clique) is None

        await eventually(
            returned,
            timeout=SERVED_WITHIN,
            interval=0.05,
            what="the channel back in the pool",
        )
    await arriving
    drained = await pool.drained()
    elapsed = time.monotonic() - started
    print(f"queue: {count} domains, pool {pool.channels} ({holders} channels), holders leave one at a time")
    report("most domains waiting at once", str(most_waiting))
    report("domains that waited / served", f"{len(pool.watch.waited)} / {len(set(grants))}")
    report("served out of allocation order (inversions)", str(len(inversions)))
    report("pool high-water mark (channels held at once)", str(pool.watch.high_water[clique]))
    report("moments two live domains held one channel", str(pool.watch.double_moments))
    report("clique objects left after the queue (leaks)", "0" if drained else str(len(pool.watch.objects)))
    report("wall time", f"{elapsed:.0f}s")
    for line in inversions[:5]:
        print(f"    {line}")


def _p50_p99(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{sc.percentile(values, 0.5):.2f} / {sc.percentile(values, 0.99):.2f}s"


async def run(args: argparse.Namespace) -> None:
    tools = Tools.default()
    if tools.missing():
        tools.build()
    workdir = Path(tempfile.mkdtemp(prefix="bench-channels-", dir=repo_root() / ".work"))
    # No scheduler, controller manager or KWOK: the claims' allocations are written here.
    with LocalCluster(workdir, tools, ClusterOptions(controllers=False)) as cluster:
        rack = nvl72_racks(1)
        clique = rack[0].clique_id
        async with await config.new_client_from_config(config_file=str(cluster.kubeconfig)) as api:
            await create_nodes(api, rack)
            await prepare_operator(api, sc.OPERATOR_NAMESPACE, [n.name for n in rack])
            print(f"control plane up ({workdir}); {len(rack)} nodes in one clique", flush=True)
            nodes = [n.name for n in rack]
            big = Pool(cluster, api, args.pool, nodes)
            await big.start()
            try:
                await churn(big, clique, args.domains, args.interval, random.Random(args.seed))
            finally:
                await big.stop()
            small = Pool(cluster, api, args.small_pool, nodes)
            await small.start()
            try:
                await queue(small, clique, args.queued, args.queue_interval)
            finally:
                await small.stop()


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--domains", type=int, default=200, help="domains of the churn")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between arrivals (churn)")
    parser.add_argument("--pool", type=int, default=DRIVER_CHANNELS, help="IMEX_CHANNELS of the churn")
    parser.add_argument("--queued", type=int, default=60, help="domains of the queue")
    parser.add_argument("--queue-interval", type=float, default=0.05, help="seconds between arrivals")
    parser.add_argument("--small-pool", type=int, default=5, help="IMEX_CHANNELS of the queue")
    parser.add_argument("--seed", type=int, default=1, help="where the churn's claims land")
    asyncio.run(run(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
