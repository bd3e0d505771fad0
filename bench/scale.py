"""Scale benchmarks of the controller on the local control plane; prints its figures (not a test).

    python bench/scale.py [--scenarios domains,join] [--waves 1000,2000,5000,10000] [--racks 278]

domains: ComputeDomains created in waves up to the last target; after each wave its duration,
    latencies, controller writes, memory and CPU, then the controller's memory slope per 1000 domains.
join: one domain over racks x 18 KWOK nodes joined by an Indexed Job of one pod per node: the phases,
    writes (from the audit log), the largest object written and one node's watch fan-out. A scheduler
    double places the pods (kube-scheduler's DRA allocation, not the controller, bounds a join of
    thousands of nodes on a small machine; see standin.py); --scheduler kube leaves it to kube-scheduler.

Each scenario runs on a control plane of its own, with the controller as its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from kubernetes_asyncio import config

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The test bed is a source root of its own, outside the product package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testbed"))

import guards
import procstats
import run
import scalejoin
import scenarios as sc
from cdtestbed.cluster import ClusterOptions, LocalCluster
from cdtestbed.controller_process import ControllerProcess
from cdtestbed.install import prepare_operator
from cdtestbed.nodes import add_ready_nodes
from cdtestbed.tools import Tools, repo_root
from cdtestbed.topology import nvl72_racks
from scalejoin import Phases
from standin import SchedulerStandIn

DOMAINS_NAMESPACE = "bench-domains"
# Column name -> the control-plane component (or the controller) whose CPU it shows.
CPU_COLUMNS = {
    "ctrl": "controller",
    "apisrv": "kube-apiserver",
    "etcd": "etcd",
    "kcm": "kube-controller-manager",
    "sched": "kube-scheduler",
    "kwok": "kwok",
}
CACHE_GAUGES = ("computedomain_cache_objects", "computedomain_cache_bytes")


@dataclass(frozen=True)
class Wave:
    """What one wave of the domains scenario measured."""

    target: int
    created: int
    seconds: float
    p50_ms: float
    p99_ms: float
    writes_per_domain: float
    rss_mib: float
    peak_mib: float
    cpu: dict[str, float]


@contextlib.asynccontextmanager
async def bench_on_cluster(
    options: ClusterOptions, racks: int, node_timeout: float, setup: Phases, keep: bool
) -> AsyncIterator[run.Bench]:
    """A control plane with `racks` racks of fake nodes, the operator's prerequisites and the controller
    started (each step marked in `setup`); everything is stopped on the way out, whatever happened, and
    the bulky state (etcd's data, the audit log) removed unless `keep`: the logs stay."""
    tools = Tools.default()
    if tools.missing():
        tools.build()
    workdir = Path(tempfile.mkdtemp(prefix="scale-", dir=repo_root() / ".work"))
    with LocalCluster(workdir, tools, options) as cluster:
        print(f"control plane up ({workdir})", flush=True)
        setup.mark("control plane up")
        identity = cluster.kubeconfig_for(run.CONTROLLER_USER, ("system:masters",))
        async with await config.new_client_from_config(config_file=str(cluster.kubeconfig)) as api:
            nodes = nvl72_racks(racks)
            began = time.monotonic()
            if nodes:
                await add_ready_nodes(api, nodes, timeout=node_timeout)
                print(f"  {len(nodes)} nodes Ready in {time.monotonic() - began:.1f} s", flush=True)
                setup.mark(f"{len(nodes)} nodes ready")
            began = time.monotonic()
            await prepare_operator(api, sc.OPERATOR_NAMESPACE, [n.name for n in nodes])
            print(f"  CRDs, classes and slices in place in {time.monotonic() - began:.1f} s", flush=True)
            setup.mark("CRDs, device classes and slices in place")
            controller = run.start_controller(identity, workdir)
            setup.mark("controller ready")
            try:
                yield run.Bench(cluster, api, controller)
            finally:
                controller.stop()
    if not keep:
        shutil.rmtree(workdir / "etcd", ignore_errors=True)
        cluster.audit_log.unlink(missing_ok=True)


def cache_gauges(controller: ControllerProcess) -> dict[str, dict[str, float]]:
    """The controller's cache gauges by name, each `labels -> value` (empty where it has none)."""
    _, text = controller.get("/metrics")
    return {name: procstats.metric_samples(text, name) for name in CACHE_GAUGES}


async def domains(bench: run.Bench, waves: list[int], settle: float, scale: float) -> list[Wave]:
    """Create domains in waves up to each target; measure each wave once all of it has its children."""
    print(f"domains: waves to {', '.join(map(str, waves))} domains", flush=True)
    assert bench.controller.process is not None
    pid = bench.controller.process.pid
    await sc.create_namespace(bench.api, DOMAINS_NAMESPACE)
    watcher = await guards.open_domain_watcher(bench.api, DOMAINS_NAMESPACE)
    await asyncio.sleep(settle)
    print(f"  controller RSS before the first wave: {procstats.memory_mib(pid)[0]:.0f} MiB", flush=True)
    results: list[Wave] = []
    total = 0
    try:
        for index, target in enumerate(waves):
            count = target - total
            if count <= 0:
                print(f"  wave to {target}: already {total} domains, skipped", flush=True)
                continue
            timeout = scale * (60 + 0.2 * count)
            cpu_before = run.cpu_by_component(bench.cluster, pid)
            writes_before = bench.controller.metric("computedomain_api_writes_total")
            started = time.monotonic()
            sent = await sc.create_domains(bench.api, DOMAINS_NAMESPACE, count, f"w{index}")
            try:
                await guards.while_alive(bench.controller, watcher.wait(set(sent), "settled", timeout))
            except TimeoutError as error:
                raise TimeoutError(f"domains: wave to {target} not settled: {error}") from None
            done = max(watcher.settled[name] for name in sent)
            cpu_after = run.cpu_by_component(bench.cluster, pid)
            writes = bench.controller.metric("computedomain_api_writes_total") - writes_before
            p50, p99, _ = sc.latency_figures(sent, watcher.settled)
            await asyncio.sleep(settle)  # let the last echoes pass before reading the settled memory
            rss, peak = procstats.memory_mib(pid)
            total = target
            wave = Wave(
                target,
                count,
                done - started,
                p50,
                p99,
                writes / count,
                rss,
                peak,
                {column: cpu_after[name] - cpu_before[name] for column, name in CPU_COLUMNS.items()},
            )
            results.append(wave)
            print(
                f"  wave to {target}: {count} in {wave.seconds:.1f} s, p50/p99 {p50:.0f}/{p99:.0f} ms, "
                f"{wave.writes_per_domain:.2f} writes/domain, RSS {rss:.0f} MiB (peak {peak:.0f})",
                flush=True,
            )
            for name, samples in cache_gauges(bench.controller).items():
                if samples:
                    shown = ", ".join(
                        f"{labels or '-'} {value:.0f}" for labels, value in sorted(samples.items())
                    )
                    print(f"    {name}: {shown}", flush=True)
    finally:
        await watcher.stop()
    report_waves(bench, results)
    return results


def report_waves(bench: run.Bench, waves: list[Wave]) -> None:
    """The waves as a table, then the memory slope and the API server's CPU per 1000 domains."""
    if not waves:
        return
    cpu_head = " ".join(f"{c:>7}" for c in CPU_COLUMNS)
    print(
        f"\n  {'domains':>8} {'new':>6} {'secs':>7} {'p50 ms':>7} {'p99 ms':>7} {'wr/dom':>6} "
        f"{'RSS MiB':>8} {'peak':>6}  CPU s: {cpu_head}"
    )
    for w in waves:
        cpu = " ".join(f"{w.cpu[c]:>7.1f}" for c in CPU_COLUMNS)
        print(
            f"  {w.target:>8} {w.created:>6} {w.seconds:>7.1f} {w.p50_ms:>7.0f} {w.p99_ms:>7.0f} "
            f"{w.writes_per_domain:>6.2f} {w.rss_mib:>8.0f} {w.peak_mib:>6.0f}         {cpu}"
        )
    print(flush=True)
    per_1000 = 1000 * procstats.slope([w.target for w in waves], [w.rss_mib for w in waves])
    last = waves[-1]
    bench.report(f"domains: controller RSS at {last.target}", f"{last.rss_mib:.0f} MiB")
    bench.report("domains: controller peak RSS", f"{max(w.peak_mib for w in waves):.0f} MiB")
    if len(waves) > 1:
        bench.report("domains: controller RSS slope per 1000 domains", f"{per_1000:.1f} MiB")
    created = sum(w.created for w in waves)
    apiserver = sum(w.cpu["apisrv"] for w in waves)
    controller = sum(w.cpu["ctrl"] for w in waves)
    bench.report("domains: kube-apiserver CPU s per 1000 domains", f"{1000 * apiserver / created:.1f} s")
    bench.report("domains: controller CPU s per 1000 domains", f"{1000 * controller / created:.1f} s")
    writes = sum(w.writes_per_domain * w.created for w in waves) / created
    bench.report("domains: controller writes per domain", f"{writes:.2f}", "<= 6")


async def run_scenarios(args: argparse.Namespace) -> list[run.Bench]:
    """Each chosen scenario on a control plane of its own; returns what each reported."""
    chosen = [s for s in args.scenarios.split(",") if s]
    unknown = set(chosen) - {"domains", "join"}
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))} (known: domains, join)")
    benches = []
    if "domains" in chosen:
        waves = sorted(int(w) for w in args.waves.split(","))
        options = ClusterOptions(audit=args.audit, controllers_qps=args.controllers_qps)
        async with bench_on_cluster(options, 0, 0, Phases(), args.keep) as bench:
            benches.append(bench)
            await domains(bench, waves, args.settle, args.timeout_scale)
    if "join" in chosen:
        options = ClusterOptions(
            audit=not args.no_audit,
            node_lease_seconds=args.node_lease,
            controllers_qps=args.controllers_qps,
            scheduler=args.scheduler == "kube",
        )
        nodes = nvl72_racks(args.racks)
        node_timeout = args.timeout_scale * (120 + 0.2 * len(nodes))
        setup = Phases()
        async with bench_on_cluster(options, args.racks, node_timeout, setup, args.keep) as bench:
            benches.append(bench)
            first = nodes[0]
            standin = None
            if args.scheduler == "standin":
                standin = SchedulerStandIn(bench.api, [n.name for n in nodes])
            await scalejoin.join(
                bench,
                args.racks,
                first.name,
                first.clique_id,
                args.anti_affinity,
                args.timeout_scale,
                setup,
                standin,
            )
    return benches


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenarios", default="domains,join", help="comma-separated subset to run")
    parser.add_argument("--waves", default="1000,2000,5000,10000", help="domain totals after each wave")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after a wave before reading RSS")
    parser.add_argument("--audit", action="store_true", help="audit log for the domains scenario")
    parser.add_argument("--racks", type=int, default=278, help="NVL72 racks (18 nodes each) for the join")
    parser.add_argument("--no-audit", action="store_true", help="no audit log for the join")
    parser.add_argument(
        "--anti-affinity",
        action="store_true",
        help="keep the join Job's pod anti-affinity (one channel device per node spreads pods anyway)",
    )
    parser.add_argument(
        "--scheduler",
        choices=("kube", "standin"),
        default="standin",
        help="who places the join's pods: the scheduler double of standin.py, or kube-scheduler",
    )
    parser.add_argument("--node-lease", type=int, default=1800, help="KWOK node lease seconds for the join")
    parser.add_argument(
        "--controllers-qps",
        type=float,
        default=1000,
        help="client QPS of kube-controller-manager and kube-scheduler (0: their test-bed defaults)",
    )
    parser.add_argument("--keep", action="store_true", help="keep etcd's data and the audit log")
    parser.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every deadline by this")
    args = parser.parse_args()
    started = time.monotonic()
    try:
        benches = asyncio.run(run_scenarios(args))
    except TimeoutError as error:
        print(f"\nscale bench timed out: {error}", file=sys.stderr)
        return 1
    except RuntimeError as error:
        print(f"\nscale bench failed: {error}", file=sys.stderr)
        return 1
    print(f"\nsummary ({time.monotonic() - started:.0f} s; figure, measured, target):")
    for bench in benches:
        for figure, value, target in bench.rows:
            print(f"  {figure:<52} {value:>14}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
