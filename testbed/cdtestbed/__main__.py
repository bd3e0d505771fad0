"""`computedomain-testbed`: bring the local control plane up or down, and show its fake GPU nodes.

python -m cdtestbed up [--racks 1] [--plain 2]
python -m cdtestbed nodes
python -m cdtestbed down
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path

from kubernetes_asyncio import client, config

from cdtestbed import demo, demo_containers, demo_kubelets
from cdtestbed.cluster import STATE_FILE, ClusterError, ClusterOptions, LocalCluster, stop_from_state
from cdtestbed.kubelets import can_run_containers, can_run_kubelet, remove_container_cgroups
from cdtestbed.nodes import add_ready_nodes
from cdtestbed.tools import Tools, repo_root
from cdtestbed.topology import nvl72_racks, plain_gpu_nodes
from computedomain.api import names


def default_workdir() -> Path:
    """Where `up` keeps the control plane's state, certificates and logs."""
    return repo_root() / ".work" / "cluster"


async def _populate(kubeconfig: Path, racks: int, nodes_per_rack: int, plain: int) -> None:
    nodes = nvl72_racks(racks, nodes_per_rack) + plain_gpu_nodes(plain)
    async with await config.new_client_from_config(config_file=str(kubeconfig)) as api:
        await add_ready_nodes(api, nodes)


async def list_nodes(kubeconfig: Path) -> list[tuple[str, str, str, str]]:
    """(name, ready, clique, GPUs) of every node, sorted by name."""
    async with await config.new_client_from_config(config_file=str(kubeconfig)) as api:
        listing = await client.CoreV1Api(api).list_node()
    rows = []
    for node in listing.items:
        labels = node.metadata.labels or {}
        ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
        gpus = (node.status.allocatable or {}).get("nvidia.com/gpu", "0")
        rows.append(
            (
                node.metadata.name,
                "Ready" if ready else "NotReady",
                labels.get(names.GPU_CLIQUE_LABEL, "<none>"),
                gpus,
            )
        )
    return sorted(rows)


def print_nodes(rows: list[tuple[str, str, str, str]]) -> None:
    """Print nodes as a table, with a per-clique count at the end."""
    print(f"{'NODE':<16} {'STATUS':<9} {'GPUS':>4}  CLIQUE")
    for name, ready, clique, gpus in rows:
        print(f"{name:<16} {ready:<9} {gpus:>4}  {clique}")
    cliques: dict[str, int] = {}
    for _, _, clique, _ in rows:
        cliques[clique] = cliques.get(clique, 0) + 1
    print()
    for clique, count in sorted(cliques.items()):
        print(f"{count:>3} node(s) in clique {clique}")


def _kubelet_demo(workdir: Path, tools: Tools) -> int:
    """The demo on real kubelet nodes; everything it starts stops when it ends."""
    cluster = LocalCluster(workdir, tools, ClusterOptions())
    try:
        cluster.start()
        print(f"control plane up at {cluster.server}; logs in {cluster.logs}")
        asyncio.run(demo_kubelets.run(cluster))
    except (ClusterError, TimeoutError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        cluster.stop()
    return 0


def _container_demo(workdir: Path) -> int:
    """The demo on real containers; it leaves the bed running (`make cluster-down` stops it)."""
    try:
        asyncio.run(demo_containers.run(workdir))
    except (ClusterError, TimeoutError, RuntimeError, OSError) as error:
        stop(workdir)
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def stop(workdir: Path) -> bool:
    """Stop what `up` or `demo` left running; False if nothing was."""
    path = workdir / STATE_FILE
    state = json.loads(path.read_text()) if path.exists() else {}
    if state.get("containers"):
        # Node holders (`unshare --fork`) ignore SIGTERM; SIGKILL ends each node with its containers.
        for name, pid in state.get("pids", {}).items():
            if name.startswith("namespace-"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    stopped = stop_from_state(workdir)
    if state.get("containers"):
        remove_container_cgroups()
    for folder in state.get("folders", []):
        shutil.rmtree(folder, ignore_errors=True)
    return stopped


def main(argv: list[str] | None = None) -> int:
    """Entry point of the testbed CLI."""
    parser = argparse.ArgumentParser(prog="computedomain-testbed", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=None, help="state folder (default .work/cluster)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the control plane and create fake GB200 racks")
    up.add_argument("--racks", type=int, default=1)
    up.add_argument("--nodes-per-rack", type=int, default=18)
    up.add_argument("--plain", type=int, default=2, help="GPU nodes without NVLink fabric")
    demo_cmd = sub.add_parser(
        "demo",
        help="example 01 on real kubelet nodes with the kubelet plugin (KWOK where kubelets cannot run)",
    )
    demo_cmd.add_argument("--racks", type=int, default=1, help="KWOK racks (the KWOK demo only)")
    demo_cmd.add_argument(
        "--kwok", action="store_true", help="KWOK nodes and the slice double even where kubelets can run"
    )
    demo_cmd.add_argument(
        "--runtime-double",
        action="store_true",
        help="real kubelets with the runtime double (host processes) even where containers can run",
    )
    sub.add_parser("down", help="stop the control plane started by `up`")
    sub.add_parser("nodes", help="list nodes with their NVLink cliques")
    args = parser.parse_args(argv)
    workdir: Path = args.workdir or default_workdir()

    if args.command == "down":
        stopped = stop(workdir)
        print("control plane stopped" if stopped else "no control plane was running")
        return 0
    kubeconfig = workdir / "kubeconfig"
    if args.command == "nodes":
        print_nodes(asyncio.run(list_nodes(kubeconfig)))
        return 0

    stop(workdir)
    # A fresh start: the previous run's etcd data would bring its objects back.
    shutil.rmtree(workdir, ignore_errors=True)
    tools = Tools.default()
    if tools.missing():
        tools.build()
    if args.command == "demo" and not args.kwok and not args.runtime_double:
        reason = can_run_containers(tools)
        if reason is None:
            return _container_demo(workdir)
        print(f"Real containers cannot run on this machine: {reason}.")
    if args.command == "demo" and not args.kwok:
        reason = can_run_kubelet(tools)
        if reason is None:
            print(
                "Running the demo on real kubelets with the runtime double (host processes, no containers)."
            )
            return _kubelet_demo(workdir, tools)
        print(f"Real kubelets cannot run on this machine: {reason}.")
        print("Falling back to KWOK nodes, with a double publishing the kubelet plugin's ResourceSlices.")
    cluster = LocalCluster(workdir, tools, ClusterOptions(tie_to_parent=False))
    nodes_per_rack = getattr(args, "nodes_per_rack", 18)
    plain = getattr(args, "plain", 2)
    try:
        cluster.start()
        asyncio.run(_populate(kubeconfig, args.racks, nodes_per_rack, plain))
        print(f"control plane up at {cluster.server}; logs in {cluster.logs}")
        if args.command == "demo":
            print_nodes(asyncio.run(list_nodes(kubeconfig)))
            asyncio.run(demo.run(workdir, tools))
    except (ClusterError, TimeoutError, RuntimeError) as error:
        stop_from_state(workdir)
        cluster.stop()
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"export KUBECONFIG={kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
