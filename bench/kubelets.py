"""Benchmarks on real kubelet nodes with the real kubelet plugin; prints its figures (not a test).

    python bench/kubelets.py [--nodes 4,18] [--rounds 3] [--imex-mode domain|clique|both]

For each domain size: a private control plane, that many real kubelet nodes (one clique), a plugin
per node and the controller (`cdtestbed.kubeletbed`). Each round creates a fresh ComputeDomain and a
Job with one pod per node, and times per pod: its channel claim allocated (the scheduler's write, seen
by a watch) -> its node's IMEX daemon Ready -> its container created (the runtime double's record).
A fresh domain's pods wait for their daemons, so the first figure includes an IMEX daemon's start.

Also: how long a plugin takes to register with its kubelet, and the resident memory of the plugins
(per node, beside NVIDIA's Go plugin's figure on the same bed), kubelets and runtime doubles.
`bench/footprint.py` takes the plugin's figure apart.

`--imex-mode clique` installs in clique mode instead (`imex.mode=clique`): the clique daemons are
started and Ready before the first round, and each fresh domain's pods wait only for its channel
(claim allocated -> channel recorded in the domain's clique object -> container created). `both` runs
each mode on a bed of its own, one after the other, and prints the two side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from kubernetes_asyncio import client, config, watch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testbed"))

import procstats
import scenarios as sc
from cdtestbed.cluster import ClusterOptions, LocalCluster
from cdtestbed.kubeletbed import NAMESPACE, KubeletBed, kubelet_bed
from cdtestbed.kubeletbed import pod_commands as bed_commands
from cdtestbed.kubelets import KubeletOptions, can_run_kubelet
from cdtestbed.tools import Tools, repo_root
from cdtestbed.topology import nvl72_racks
from computedomain.api import names
from computedomain.plugin.gate import STATE_FILE_NAME

MIB = 1024 * 1024
MODES = {
    names.IMEX_MODE_DOMAIN: (names.IMEX_MODE_DOMAIN,),
    names.IMEX_MODE_CLIQUE: (names.IMEX_MODE_CLIQUE,),
    "both": (names.IMEX_MODE_DOMAIN, names.IMEX_MODE_CLIQUE),
}
TOTAL = "claim allocated -> container created, p50 / p99"
# NVIDIA's Go kubelet plugin of its ComputeDomain driver, run earlier on this same real-kubelet bed
# beside ours: 58-61 MiB resident per node. A reference figure measured by hand; this bench does not
# run NVIDIA's plugin.
NVIDIA_PLUGIN_RSS_MIB = (58, 61)
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def log_time(line: str) -> float:
    """The wall-clock time of one of the plugin's text log lines (logged in UTC)."""
    match = _LOG_TIME.match(line)
    assert match, line
    stamp = datetime.strptime(match.group(1) + "+0000", "%Y-%m-%d %H:%M:%S,%f%z")
    return stamp.timestamp()


def registration_seconds(log: Path) -> tuple[float, float]:
    """(process start -> registered, DRA socket serving -> registered) from a plugin's first start."""
    lines = log.read_text().splitlines()
    started = next(log_time(line) for line in lines if "starting: node=" in line)
    serving = next(log_time(line) for line in lines if "serving DRA on" in line)
    registered = next(log_time(line) for line in lines if "registered with the kubelet" in line)
    return registered - started, registered - serving


def quantiles(values: Sequence[float]) -> str:
    """`p50 / p99` in seconds."""
    return f"{sc.percentile(list(values), 0.5):.2f} s / {sc.percentile(list(values), 0.99):.2f} s"


class Timeline:
    """When each claim of a namespace was allocated (and for which pod), and each daemon became Ready."""

    def __init__(self, api: client.ApiClient, namespace: str, domain_uid: str) -> None:
        self.api, self.namespace, self.domain_uid = api, namespace, domain_uid
        self.allocated: dict[str, float] = {}  # pod -> time
        self.daemon_ready: dict[str, float] = {}  # node -> time
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Begin watching claims and daemon pods."""
        self._tasks = [asyncio.create_task(self._claims()), asyncio.create_task(self._daemons())]

    async def stop(self) -> None:
        """Stop watching."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _claims(self) -> None:
        custom = client.CustomObjectsApi(self.api)
        async with watch.Watch().stream(
            custom.list_namespaced_custom_object, "resource.k8s.io", "v1", self.namespace, "resourceclaims"
        ) as stream:
            async for event in stream:
                claim = cast(dict[str, Any], event["object"])
                status = claim.get("status") or {}
                for consumer in status.get("reservedFor") or []:
                    if status.get("allocation"):
                        self.allocated.setdefault(consumer["name"], time.time())

    async def _daemons(self) -> None:
        core = client.CoreV1Api(self.api)
        selector = f"{names.DOMAIN_LABEL}={self.domain_uid}"
        async with watch.Watch().stream(
            core.list_namespaced_pod, NAMESPACE, label_selector=selector
        ) as stream:
            async for event in stream:
                pod = event["object"]
                ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
                if ready and pod.spec.node_name:
                    self.daemon_ready.setdefault(pod.spec.node_name, time.time())


def created_at(bed: KubeletBed, namespace: str) -> dict[str, tuple[str, float]]:
    """pod -> (node, when its first container was created), from the runtime doubles' records."""
    found: dict[str, tuple[str, float]] = {}
    for node in bed.nodes:
        for path in (node.runtime_state / "containers").glob("*.json"):
            text = path.read_text()
            if f'"podNamespace": "{namespace}"' in text:
                pod = re.search(r'"podName": "([^"]+)"', text)
                assert pod is not None
                when = path.stat().st_mtime
                if pod.group(1) not in found or when < found[pod.group(1)][1]:
                    found[pod.group(1)] = (node.name, when)
    return found


def state_ready_at(bed: KubeletBed, node: str, domain_uid: str) -> float | None:
    """When the domain's daemon on `node` wrote that IMEX is ready (its state file), or None."""
    path = bed.plugins[node].host.state / "domains" / domain_uid / STATE_FILE_NAME
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return float(state["since"]) if state.get("ready") is True else None


Sample = tuple[float, float, float, float]


async def one_round(bed: KubeletBed, size: int, index: int) -> list[Sample]:
    """A fresh domain and an N-pod Job; per pod: allocated -> daemon container created -> daemon Ready
    -> container created, and allocated -> container created."""
    api = bed.api
    namespace = f"bench-{size}-{index}"
    await sc.create_pod_namespace(api, namespace)
    body = await client.CustomObjectsApi(api).create_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.DOMAIN_PLURAL, sc.domain("cd", namespace, size)
    )
    timeline = Timeline(api, namespace, body["metadata"]["uid"])
    timeline.start()
    await asyncio.sleep(0.5)  # the watches are open
    job = sc.join_job("cd", namespace, size)
    await client.BatchV1Api(api).create_namespaced_job(namespace, cast(Any, job))
    await wait_containers(bed, namespace, size, index)
    await timeline.stop()
    prefix = names.daemon_name(body["metadata"]["uid"])
    daemons = {
        node: when for pod, (node, when) in created_at(bed, NAMESPACE).items() if pod.startswith(prefix)
    }
    samples = []
    for pod, (node, created) in created_at(bed, namespace).items():
        # The daemon's own word (its state file) usually comes before its pod's Ready condition,
        # which waits for the kubelet's next probe: the earlier of the two is when it was ready.
        said = [state_ready_at(bed, node, body["metadata"]["uid"]), timeline.daemon_ready.get(node)]
        allocated, ready = timeline.allocated[pod], min(t for t in said if t is not None)
        samples.append(
            (daemons[node] - allocated, ready - daemons[node], created - ready, created - allocated)
        )
    await client.CoreV1Api(api).delete_namespace(namespace)
    # The next round starts on nodes without daemons of this domain.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        daemon_pods = await client.CoreV1Api(api).list_namespaced_pod(
            NAMESPACE, label_selector=names.DOMAIN_LABEL
        )
        if not daemon_pods.items:
            break
        await asyncio.sleep(0.5)
    return samples


class ChannelTimeline(Timeline):
    """Clique mode: when each claim of a namespace was allocated (and for which pod), and when each of
    the domain's clique objects first held a channel."""

    def __init__(self, api: client.ApiClient, namespace: str, domain_uid: str) -> None:
        super().__init__(api, namespace, domain_uid)
        self.channel_given: dict[str, float] = {}  # clique -> time

    def start(self) -> None:
        """Begin watching claims and the domain's clique objects (it has no daemon pods)."""
        self._tasks = [asyncio.create_task(self._claims()), asyncio.create_task(self._channels())]

    async def _channels(self) -> None:
        custom = client.CustomObjectsApi(self.api)
        selector = f"{names.DOMAIN_LABEL}={self.domain_uid}"
        async with watch.Watch().stream(
            custom.list_namespaced_custom_object,
            names.GROUP,
            names.VERSION,
            NAMESPACE,
            names.CLIQUE_PLURAL,
            label_selector=selector,
        ) as stream:
            async for event in stream:
                clique = cast(dict[str, Any], event["object"])
                if isinstance(clique.get("channel"), int):
                    clique_id = clique["metadata"]["labels"][names.CLIQUE_LABEL]
                    self.channel_given.setdefault(clique_id, time.time())


ChannelSample = tuple[float, float, float]


async def clique_round(bed: KubeletBed, size: int, index: int) -> list[ChannelSample]:
    """Clique mode: a fresh domain and an N-pod Job on warm clique daemons; per pod: allocated ->
    channel recorded, channel recorded -> container created, and allocated -> container created."""
    api = bed.api
    namespace = f"bench-clique-{size}-{index}"
    await sc.create_pod_namespace(api, namespace)
    body = await client.CustomObjectsApi(api).create_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.DOMAIN_PLURAL, sc.domain("cd", namespace, size)
    )
    uid = body["metadata"]["uid"]
    timeline = ChannelTimeline(api, namespace, uid)
    timeline.start()
    await asyncio.sleep(0.5)  # the watches are open
    await client.BatchV1Api(api).create_namespaced_job(
        namespace, cast(Any, sc.join_job("cd", namespace, size))
    )
    await wait_containers(bed, namespace, size, index)
    await timeline.stop()
    (given,) = timeline.channel_given.values()  # one clique
    samples = []
    for pod, (_, created) in created_at(bed, namespace).items():
        # A pod allocated after its domain got the channel waited for nothing of it.
        allocated = timeline.allocated[pod]
        channel = max(given, allocated)
        samples.append((channel - allocated, created - channel, created - allocated))
    await client.CoreV1Api(api).delete_namespace(namespace)
    # The next round starts with the channel back in the pool.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        left = await client.CustomObjectsApi(api).list_namespaced_custom_object(
            names.GROUP,
            names.VERSION,
            NAMESPACE,
            names.CLIQUE_PLURAL,
            label_selector=f"{names.DOMAIN_LABEL}={uid}",
        )
        if not left["items"]:
            break
        await asyncio.sleep(0.5)
    return samples


async def wait_clique_daemons(bed: KubeletBed, size: int, timeout: float = 300.0) -> None:
    """Wait until a clique daemon is Ready on each of the `size` nodes."""
    core = client.CoreV1Api(bed.api)
    deadline = time.monotonic() + timeout
    while True:
        pods = (await core.list_namespaced_pod(NAMESPACE, label_selector=names.CLIQUE_DAEMONS_SELECTOR)).items
        ready = {
            p.spec.node_name
            for p in pods
            if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        }
        if len(ready) >= size:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(ready)} of {size} clique daemons Ready")
        await asyncio.sleep(0.5)


async def wait_containers(bed: KubeletBed, namespace: str, size: int, index: int) -> None:
    """Wait until a container of each of the round's `size` pods was created."""
    deadline = time.monotonic() + 300
    while len(created_at(bed, namespace)) < size:
        if time.monotonic() > deadline:
            raise TimeoutError(f"round {index}: only {len(created_at(bed, namespace))} of {size} containers")
        await asyncio.sleep(0.2)


def inotify_instances(pid: int) -> int:
    """How many inotify instances a process holds (the per-user limit caps how many kubelets fit)."""
    fds = Path(f"/proc/{pid}/fd")
    return sum(1 for fd in fds.iterdir() if _readlink(fd) == "anon_inode:inotify")


def inotify_limit() -> str:
    """The per-user limit of inotify instances (`fs.inotify.max_user_instances`)."""
    return Path("/proc/sys/fs/inotify/max_user_instances").read_text().strip()


def _readlink(path: Path) -> str:
    try:
        return str(path.readlink())
    except OSError:
        return ""


def rss(pids: Sequence[int]) -> str:
    """`min / median / max` resident memory (VmRSS) of processes, one per node, in MiB."""
    values = [procstats.memory_mib(pid)[0] for pid in pids]
    return f"{min(values):.0f} / {statistics.median(values):.0f} / {max(values):.0f} MiB"


async def domain_rounds(bed: KubeletBed, size: int, rounds: int, label: str, report: Any) -> list[float]:
    """Domain mode's rounds and figures; the claim allocated -> container created times."""
    samples: list[Sample] = []
    for index in range(rounds):
        samples += await one_round(bed, size, index)
        print(f"    round {index + 1}/{rounds} done ({len(samples)} pods)", flush=True)
    figures = (
        (TOTAL, 3),
        ("  of which allocated -> IMEX daemon container created", 0),
        ("  of which daemon container created -> daemon Ready", 1),
        ("  of which daemon Ready -> container created", 2),
    )
    for figure, column in figures:
        report(f"{label}: {figure}", quantiles([s[column] for s in samples]))
    return [s[3] for s in samples]


async def clique_rounds(bed: KubeletBed, size: int, rounds: int, label: str, report: Any) -> list[float]:
    """Clique mode's rounds and figures (the clique daemons are warm); the claim allocated -> container
    created times."""
    samples: list[ChannelSample] = []
    for index in range(rounds):
        samples += await clique_round(bed, size, index)
        print(f"    round {index + 1}/{rounds} done ({len(samples)} pods)", flush=True)
    figures = (
        (TOTAL, 2),
        ("  of which allocated -> channel recorded", 0),
        ("  of which channel recorded -> container created", 1),
    )
    for figure, column in figures:
        report(f"{label}: {figure}", quantiles([s[column] for s in samples]))
    return [s[2] for s in samples]


async def bench_size(size: int, rounds: int, report: Any, mode: str = names.IMEX_MODE_DOMAIN) -> list[float]:
    """Every figure for one domain size in one IMEX mode; the claim allocated -> container created
    times."""
    clique = mode == names.IMEX_MODE_CLIQUE
    label = f"{size} nodes, clique mode" if clique else f"{size} nodes"
    tools = Tools.default()
    prefix = f"bench-kubelets-{size}-{'clique-' if clique else ''}"
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=repo_root() / ".work"))
    with LocalCluster(workdir, tools, ClusterOptions()) as cluster:
        async with await config.new_client_from_config(config_file=str(cluster.kubeconfig)) as api:
            started = time.monotonic()
            trays = nvl72_racks(1, size, prefix="bench")
            options = KubeletOptions(commands=pod_commands())
            async with kubelet_bed(cluster, api, trays, options, imex_mode=mode) as bed:
                report(f"{label}: kubelets, plugins and controller up", f"{time.monotonic() - started:.0f} s")
                registration = [registration_seconds(p.log) for p in bed.plugins.values()]
                report(
                    f"{label}: plugin start -> registered, p50 / p99",
                    quantiles([r[0] for r in registration]),
                )
                report(
                    f"{label}: DRA socket up -> registered, p50 / p99",
                    quantiles([r[1] for r in registration]),
                )
                if clique:
                    up = time.monotonic()
                    await wait_clique_daemons(bed, size)
                    report(f"{label}: bed up -> every clique daemon Ready", f"{time.monotonic() - up:.1f} s")
                    totals = await clique_rounds(bed, size, rounds, label, report)
                else:
                    totals = await domain_rounds(bed, size, rounds, label, report)
                report(
                    f"{label}: plugin RSS per node, min / median / max",
                    rss([p.pid or 0 for p in bed.plugins.values()]),
                )
                low, high = NVIDIA_PLUGIN_RSS_MIB
                report("  reference: NVIDIA's Go plugin on this bed, measured earlier", f"{low}-{high} MiB")
                report(
                    f"{label}: kubelet RSS, min / median / max",
                    rss([n.processes["kubelet"].pid for n in bed.nodes]),
                )
                kubelet_inotify = [inotify_instances(n.processes["kubelet"].pid) for n in bed.nodes]
                limit = inotify_limit()
                report(
                    f"{label}: inotify instances per kubelet (per-user limit {limit})",
                    f"{statistics.median(kubelet_inotify):.0f}",
                )
                report(
                    f"{label}: runtime double RSS, min / median / max",
                    rss([n.processes["cri-double"].pid for n in bed.nodes]),
                )
    return totals


def pod_commands() -> dict[str, list[str]]:
    """The bed's command map and the base image's shell, which the daemon's state probes run."""
    return {"sh": ["/bin/sh"], **bed_commands()}


async def run(args: argparse.Namespace) -> None:
    reason = can_run_kubelet()
    if reason is not None:
        print(f"real kubelets cannot run here ({reason}); no kubelet figures", flush=True)
        return
    rows: list[tuple[str, str]] = []

    def report(figure: str, value: str) -> None:
        rows.append((figure, value))
        print(f"  {figure:<72} {value:>18}", flush=True)

    modes = MODES[args.imex_mode]
    totals: dict[tuple[int, str], list[float]] = {}
    for size in (int(n) for n in args.nodes.split(",")):
        for mode in modes:
            totals[size, mode] = await bench_size(size, args.rounds, report, mode)
    print("\nsummary (real kubelets):")
    for figure, value in rows:
        print(f"  {figure:<72} {value:>18}")
    if len(modes) > 1:
        print(f"\n{TOTAL}, a fresh domain per round:")
        print(f"  {'nodes':<8} {'per-domain daemons':>20} {'clique daemons':>20}")
        for size in sorted({size for size, _ in totals}):
            cells = [quantiles(totals[size, mode]) for mode in modes]
            print(f"  {size:<8} {cells[0]:>20} {cells[1]:>20}")


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", default="4,18", help="comma-separated domain sizes (real kubelet nodes)")
    parser.add_argument("--rounds", type=int, default=3, help="fresh domains per size")
    parser.add_argument(
        "--imex-mode",
        choices=sorted(MODES),
        default=names.IMEX_MODE_DOMAIN,
        help="imex.mode of the install: per-domain daemons, clique daemons, or both side by side",
    )
    asyncio.run(run(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
