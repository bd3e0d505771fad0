"""What one watched kind costs the controller under its own informer and under Kopf 1.45.

Starts an API server (etcd and kube-apiserver only: nothing else touches the objects), creates N
labelled Nodes, then runs each stack in a fresh process of its own, one after the other:

- `informer`: `computedomain.kube.informer.Informer` as `controller/world.py` runs it for nodes (the
  domain label as server-side selector, `shapes.node` projection, encoded `Store`, the
  name -> (domain, clique) index);
- `kopf`: Kopf 1.45 with the controller's own Kopf settings and the same server-side label selector
  (`settings.watching.label_selectors`), one `on.event` handler that hands the body to the same
  projection, store and index.

Each process reports its RSS once the initial list is stored, then the benchmark writes K updates to
every node (an annotation, which the controller would receive as a MODIFIED event like a heartbeat's)
and the process reports RSS, CPU time, the rate at which it took the events in and the most asyncio
tasks it held meanwhile (Kopf runs a worker task per object with events in flight).

    .venv/bin/python bench/watchstacks.py               # 5,000 nodes, 3 updates each
    .venv/bin/python bench/watchstacks.py --nodes 1000  # a quick run
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The test bed is a source root of its own, outside the product package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testbed"))

from cdtestbed.cluster import ClusterOptions, LocalCluster
from cdtestbed.tools import Tools, repo_root
from cdtestbed.topology import node_manifest, nvl72_racks
from computedomain import kube as k
from computedomain.api import names
from computedomain.controller import shapes
from computedomain.kube.config import from_kubeconfig
from computedomain.kube.informer import Informer, object_key, slim
from computedomain.kube.store import Store

Object = dict[str, Any]

STACKS = ("informer", "kopf")
# Nodes per domain: one NVL72 rack each, as a cluster of GB200 racks would have.
NODES_PER_DOMAIN = 18
ROUND_ANNOTATION = "bench.computedomain/round"
# Writes in flight while updating (the API server, not the writer, should be the limit).
WRITERS = 32


def rss_mib() -> float:
    """This process's resident set in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Cache:
    """What `World` keeps of labelled nodes: the projected objects, encoded, and the name index."""

    def __init__(self, expected: int) -> None:
        self.store = Store()
        self.nodes: dict[str, tuple[str, str]] = {}
        self.expected = expected
        self.events = 0
        self.listed = asyncio.Event()
        self.target = 0
        self.reached = asyncio.Event()
        self.first_update = 0.0
        self.last_update = 0.0

    def keep(self, event: str, obj: Object) -> None:
        """Store one event's object as the informer would, then index and count it."""
        if event == "DELETED":
            self.store.pop(object_key(obj))
        else:
            self.store.put(object_key(obj), obj)
        self.index(event, obj)

    def index(self, event: str, obj: Object) -> None:
        """Index one stored object as `World` does and count its event."""
        key = object_key(obj)
        labels = obj["metadata"].get("labels") or {}
        if event == "DELETED":
            self.nodes.pop(key, None)
        else:
            domain = str(labels.get(names.DOMAIN_LABEL, ""))
            self.nodes[key] = (domain, str(labels.get(names.GPU_CLIQUE_LABEL, "")))
        if not self.listed.is_set():
            if len(self.store) >= self.expected:
                self.listed.set()
            return
        self.events += 1
        now = time.monotonic()
        self.first_update = self.first_update or now
        self.last_update = now
        if self.target and self.events >= self.target:
            self.reached.set()


async def _run_informer(cache: Cache, kubeconfig: Path) -> Callable[[], Any]:
    kube = k.Kube(from_kubeconfig(kubeconfig))

    def handle(event: str, obj: Object, old: Object | None) -> None:
        # The informer has stored the projected object already.
        cache.index(event, obj)

    informer = Informer(
        kube, k.NODES, handle, label_selector=names.DOMAIN_LABEL, name="nodes", shape=shapes.node
    )
    # The informer's store is the cache: point ours at it so nothing is held twice.
    cache.store = informer.store
    task = asyncio.create_task(informer.run())

    async def stop() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await kube.close()

    return stop


async def _run_kopf(cache: Cache, kubeconfig: Path) -> Callable[[], Any]:
    import kopf

    from computedomain.controller.runtime.handlers import kopf_settings

    os.environ["KUBECONFIG"] = str(kubeconfig)
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> Any:
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.event("v1", "nodes", registry=registry)
    def event(body: Any, type: str | None, **_: Any) -> None:
        # Kopf gives `None` for the events of its initial list.
        obj = shapes.node(slim(dict(body)))
        cache.keep("DELETED" if type == "DELETED" else "MODIFIED", obj)

    settings = kopf_settings()
    settings.watching.label_selectors["v1", "nodes"] = names.DOMAIN_LABEL
    stop_flag = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            registry=registry, settings=settings, clusterwide=True, standalone=True, stop_flag=stop_flag
        )
    )

    async def stop() -> None:
        stop_flag.set()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 30)

    return stop


async def worker(stack: str, kubeconfig: Path, nodes: int, updates: int) -> None:
    """One stack in this process: list, report, take the updates in, report (JSON lines on stdout)."""
    if stack == "kopf":
        # Imported before the baseline: what Kopf's code costs is not what its caches cost.
        import kopf  # noqa: F401

        from computedomain.controller.runtime import handlers  # noqa: F401
    baseline = rss_mib()
    cache = Cache(nodes)
    started = time.monotonic()
    run = _run_informer if stack == "informer" else _run_kopf
    stop = await run(cache, kubeconfig)
    await asyncio.wait_for(cache.listed.wait(), 600)
    list_seconds = time.monotonic() - started
    # Kopf's initial-list events may still be going through its workers; let them drain.
    await asyncio.sleep(2)
    gc.collect()
    listed = {
        "baseline_mib": baseline,
        "listed_mib": rss_mib(),
        "list_seconds": list_seconds,
        "tasks": len(asyncio.all_tasks()),
        "stored_bytes": cache.store.size,
        "cpu_seconds": time.process_time(),
    }
    cache.target = nodes * updates
    print(json.dumps({"listed": listed}), flush=True)
    peak_tasks = 0
    cpu_before = time.process_time()

    async def sample() -> None:
        nonlocal peak_tasks
        while True:
            peak_tasks = max(peak_tasks, len(asyncio.all_tasks()))
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    await asyncio.wait_for(cache.reached.wait(), 900)
    cpu = time.process_time() - cpu_before
    sampler.cancel()
    gc.collect()
    span = max(cache.last_update - cache.first_update, 1e-9)
    done = {
        "updated_mib": rss_mib(),
        "events": cache.events,
        "update_cpu_seconds": cpu,
        "events_per_second": cache.events / span,
        "events_per_cpu_second": cache.events / max(cpu, 1e-9),
        "peak_tasks": peak_tasks,
    }
    # Kopf's workers end once idle (`queueing.idle_timeout`): what is left afterwards.
    await asyncio.sleep(3)
    done["tasks_after_idle"] = len(asyncio.all_tasks())
    print(json.dumps({"done": done}), flush=True)
    await stop()


async def _create_nodes(kube: k.Kube, count: int) -> list[str]:
    racks = nvl72_racks((count + NODES_PER_DOMAIN - 1) // NODES_PER_DOMAIN)[:count]
    gate = asyncio.Semaphore(WRITERS)

    async def create(index: int) -> None:
        manifest = node_manifest(racks[index])
        # Every node in a domain, so that the domain-label selector passes all of them.
        manifest["metadata"]["labels"][names.DOMAIN_LABEL] = f"domain-{index // NODES_PER_DOMAIN:05d}"
        async with gate:
            await kube.create(k.NODES, manifest)

    await asyncio.gather(*(create(i) for i in range(count)))
    return [node.name for node in racks]


async def _update_nodes(kube: k.Kube, nodes: list[str], updates: int, tag: str) -> float:
    """`updates` annotation changes to every node; returns the seconds it took."""
    gate = asyncio.Semaphore(WRITERS)
    started = time.monotonic()

    async def update(name: str, round_: int) -> None:
        async with gate:
            patch = {"metadata": {"annotations": {ROUND_ANNOTATION: f"{tag}-{round_}"}}}
            await kube.patch(k.NODES, name, None, patch)

    for round_ in range(updates):
        await asyncio.gather(*(update(name, round_) for name in nodes))
    return time.monotonic() - started


def _read(process: subprocess.Popen[str], key: str) -> dict[str, float]:
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("{"):
            message = json.loads(line)
            if key in message:
                return dict(message[key])
    raise RuntimeError(f"the {key!r} report never came (exit status {process.wait()})")


async def measure(nodes: int, updates: int) -> dict[str, dict[str, float]]:
    """Start the control plane, create the nodes, measure each stack in a fresh process."""
    tools = Tools.default()
    if tools.missing():
        tools.build()
    workdir = Path(tempfile.mkdtemp(prefix="bench-watchstacks-", dir=repo_root() / ".work"))
    results: dict[str, dict[str, float]] = {}
    with LocalCluster(workdir, tools, ClusterOptions(controllers=False)) as cluster:
        kube = k.Kube(from_kubeconfig(cluster.kubeconfig), connections=WRITERS)
        try:
            started = time.monotonic()
            names_ = await _create_nodes(kube, nodes)
            print(f"{nodes} nodes created in {time.monotonic() - started:.0f} s", flush=True)
            for stack in STACKS:
                command = [
                    sys.executable,
                    __file__,
                    "--worker",
                    stack,
                    "--kubeconfig",
                    str(cluster.kubeconfig),
                ]
                command += ["--nodes", str(nodes), "--updates", str(updates)]
                process = subprocess.Popen(  # noqa: ASYNC220 (it runs beside us, read from a thread)
                    command, stdout=subprocess.PIPE, text=True
                )
                try:
                    figures = await asyncio.to_thread(_read, process, "listed")
                    print(f"{stack}: listed in {figures['list_seconds']:.1f} s; updating", flush=True)
                    figures["write_seconds"] = await _update_nodes(kube, names_, updates, stack)
                    figures.update(await asyncio.to_thread(_read, process, "done"))
                    results[stack] = figures
                finally:
                    if process.wait(timeout=60) != 0:
                        raise RuntimeError(f"{stack} worker failed with exit status {process.returncode}")
        finally:
            await kube.close()
    return results


def table(results: dict[str, dict[str, float]], nodes: int, updates: int) -> str:
    """The figures side by side, one row per figure."""
    rows: list[tuple[str, Callable[[dict[str, float]], str]]] = [
        ("RSS before watching (MiB)", lambda f: f"{f['baseline_mib']:.1f}"),
        ("RSS after the initial list (MiB)", lambda f: f"{f['listed_mib']:.1f}"),
        (
            "  of which per object (KiB)",
            lambda f: f"{(f['listed_mib'] - f['baseline_mib']) * 1024 / nodes:.2f}",
        ),
        ("stored, encoded (KiB per object)", lambda f: f"{f['stored_bytes'] / 1024 / nodes:.2f}"),
        ("initial list, wall (s)", lambda f: f"{f['list_seconds']:.1f}"),
        ("CPU to list and store (s)", lambda f: f"{f['cpu_seconds']:.1f}"),
        (f"RSS after {updates} updates per object (MiB)", lambda f: f"{f['updated_mib']:.1f}"),
        ("update events received", lambda f: f"{f['events']:.0f}"),
        ("CPU for the updates (s)", lambda f: f"{f['update_cpu_seconds']:.2f}"),
        ("CPU per 1,000 events (ms)", lambda f: f"{1e6 * f['update_cpu_seconds'] / max(f['events'], 1):.0f}"),
        ("events per CPU second", lambda f: f"{f['events_per_cpu_second']:.0f}"),
        ("events per second taken in (wall)", lambda f: f"{f['events_per_second']:.0f}"),
        ("the writer's rate (writes/s)", lambda f: f"{f['events'] / max(f['write_seconds'], 1e-9):.0f}"),
        ("asyncio tasks after the list", lambda f: f"{f['tasks']:.0f}"),
        ("asyncio tasks at most while updating", lambda f: f"{f['peak_tasks']:.0f}"),
        ("asyncio tasks 3 s after the last event", lambda f: f"{f['tasks_after_idle']:.0f}"),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"{nodes} nodes, {updates} updates each", f"{'':<{width}}  {'informer':>10}  {'kopf':>10}"]
    for label, show in rows:
        lines.append(f"{label:<{width}}  {show(results['informer']):>10}  {show(results['kopf']):>10}")
    return "\n".join(lines)


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=5000, help="labelled nodes to create and watch")
    parser.add_argument("--updates", type=int, default=3, help="updates written to every node")
    parser.add_argument("--worker", choices=STACKS, help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker(args.worker, args.kubeconfig, args.nodes, args.updates))
        return 0
    results = asyncio.run(measure(args.nodes, args.updates))
    print(table(results, args.nodes, args.updates))
    return 0


if __name__ == "__main__":
    sys.exit(main())
