"""Benchmarks of the real-container bed; prints its figures (not a test).

    python bench/containers.py [--nodes 4] [--rounds 3] [--no-image-cold] [--no-double]

- the product image: its size (OCI archive, and unpacked as containerd stores it), `make image`
  cold (no cached root filesystem or wheels) and warm (nothing changed);
- claim allocated -> Job container created, p50 / p99, on N real kubelets with containerd, runc and
  CNI (the chart installed unchanged, every program a container), and the same rounds on the runtime
  double (`bench/kubelets.py`'s bed: host processes) in the same run;
- memory per node: containerd (with its shims), kubelet, the kubelet plugin container, one IMEX daemon
  container (its wrapper), and the node agent container.

Each round creates a fresh ComputeDomain and a Job with one pod per node (`bench/scenarios.py`), so a
round includes the IMEX daemons' start, as a first job of a domain does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from kubernetes_asyncio import client

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testbed"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import kubelets as double_bench
import scenarios as sc
from cdtestbed import images
from cdtestbed.containerbed import NAMESPACE, ContainerBed, container_bed
from cdtestbed.kubelets import KubeletNode, can_run_containers, ctr, rss_of
from cdtestbed.tools import repo_root
from cdtestbed.topology import nvl72_racks
from computedomain.api import names

MIB = 1024 * 1024
Report = Callable[[str, str], None]


def quantiles(values: Sequence[float]) -> str:
    """`p50 / p99` in seconds."""
    return f"{sc.percentile(list(values), 0.5):.2f} s / {sc.percentile(list(values), 0.99):.2f} s"


def bench_image(report: Report, cold: bool) -> None:
    """Image size and build times (`make image`'s own code)."""
    build = images.image_build()
    if cold:
        shutil.rmtree(build.cache_dir(), ignore_errors=True)
        began = time.monotonic()
        build.ensure_image()
        report("make image, cold (no cached root filesystem or wheels)", f"{time.monotonic() - began:.0f} s")
    began = time.monotonic()
    archive = build.ensure_image()
    report("make image, warm (nothing changed)", f"{time.monotonic() - began:.1f} s")
    report("image: OCI archive", f"{archive.stat().st_size / MIB:.0f} MiB")


def container_created(bed: ContainerBed, node: KubeletNode, namespace: str) -> dict[str, float]:
    """pod -> when containerd created its first (non-sandbox) container, for pods of `namespace`."""
    found: dict[str, float] = {}
    for info in bed.containers(node):
        labels = info.get("Labels", {})
        if (
            labels.get("io.kubernetes.pod.namespace") != namespace
            or "io.kubernetes.container.name" not in labels
        ):
            continue
        if labels.get("io.cri-containerd.kind") == "sandbox":
            continue
        pod = labels["io.kubernetes.pod.name"]
        when = datetime.fromisoformat(info["CreatedAt"].replace("Z", "+00:00")[:26] + "+00:00").timestamp()
        found[pod] = min(when, found.get(pod, when))
    return found


def runnable_job(namespace: str, size: int) -> dict[str, Any]:
    """The benchmark's join Job, its container running the workload stand-in (imported, so never
    pulled) until it is stopped."""
    job = sc.join_job("cd", namespace, size)
    container = job["spec"]["template"]["spec"]["containers"][0]
    container |= {"image": images.WORKLOAD_IMAGE, "command": ["bash", "-c", "exec torchrun"]}
    return job


async def container_round(bed: ContainerBed, size: int, index: int) -> list[float]:
    """One fresh domain and N-pod Job on real containers: allocated -> container created, per pod."""
    api = bed.api
    namespace = f"bench-{size}-{index}"
    await sc.create_pod_namespace(api, namespace)
    body = await client.CustomObjectsApi(api).create_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.DOMAIN_PLURAL, sc.domain("cd", namespace, size)
    )
    timeline = double_bench.Timeline(api, namespace, body["metadata"]["uid"])
    timeline.start()
    await asyncio.sleep(0.5)  # the watches are open
    await client.BatchV1Api(api).create_namespaced_job(namespace, cast(Any, runnable_job(namespace, size)))
    deadline = time.monotonic() + 300
    created: dict[str, float] = {}
    while len(created) < size:
        if time.monotonic() > deadline:
            raise TimeoutError(f"round {index}: only {len(created)} of {size} containers")
        await asyncio.sleep(0.5)
        created = {}
        for node in bed.nodes:
            created.update(await asyncio.to_thread(container_created, bed, node, namespace))
    await timeline.stop()
    samples = [when - timeline.allocated[pod] for pod, when in created.items()]
    await client.CoreV1Api(api).delete_namespace(namespace)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        daemons = await client.CoreV1Api(api).list_namespaced_pod(
            NAMESPACE, label_selector=names.DOMAIN_LABEL
        )
        if not daemons.items:
            break
        await asyncio.sleep(0.5)
    return samples


def host_pids(container_id: str) -> list[int]:
    """The host PIDs of the processes of one container (found by the container ID in their cgroup)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if container_id in (proc / "cgroup").read_text():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


async def container_rss(bed: ContainerBed, selector: str, container: str) -> list[int]:
    """Resident memory of one container of each pod matching `selector` in the operator's namespace."""
    pods = (await client.CoreV1Api(bed.api).list_namespaced_pod(NAMESPACE, label_selector=selector)).items
    values = []
    for pod in pods:
        for status in pod.status.container_statuses or []:
            if status.name == container and status.container_id:
                cid = status.container_id.split("://", 1)[1]
                values.append(sum(rss_of(pid) for pid in host_pids(cid)))
    return values


def shims_rss(node: KubeletNode) -> int:
    """Resident memory of the node's containerd shims (those in the node's PID namespace: every node
    names its containerd socket by the same path, inside its own mount namespace)."""
    namespace = os.readlink(f"/proc/{node.init_pid}/ns/pid")
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")[0]
            if command.endswith(b"containerd-shim-runc-v2") and os.readlink(proc / "ns" / "pid") == namespace:
                total += rss_of(int(proc.name))
        except OSError:
            continue
    return total


def image_listing(bed: ContainerBed, node: KubeletNode) -> str:
    """The product image's size as the node's containerd lists it."""
    for line in ctr(bed.cluster.tools, node.runtime_socket, "images", "ls", check=False).stdout.splitlines():
        if line.startswith(images.PRODUCT_PREFIX):
            return " ".join(line.split()[3:5])
    return "-"


def mib(values: Sequence[int]) -> str:
    """`median / max` in MiB."""
    if not values:
        return "-"
    return f"{statistics.median(values) / MIB:.0f} / {max(values) / MIB:.0f} MiB"


async def bench_containers(size: int, rounds: int, report: Report) -> list[float]:
    """Every real-container figure for one size; returns the samples."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-containers-{size}-", dir=repo_root() / ".work"))
    began = time.monotonic()
    async with container_bed(workdir, nvl72_racks(1, size, prefix="bench")) as bed:
        report(
            f"{size} nodes: bed up (namespace, control plane, containerd, kubelets, chart)",
            f"{time.monotonic() - began:.0f} s",
        )
        samples: list[float] = []
        for index in range(rounds):
            samples += await container_round(bed, size, index)
            print(f"    round {index + 1}/{rounds} done ({len(samples)} pods)", flush=True)
        report(
            f"{size} nodes, containerd: claim allocated -> container created, p50 / p99", quantiles(samples)
        )
        # A domain left running, for the daemon's memory.
        namespace = "bench-memory"
        await sc.create_pod_namespace(bed.api, namespace)
        await client.CustomObjectsApi(bed.api).create_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.DOMAIN_PLURAL, sc.domain("cd", namespace, size)
        )
        await client.BatchV1Api(bed.api).create_namespaced_job(
            namespace, cast(Any, runnable_job(namespace, size))
        )
        deadline = time.monotonic() + 300
        while True:
            daemon = await container_rss(bed, names.DOMAIN_LABEL, names.DAEMON_CONTAINER)
            if len(daemon) == size or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        report(
            f"{size} nodes: containerd RSS (without shims), median / max",
            mib([n.rss_bytes("containerd") for n in bed.nodes]),
        )
        report(
            f"{size} nodes: containerd shims RSS per node, median / max",
            mib([shims_rss(n) for n in bed.nodes]),
        )
        report(f"{size} nodes: kubelet RSS, median / max", mib([n.rss_bytes("kubelet") for n in bed.nodes]))
        plugin = await container_rss(bed, "app.kubernetes.io/component=kubelet-plugin", "kubelet-plugin")
        report(f"{size} nodes: kubelet plugin container RSS, median / max", mib(plugin))
        agent = await container_rss(bed, "app.kubernetes.io/component=node-agent", "node-agent")
        report(f"{size} nodes: node agent container RSS, median / max", mib(agent))
        report(
            f"{size} nodes: IMEX daemon container RSS (wrapper and IMEX double), median / max", mib(daemon)
        )
        listing = await asyncio.to_thread(image_listing, bed, bed.nodes[0])
        report("image: as containerd stores it", listing)
    return samples


async def bench_double(size: int, rounds: int, report: Report) -> None:
    """The same rounds on the runtime double (host processes), for comparison."""
    rows: list[tuple[str, str]] = []
    await double_bench.bench_size(size, rounds, lambda figure, value: rows.append((figure, value)))
    for figure, value in rows:
        if "claim allocated -> container created" in figure:
            report(f"{size} nodes, runtime double: claim allocated -> container created, p50 / p99", value)


async def run(args: argparse.Namespace) -> None:
    rows: list[tuple[str, str]] = []

    def report(figure: str, value: str) -> None:
        rows.append((figure, value))
        print(f"  {figure:<78} {value:>18}", flush=True)

    reason = can_run_containers()
    if reason is not None:
        print(f"real containers cannot run here ({reason}); no container figures", flush=True)
        return
    await asyncio.to_thread(bench_image, report, args.image_cold)
    for size in (int(n) for n in args.nodes.split(",")):
        await bench_containers(size, args.rounds, report)
        if args.double:
            await bench_double(size, args.rounds, report)
    print("\nsummary (real containers):")
    for figure, value in rows:
        print(f"  {figure:<78} {value:>18}")


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", default="4", help="comma-separated domain sizes (real kubelet nodes)")
    parser.add_argument("--rounds", type=int, default=3, help="fresh domains per size")
    parser.add_argument(
        "--no-image-cold", dest="image_cold", action="store_false", help="skip the cold image build"
    )
    parser.add_argument(
        "--no-double", dest="double", action="store_false", help="skip the runtime double's rounds"
    )
    asyncio.run(run(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
