"""Benchmarks of the controller on the local control plane; prints its figures (not a test).

    python bench/run.py [--burst 1000] [--racks 8] [--idle 60]

The controller runs as its own process with its own client identity, as it would in a cluster; the
API server's audit log tells exactly which requests it made.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from kubernetes_asyncio import client, config

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The test bed is a source root of its own, outside the product package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testbed"))

import audit
import scenarios as sc
from cdtestbed.cluster import ClusterOptions, LocalCluster
from cdtestbed.controller_process import ControllerProcess
from cdtestbed.install import prepare_operator
from cdtestbed.nodes import add_ready_nodes
from cdtestbed.tools import Tools, repo_root
from cdtestbed.topology import nvl72_racks

CONTROLLER_USER = "computedomain-controller"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_component(cluster: LocalCluster, controller_pid: int) -> dict[str, float]:
    """CPU seconds used so far by each control-plane process and the controller."""
    pids = {c.name: c.process.pid for c in cluster.components}
    pids["controller"] = controller_pid
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def metric_by_label(controller: ControllerProcess, name: str) -> dict[str, float]:
    """The samples of a one-label Prometheus metric, by label value."""
    _, text = controller.get("/metrics")
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            head, _, value = line.rpartition(" ")
            samples[head.split('"')[1]] = float(value)
    return samples


def rss_mib(pid: int) -> float:
    """The process's current resident set size (VmRSS) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_controller(identity: Path, workdir: Path) -> ControllerProcess:
    """The controller as its own process, with its own identity and leader election, once ready."""
    env = {
        "NAMESPACE": sc.OPERATOR_NAMESPACE,
        "IMAGE_NAME": "registry.example/computedomain-operator:0.1.0",
        "POD_NAME": "bench",
        "LEADER_ELECTION": "true",
    }
    controller = ControllerProcess(identity, workdir / "controller.log", env)
    controller.start()
    return controller


class Bench:
    """Holds the cluster, the controller and the results of each scenario."""

    def __init__(self, cluster: LocalCluster, api: client.ApiClient, controller: ControllerProcess) -> None:
        self.cluster = cluster
        self.api = api
        self.controller = controller
        self.rows: list[tuple[str, str, str]] = []

    def report(self, figure: str, value: str, target: str = "") -> None:
        """Record and print one figure."""
        self.rows.append((figure, value, target))
        print(f"  {figure:<52} {value:>14}  {target}", flush=True)

    def controller_requests(self, since: float, until: float) -> list[audit.Request]:
        """What the controller sent to the API server in [since, until) (none known without audit)."""
        if not self.cluster.options.audit:
            return []
        return audit.requests_by(self.cluster.audit_log, CONTROLLER_USER, since, until)

    def writes_since(self, before: float) -> float:
        """Controller writes since the metric read `before`, from the controller's own counter."""
        return self.controller.metric("computedomain_api_writes_total") - before

    async def single(self, samples: int) -> None:
        """Latency from create to all children present, one domain at a time on an idle controller."""
        print("single: one domain at a time on an idle controller", flush=True)
        await sc.create_namespace(self.api, "bench-single")
        watcher = sc.DomainWatcher(self.api, "bench-single")
        await watcher.start()
        latencies = []
        for i in range(samples):
            sent = await sc.create_domains(self.api, "bench-single", 1, f"single{i}")
            await watcher.wait(set(sent), "settled", 30)
            latencies += [(watcher.settled[n] - t) * 1000 for n, t in sent.items()]
        await watcher.stop()
        self.report(
            "single: create -> children + status, p50", f"{sc.percentile(latencies, 0.5):.0f} ms", "< 300 ms"
        )
        self.report("single: p99", f"{sc.percentile(latencies, 0.99):.0f} ms")

    async def join(self, racks: int) -> None:
        """A domain of racks x 18 nodes: time from all daemon pods Ready to the domain Ready."""
        nodes = racks * 18
        print(f"join: one domain of {nodes} nodes in {racks} cliques", flush=True)
        await sc.create_namespace(self.api, "bench-join")
        watcher = sc.DomainWatcher(self.api, "bench-join")
        await watcher.start()
        custom = client.CustomObjectsApi(self.api)
        body = sc.domain("big", "bench-join", nodes)
        created = await custom.create_namespaced_custom_object(
            "resource.nvidia.com", "v1beta1", "bench-join", "computedomains", body
        )
        await watcher.wait({"big"}, "settled", 60)
        pods = sc.DaemonPodWatcher(self.api, created["metadata"]["uid"], nodes)
        pods.start()
        start, job_created = time.time(), time.monotonic()
        job = sc.join_job("big", "bench-join", nodes)
        await client.BatchV1Api(self.api).create_namespaced_job("bench-join", cast(Any, job))
        daemons_ready = await pods.wait(600)
        await watcher.wait({"big"}, "ready", 120)
        await pods.stop()
        until = time.time() + 0.5
        await asyncio.sleep(0.5)
        took = watcher.ready["big"] - daemons_ready
        writes = audit.writes(self.controller_requests(start, until))
        self.report(f"join: all {nodes} daemons Ready -> domain Ready", f"{took * 1000:.0f} ms", "< 5 s")
        self.report("join: Job created -> domain Ready", f"{watcher.ready['big'] - job_created:.1f} s")
        self.report("join: controller writes per joining node", f"{len(writes) / nodes:.2f}")
        self.report(
            "join: status writes for the whole join", str(sum(1 for w in writes if w.subresource == "status"))
        )
        print(f"    join writes: {audit.summary(writes)}", flush=True)
        await watcher.stop()

    async def idle(self, seconds: float) -> None:
        """Requests the controller makes while nothing changes."""
        print(f"idle: {seconds:.0f} s with nothing changing", flush=True)
        await asyncio.sleep(5)  # let the last echoes of earlier scenarios settle
        start = time.time()
        await asyncio.sleep(seconds)
        requests = self.controller_requests(start, time.time())
        lease = [r for r in requests if r.resource == "leases"]
        other = [r for r in requests if r.resource != "leases"]
        self.report(f"idle: requests in {seconds:.0f} s besides lease renewals", str(len(other)), "0")
        self.report(f"idle: lease renewal requests in {seconds:.0f} s", str(len(lease)))
        if other:
            print(f"    idle requests: {audit.summary(other)}", flush=True)

    async def burst(self, count: int) -> None:
        """`count` domains created at once: time until each has its children and a status."""
        print(f"burst: {count} domains created at once", flush=True)
        await sc.create_namespace(self.api, "bench-burst")
        before = await sc.count_children(self.api, "bench-burst")
        watcher = sc.DomainWatcher(self.api, "bench-burst")
        await watcher.start()
        start, first = time.time(), time.monotonic()
        counted = self.controller.metric("computedomain_api_writes_total")
        sent = await sc.create_domains(self.api, "bench-burst", count, "burst")
        await watcher.wait(set(sent), "settled", 600)
        done = max(watcher.settled.values())
        until = time.time() + 1
        await asyncio.sleep(1)
        await watcher.stop()
        p50, p99, _ = sc.latency_figures(sent, watcher.settled)
        writes = audit.writes(self.controller_requests(start, until))
        after = await sc.count_children(self.api, "bench-burst")
        children = [a - b for a, b in zip(after, before, strict=True)]
        self.report(f"burst: {count} domains done in", f"{done - first:.1f} s", "< 20 s")
        self.report("burst: per-domain latency p50 / p99", f"{p50 / 1000:.1f} / {p99 / 1000:.1f} s")
        per_domain = len(writes) / count if self.cluster.options.audit else self.writes_since(counted) / count
        self.report("burst: controller writes per domain", f"{per_domain:.2f}", "<= 6")
        self.report("burst: DaemonSets / daemon RCTs / workload RCTs", "/".join(map(str, children)))
        print(f"    burst writes: {audit.summary(writes)}", flush=True)
        self.caches()

    def caches(self) -> None:
        """What the controller's caches hold, per kind (objects, bytes as stored, bytes per object)."""
        objects = metric_by_label(self.controller, "computedomain_cache_objects")
        stored = metric_by_label(self.controller, "computedomain_cache_bytes")
        for kind in sorted(objects):
            count, size = int(objects[kind]), stored.get(kind, 0.0)
            per = f"{size / count:.0f} B each" if count else ""
            self.report(f"cache: {kind}", f"{count} / {size / 2**20:.2f} MiB", per)


async def run(args: argparse.Namespace) -> None:
    tools = Tools.default()
    if tools.missing():
        tools.build()
    workdir = Path(tempfile.mkdtemp(prefix="bench-", dir=repo_root() / ".work"))
    with LocalCluster(workdir, tools, ClusterOptions(audit=not args.no_audit)) as cluster:
        print(f"control plane up ({workdir}); preparing {args.racks * 18} fake GB200 nodes", flush=True)
        identity = cluster.kubeconfig_for(CONTROLLER_USER, ("system:masters",))
        async with await config.new_client_from_config(config_file=str(cluster.kubeconfig)) as api:
            nodes = nvl72_racks(args.racks)
            await add_ready_nodes(api, nodes, timeout=300)
            await prepare_operator(api, sc.OPERATOR_NAMESPACE, [n.name for n in nodes])
            controller = start_controller(identity, workdir)
            assert controller.process is not None
            pid = controller.process.pid
            bench = Bench(cluster, api, controller)
            chosen = set(args.scenarios.split(","))
            try:
                if "single" in chosen:
                    await bench.single(args.single)
                if "join" in chosen:
                    await bench.join(args.racks)
                if "idle" in chosen:
                    await bench.idle(args.idle)
                if "burst" in chosen:
                    before = cpu_by_component(cluster, pid)
                    started = time.monotonic()
                    await bench.burst(args.burst)
                    elapsed = time.monotonic() - started
                    after = cpu_by_component(cluster, pid)
                    used = ", ".join(
                        f"{n} {after[n] - before[n]:.0f}s"
                        for n in sorted(after, key=lambda n: before[n] - after[n])
                    )
                    bench.report("burst: CPU seconds by process", f"{elapsed:.0f}s wall", "")
                    print(f"    {used}", flush=True)
                bench.report(
                    "controller RSS now / peak",
                    f"{rss_mib(pid):.0f} / {peak_rss_mib(pid):.0f} MiB",
                    "< 134 MiB",
                )
            finally:
                controller.stop()
    print("\nsummary (figure, measured, target):")
    for figure, value, target in bench.rows:
        print(f"  {figure:<52} {value:>14}  {target}")


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--burst", type=int, default=1000, help="domains created at once")
    parser.add_argument("--racks", type=int, default=8, help="NVL72 racks (18 nodes each) for the join")
    parser.add_argument("--idle", type=float, default=60, help="seconds of idle measurement")
    parser.add_argument("--single", type=int, default=20, help="samples of the single-domain latency")
    parser.add_argument(
        "--no-audit",
        action="store_true",
        help="no API server audit log (its cost stays out of the figures; writes then come from the "
        "controller's own metric)",
    )
    parser.add_argument("--scenarios", default="single,join,idle,burst", help="comma-separated subset to run")
    asyncio.run(run(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
