"""The demo on real containers: the chart installed unchanged on four real kubelets, each with its own
containerd, runc and CNI bridge inside the bed's network namespace; examples/01-single-rack applied
unchanged; what each Job container holds, seen from inside with `kubectl exec`. The bed stays up for
a person to look around until `make cluster-down`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from kubernetes_asyncio import client

from cdtestbed.cluster import STATE_FILE
from cdtestbed.containerbed import NAMESPACE, ContainerBed, container_bed
from cdtestbed.demo import EXAMPLE, apply_example, watch_domain
from cdtestbed.demo_kubelets import EXAMPLE_NAMESPACE, TRAYS, wait_job_running

CHANNELS = "/dev/nvidia-caps-imex-channels"


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def remember(workdir: Path, bed: ContainerBed) -> None:
    """Record every process of the bed in the state file, so that `make cluster-down` stops them."""
    path = workdir / STATE_FILE
    state = json.loads(path.read_text())
    for node in bed.nodes:
        for name, process in node.processes.items():
            state["pids"][f"{name}-{node.name}"] = process.pid
    # The namespace goes last: stopping it removes the bridges once nothing uses them.
    state["pids"]["netns"] = bed.network.pid
    state["containers"] = True
    # The nodes' short folders (kubelet roots, sockets) go with them.
    state["folders"] = [str(bed.kubelets.inside.parent)]
    path.write_text(json.dumps(state, indent=2))


async def run(workdir: Path) -> None:
    """Bring the bed up, run the example, show what the containers hold; leave it all running."""
    _step(
        f"Start a control plane and {len(TRAYS)} real kubelet nodes with containerd, runc and CNI "
        "(inside a network namespace of the bed's own), import the image, helm install the chart"
    )
    started = time.monotonic()
    async with container_bed(workdir, TRAYS, tie_to_parent=False) as bed:
        remember(workdir, bed)
        print(f"ready in {time.monotonic() - started:.0f}s; runtime: containerd (real containers)")
        print(bed.kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide").stdout)
        _step(f"Apply {EXAMPLE} unchanged (a ComputeDomain and a 4-node training Job)")
        await apply_example(bed.api)
        _step("Watch the domain: channels allocated, IMEX daemon containers started and Ready")
        await watch_domain(bed.api, timeout=300)
        pods = await wait_job_running(bed.api, timeout=300)
        _step(f"What each Job container holds under {CHANNELS} (kubectl exec)")
        for pod in sorted(pods, key=lambda p: p.metadata.name):
            seen = bed.kubectl(
                "exec", "-n", EXAMPLE_NAMESPACE, pod.metadata.name, "--", "ls", "-l", CHANNELS
            ).stdout
            lines = [line for line in seen.splitlines() if not line.startswith("total")]
            print(f"{pod.spec.node_name}  {pod.metadata.name}")
            for line in lines:
                print(f"    {line}")
        _step("Pods")
        listing = await client.CoreV1Api(bed.api).list_pod_for_all_namespaces()
        for pod in sorted(listing.items, key=lambda p: (p.metadata.namespace, p.metadata.name)):
            ready = all(c.ready for c in pod.status.container_statuses or [])
            print(
                f"{pod.metadata.namespace:<22} {pod.metadata.name:<52} {pod.status.phase:<8} "
                f"{'Ready' if ready else 'NotReady':<8} {pod.spec.node_name}"
            )
        kubeconfig = bed.cluster.kubeconfig
        kubectl = bed.cluster.tools.bin("kubectl")
        print(f"\nThe bed stays up. Logs: {bed.cluster.logs}")
        print(f"  export KUBECONFIG={kubeconfig}")
        print(f"  {kubectl} get computedomains -A")
        print(f"  {kubectl} get pods -A -o wide")
        print(f"  {kubectl} get resourceslices")
        name = sorted(p.metadata.name for p in pods)[0]
        print(f"  {kubectl} exec -n {EXAMPLE_NAMESPACE} {name} -- ls -l {CHANNELS}")
        print(f"  {kubectl} logs -n {NAMESPACE} -l app.kubernetes.io/component=kubelet-plugin")
        print("Stop everything with: make cluster-down")
