"""Clique mode's channel pool on an 18-node KWOK rack (one NVLink clique); prints its figures (not a
test).

    python bench/channels.py [--domains 200] [--queued 60] [--small-pool 5] [--no-node-side] [--nodes 18]

Churn: `--domains` domains arrive over time, each with two claims on random nodes of the rack (so
several domains per node), hold their channel a moment, then their claims and the domain go. Queue:
with a pool of `--small-pool` channels (IMEX_CHANNELS), `--queued` domains arrive faster than the
holders leave; holders leave one at a time, so each freed channel has exactly one rightful taker:
the waiting domain whose earliest claim was allocated first (the benchmark allocates one claim
after another, so its own count is the truth; the API server's allocation times have whole seconds
only). A grant to any other domain while such a one waits is an inversion.

A watch of the ComputeDomainClique objects counts, at every event, the moments at which two objects
of the clique (two domains) name one channel.

The node side (`--node-side`, on by default; churn only): the real kubelet plugin runs in clique
mode on every node of the rack, each as its own process on its own files, with a Ready clique IMEX
daemon pod on its node (a pod object nothing runs). The benchmark plays the kubelet: once a domain's
claims are allocated it calls NodePrepareResources for each on its node (the call waits in the plugin
while the domain is queued; a call that ends without a channel is made again, as the kubelet does),
and before the domain's claims go it calls NodeUnprepareResources for each. A sampler reads every
plugin's checkpoint about every 100 ms, and once more at the end, and counts the moments at which
two claims of different domains, prepared (their prepare completed) on nodes of one clique, name one
channel. The plugins share the machine's cores with the controller: with the node side on, the
controller's latencies are those of a loaded machine (`--no-node-side` gives its own); `--nodes`
makes the rack smaller. No scheduler runs: the benchmark writes each claim's allocation as
kube-scheduler would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import grpc
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testbed"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import scenarios as sc
from cdtestbed.cluster import ClusterOptions, LocalCluster
from cdtestbed.connection import connection_of
from cdtestbed.controller_process import ControllerProcess
from cdtestbed.install import prepare_operator
from cdtestbed.nodes import create_nodes
from cdtestbed.tools import Tools, repo_root
from cdtestbed.topology import FakeNode, nvl72_racks
from computedomain.api import names
from computedomain.kube import Kube
from computedomain.plugin.checkpoint import ClaimRecord
from support.channels import ChannelWatch, allocate_claim, delete_claims, delete_domain
from support.pluginbed import PluginProcess, fill_node_root, plugin_process, pod, set_ready
from support.pluginkubelet import FakeKubelet, kubelet
from support.waiting import eventually

DRIVER_CHANNELS = 2048
SERVED_WITHIN = 300.0
# The kubelet's deadline for one NodePrepareResources call; the plugin's own wait ends before it.
KUBELET_CALL = 45.0
SAMPLE_EVERY = 0.1
# Plugin processes started at once: each start is an interpreter's imports, on 2 cores.
STARTS_AT_ONCE = 4


@dataclass
class Domain:
    """One benchmark domain: its name, UID, claims and its place in the queue."""

    name: str
    uid: str
    claims: list[str] = field(default_factory=list)
    # (node, (namespace, name, UID)) of each claim, for the kubelet's calls.
    refs: list[tuple[str, tuple[str, str, str]]] = field(default_factory=list)
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
        # Claims carry the domain's channel config, which a kubelet plugin needs.
        self.with_config = False

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
                self.api,
                namespace,
                domain.uid,
                node,
                datetime.datetime.now(datetime.UTC),
                config=self.with_config,
            )
            meta = claim["metadata"]
            domain.claims.append(str(meta["name"]))
            domain.refs.append((node, (namespace, str(meta["name"]), str(meta["uid"]))))
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


class NodeSide:
    """The kubelet plugin of every node of the rack, each as its own process, and the kubelet's calls
    to them; a sampler of their checkpoints counts the moments two domains held one channel."""

    def __init__(self, cluster: LocalCluster, api: client.ApiClient, rack: list[FakeNode]) -> None:
        self.cluster = cluster
        self.api = api
        self.rack = rack
        self.clique_of = {n.name: n.clique_id for n in rack}
        self.kube = Kube(connection_of(api), field_manager="bench-node-side")
        self.stack = contextlib.AsyncExitStack()
        self.roots: list[Path] = []
        self.plugins: dict[str, PluginProcess] = {}
        self.kubelets: dict[str, FakeKubelet] = {}
        self.samples = 0
        self.moments = 0
        self.doubles: list[str] = []
        self.peak = 0
        self.completed: set[str] = set()
        self.unreadable = 0
        self.slowest_read = 0.0
        self.prepared = 0
        self.unprepared = 0
        self.retried = 0
        self.prepare_seconds: list[float] = []
        self.left: int | None = None

    async def start(self) -> None:
        """Start every node's plugin (registered and ready) with a Ready clique daemon pod there."""
        await self._default_account()
        gate = asyncio.Semaphore(STARTS_AT_ONCE)

        async def start_node(node: FakeNode) -> None:
            async with gate:
                body = await client.CoreV1Api(self.api).read_node(node.name)
                root = Path(tempfile.mkdtemp(prefix="cdb-", dir="/tmp"))  # short: sockets
                self.roots.append(root)
                fill_node_root(root)
                plugin = await self.stack.enter_async_context(
                    plugin_process(
                        self.cluster.kubeconfig,
                        self.kube,
                        node.name,
                        str(body.metadata.uid),
                        root,
                        sc.OPERATOR_NAMESPACE,
                        {"IMEX_MODE": "clique"},
                    )
                )
                self.plugins[node.name] = plugin
                # Prepare in clique mode waits for the clique's IMEX daemon on the node to be Ready.
                labels = {names.CLIQUE_DAEMONS_LABEL: names.CLIQUE_DAEMONS_VALUE}
                daemon = await pod(
                    self.kube, sc.OPERATOR_NAMESPACE, f"clique-daemon-{node.name}", node.name, labels
                )
                await set_ready(self.kube, daemon)
                await plugin.start()
                self.kubelets[node.name] = await self.stack.enter_async_context(
                    kubelet(plugin.settings.registration_socket)
                )

        await asyncio.gather(*(start_node(n) for n in self.rack))

    async def stop(self) -> None:
        """Stop the plugins (their logs go to the cluster's logs) and remove their files."""
        try:
            await self.stack.aclose()
            await self.kube.close()
        finally:
            for node, plugin in self.plugins.items():
                with contextlib.suppress(OSError):
                    shutil.copyfile(plugin.log, self.cluster.logs / f"plugin-{node}.log")
            for root in self.roots:
                shutil.rmtree(root, ignore_errors=True)

    async def _default_account(self) -> None:
        # No controller manager makes the namespace's default ServiceAccount, which admission wants
        # for the daemon pods.
        core = client.CoreV1Api(self.api)
        try:
            await core.create_namespaced_service_account(
                sc.OPERATOR_NAMESPACE, cast(Any, {"metadata": {"name": "default"}})
            )
        except ApiException as error:
            if error.status != 409:
                raise

    async def prepare(self, node: str, ref: tuple[str, str, str], since: float) -> None:
        """NodePrepareResources for the claim until it succeeds, called again as the kubelet does
        after an answer without the channel."""
        deadline = time.monotonic() + SERVED_WITHIN
        while True:
            try:
                answer = (await self.kubelets[node].prepare([ref], timeout=KUBELET_CALL))[ref[2]]
                why = str(answer.error)
            except grpc.aio.AioRpcError as error:
                why = f"{error.code()}: {error.details()}"
            if not why:
                self.prepared += 1
                self.prepare_seconds.append(time.monotonic() - since)
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"claim {ref[0]}/{ref[1]} on {node} not prepared: {why}")
            self.retried += 1
            await asyncio.sleep(1.0)

    async def unprepare(self, node: str, ref: tuple[str, str, str]) -> None:
        """NodeUnprepareResources for the claim, as the kubelet calls it once the claim's pod ended."""
        why = str((await self.kubelets[node].unprepare([ref]))[ref[2]].error)
        if why:
            raise RuntimeError(f"claim {ref[0]}/{ref[1]} on {node} not unprepared: {why}")
        self.unprepared += 1

    def _read(self) -> list[tuple[str, dict[str, ClaimRecord]]]:
        read = []
        for node, plugin in self.plugins.items():
            try:
                read.append((node, plugin.checkpoint()))
            except (OSError, ValueError, KeyError, AssertionError):
                # Replaced atomically, the file is never half written; still, count what fails.
                self.unreadable += 1
        return read

    async def sample(self) -> None:
        """Read every checkpoint; a channel two domains' prepared claims in one clique name is a moment."""
        started = time.monotonic()
        read = await asyncio.to_thread(self._read)
        self.slowest_read = max(self.slowest_read, time.monotonic() - started)
        # (clique, channel) -> domain -> its claims there (node/claim).
        holders: dict[tuple[str, int], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        live = 0
        for node, records in read:
            for uid, record in records.items():
                if record.state != "PrepareCompleted":
                    continue
                live += 1
                self.completed.add(uid)
                for device in record.devices:
                    if device.channel is not None:
                        holders[(self.clique_of[node], device.channel)][device.domain_id].append(
                            f"{node}/{uid[:8]}"
                        )
        self.samples += 1
        self.peak = max(self.peak, live)
        self.left = live
        shared = {key: domains for key, domains in holders.items() if len(domains) > 1}
        if shared:
            self.moments += 1
            (clique, channel), domains = next(iter(shared.items()))
            held = "; ".join(f"domain {d[:8]} ({', '.join(claims)})" for d, claims in domains.items())
            self.doubles.append(f"sample {self.samples}, clique {clique[:8]}, channel {channel}: {held}")

    def _rss(self) -> str:
        sizes: list[int] = []
        for plugin in self.plugins.values():
            if plugin.process is None or plugin.process.returncode is not None:
                continue
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{plugin.process.pid}/status").read_text()
                sizes.extend(
                    int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")
                )
        if not sizes:
            return "-"
        return f"{max(sizes) / 1024:.0f} / {sum(sizes) / 1024:.0f} MiB"

    async def sampler(self, done: asyncio.Event) -> None:
        """Sample every `SAMPLE_EVERY` seconds until `done`, then once more."""
        while not done.is_set():
            await self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), SAMPLE_EVERY)
        await self.sample()

    def print(self) -> None:
        """The node side's figures."""
        print(f"node side: {len(self.plugins)} kubelet plugins, one process each", flush=True)
        print(
            f"  node side: moments two live domains held one channel (plugins' checkpoints): {self.moments}",
            flush=True,
        )
        report("checkpoint samples (every node's read in each)", str(self.samples))
        report("slowest sample (every checkpoint read)", f"{self.slowest_read * 1000:.0f} ms")
        report(
            "claims prepared (kubelet's answers / seen in samples)",
            f"{self.prepared} / {len(self.completed)}",
        )
        report("peak prepared claims at once", str(self.peak))
        report("claims allocated -> prepared, p50 / p99", _p50_p99(self.prepare_seconds))
        report("prepare calls made again (no channel in time)", str(self.retried))
        report("claims unprepared / left prepared at the end", f"{self.unprepared} / {self.left}")
        report("plugin RSS per node, most / all nodes (after the churn)", self._rss())
        if self.unreadable:
            report("checkpoint reads that failed", str(self.unreadable))
        for line in self.doubles[:5]:
            print(f"    {line}")


def report(figure: str, value: str) -> None:
    """Print one figure."""
    print(f"  {figure:<58} {value:>16}", flush=True)


async def churn(
    pool: Pool, clique: str, count: int, interval: float, rng: random.Random, node_side: NodeSide | None
) -> None:
    """`count` domains arriving every `interval` seconds, each holding its channel 1-3 s; with
    `node_side`, each claim prepared on its node's plugin and unprepared before it goes."""
    namespace = "bench-churn"
    await sc.create_namespace(pool.api, namespace)
    latencies: list[float] = []
    pool.with_config = node_side is not None

    async def life(index: int) -> None:
        await asyncio.sleep(index * interval)
        domain = await pool.arrive(namespace, f"churn-{index:03d}", rng)
        prepares = []
        if node_side is not None:
            prepares = [
                asyncio.create_task(node_side.prepare(node, ref, domain.allocated))
                for node, ref in domain.refs
            ]
        latencies.append(await pool.served(domain, clique))
        # The pods start once their claims are prepared.
        await asyncio.gather(*prepares)
        await asyncio.sleep(rng.uniform(1.0, 3.0))  # the job's work
        if node_side is not None:
            # The pods ended: the kubelet unprepares their claims before they are deallocated.
            for node, ref in domain.refs:
                await node_side.unprepare(node, ref)
        await pool.leave(namespace, domain)

    done = asyncio.Event()
    sampler = asyncio.create_task(node_side.sampler(done)) if node_side is not None else None
    started = time.monotonic()
    try:
        await asyncio.gather(*(life(i) for i in range(count)))
        drained = await pool.drained()
    finally:
        done.set()
        if sampler is not None:
            await sampler
    elapsed = time.monotonic() - started
    print(f"churn: {count} domains, two claims each, one every {interval:.2f}s, pool {pool.channels}")
    report("domains served / created", f"{len(latencies)} / {count}")
    report("claims allocated -> channel given, p50 / p99", _p50_p99(latencies))
    report("pool high-water mark (channels held at once)", str(pool.watch.high_water[clique]))
    report("moments two live domains held one channel", str(pool.watch.double_moments))
    report("clique objects left after the churn (leaks)", "0" if drained else str(len(pool.watch.objects)))
    report("watch events checked", str(pool.watch.events))
    report("wall time", f"{elapsed:.0f}s")
    for line in pool.watch.doubles[:5]:
        print(f"    {line}")
    if node_side is not None:
        node_side.print()


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
        rack = nvl72_racks(1, args.nodes)
        clique = rack[0].clique_id
        async with await config.new_client_from_config(config_file=str(cluster.kubeconfig)) as api:
            await create_nodes(api, rack)
            await prepare_operator(api, sc.OPERATOR_NAMESPACE, [n.name for n in rack])
            print(f"control plane up ({workdir}); {len(rack)} nodes in one clique", flush=True)
            nodes = [n.name for n in rack]
            node_side = NodeSide(cluster, api, rack) if args.node_side else None
            big = Pool(cluster, api, args.pool, nodes)
            try:
                if node_side is not None:
                    began = time.monotonic()
                    await node_side.start()
                    print(
                        f"node side: {len(rack)} kubelet plugins up in {time.monotonic() - began:.0f}s",
                        flush=True,
                    )
                await big.start()
                try:
                    await churn(big, clique, args.domains, args.interval, random.Random(args.seed), node_side)
                finally:
                    await big.stop()
            finally:
                if node_side is not None:
                    await node_side.stop()
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
    parser.add_argument("--nodes", type=int, default=18, help="nodes of the rack (one clique)")
    parser.add_argument(
        "--node-side",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the kubelet plugin on every node and prepare the churn's claims there",
    )
    asyncio.run(run(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
