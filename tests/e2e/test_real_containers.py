"""The chart as it ships, on four real kubelets with real containers (containerd, runc, CNI).

The product image built by `make image` runs every program: the controller Deployment (two replicas,
one leader), the node agent and the kubelet plugin DaemonSets, and the IMEX daemon pods the controller
renders. examples/01-single-rack is applied unchanged; each Job container is checked from inside with
`kubectl exec`. Fakes stand only where this machine has no hardware: the GPUs (fake NVML in each
node's driver root), the IMEX binaries and the training program (see `cdtestbed.containerbed`).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes_asyncio import client

from cdtestbed.containerbed import NAMESPACE, ContainerBed, container_bed
from cdtestbed.demo import apply_example
from cdtestbed.images import WORKLOAD_IMAGE
from cdtestbed.topology import FakeNode, nvl72_racks
from computedomain.api import names
from support.domains import domain_manifest, workload_pod
from support.realnodes import cdi_specs, require_containers
from support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(900)]

TRAYS: list[FakeNode] = nvl72_racks(1, 4, prefix="gb200")
EXAMPLE_NAMESPACE = "team-a"
DOMAIN = "llama-train"
CHANNELS = "/dev/nvidia-caps-imex-channels"
CHANNEL = f"{CHANNELS}/channel0"


@pytest.fixture(scope="module")
async def bed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ContainerBed]:
    """The chart installed on four real-container nodes of one clique."""
    require_containers()
    workdir = tmp_path_factory.mktemp("containers")
    async with container_bed(workdir, TRAYS) as running:
        yield running


def cdi_channel(spec: Path) -> dict[str, Any]:
    """The one channel device node of a workload claim's CDI spec."""
    body = json.loads(spec.read_text())
    nodes = [n for d in body["devices"] for n in d["containerEdits"].get("deviceNodes", [])]
    return next(n for n in nodes if n["path"].startswith("/dev/nvidia-caps-imex-channels/"))


async def job_pods(bed: ContainerBed) -> list[client.V1Pod]:
    """The example Job's pods, once all four run."""
    core = client.CoreV1Api(bed.api)

    async def running() -> list[client.V1Pod] | None:
        pods = (await core.list_namespaced_pod(EXAMPLE_NAMESPACE, label_selector="job-name")).items
        return list(pods) if len(pods) == 4 and all(p.status.phase == "Running" for p in pods) else None

    return await eventually(running, timeout=240, what="the example's Job pods do not all run")


async def test_chart_components_run_as_containers(bed: ContainerBed) -> None:
    """Controller (two replicas, one leader), agent and plugin run from the image, in containers."""
    pods = (await client.CoreV1Api(bed.api).list_namespaced_pod(NAMESPACE)).items
    components = [p.metadata.labels.get("app.kubernetes.io/component") for p in pods]
    assert components.count("controller") == 2
    assert components.count("node-agent") == 4
    assert components.count("kubelet-plugin") == 4
    lease = await client.CoordinationV1Api(bed.api).read_namespaced_lease(
        "computedomain-operator-controller", NAMESPACE
    )
    assert lease.spec.holder_identity in {p.metadata.name for p in pods}
    for node in bed.nodes:
        images = {c["Image"] for c in bed.containers(node)}
        assert any(i.startswith("localhost/computedomain-operator:") for i in images), images
    # The agent labelled each node with the clique the fake NVML reports, from inside its container.
    for tray in TRAYS:
        live = await client.CoreV1Api(bed.api).read_node(tray.name)
        assert live.metadata.labels[names.GPU_CLIQUE_LABEL] == tray.clique_id


async def test_example_channels_seen_from_inside(bed: ContainerBed) -> None:
    """examples/01-single-rack unchanged: every Job container holds exactly channel 0 as a character
    device with the CDI spec's numbers, its IMEX daemon ran as a container and became Ready, and
    deleting the Job and the domain leaves no container, no CDI spec and no node label."""
    await apply_example(bed.api)
    custom = client.CustomObjectsApi(bed.api)

    async def ready() -> dict[str, Any] | None:
        body = await custom.get_namespaced_custom_object(
            names.GROUP, names.VERSION, EXAMPLE_NAMESPACE, names.DOMAIN_PLURAL, DOMAIN
        )
        status = body.get("status") or {}
        return body if status.get("status") == "Ready" and status.get("nodeSummary") == "4/4" else None

    await eventually(ready, timeout=300, what="the domain is not Ready 4/4")
    pods = await job_pods(bed)
    for pod in pods:
        listing = bed.exec_in(EXAMPLE_NAMESPACE, pod.metadata.name, "ls /dev/nvidia-caps-imex-channels/")
        assert listing.split() == ["channel0"], listing
        kind, major, minor = (
            bed.exec_in(EXAMPLE_NAMESPACE, pod.metadata.name, f"stat -c '%F|%t|%T' {CHANNEL}")
            .strip()
            .split("|")
        )
        assert kind == "character special file"
        node = next(n for n in bed.nodes if n.name == pod.spec.node_name)
        channel_specs = [s for s in cdi_specs(node) if "channel" in s.read_text()]
        assert channel_specs, f"no channel claim spec on {node.name}"
        wanted = cdi_channel(channel_specs[0])
        assert (int(major, 16), int(minor, 16)) == (wanted["major"], wanted["minor"])
    daemons = (
        await client.CoreV1Api(bed.api).list_namespaced_pod(NAMESPACE, label_selector=names.DOMAIN_LABEL)
    ).items
    assert len(daemons) == 4
    for daemon in daemons:
        assert all(s.ready for s in daemon.status.container_statuses)
        assert re.match(r"^localhost/computedomain-operator:", daemon.spec.containers[0].image)
        # Root, the driver's management set, and what the daemon writes: user 65532 could not.
        seen = bed.exec_in(
            NAMESPACE,
            daemon.metadata.name,
            "id -u; test -c /dev/nvidiactl && echo ctl;"
            " test -c /dev/nvidia-caps/nvidia-cap7 && echo cap;"
            " test -x /usr/bin/nvidia-imex && echo imex;"
            " ls /usr/lib64/libnvidia-ml.so.1 >/dev/null && echo nvml;"
            " grep -c compute-domain-daemon- /etc/hosts; ls /imexd",
        ).split()
        assert seen[:5] == ["0", "ctl", "cap", "imex", "nvml"], seen
        assert int(seen[5]) >= 4, seen
        assert {"imexd.cfg", "nodes.cfg"} <= set(seen[6:]), seen

    bed.kubectl("delete", "job", "-n", EXAMPLE_NAMESPACE, "llama-train", "--wait=true", timeout=180)
    bed.kubectl("delete", "computedomain", "-n", EXAMPLE_NAMESPACE, DOMAIN, "--wait=true", timeout=180)

    async def clean() -> bool:
        for node in bed.nodes:
            if cdi_specs(node):
                return False
            for container in bed.containers(node):
                namespace = container.get("Labels", {}).get("io.kubernetes.pod.namespace")
                if namespace == EXAMPLE_NAMESPACE:
                    return False
                if container.get("Labels", {}).get("io.kubernetes.container.name") == names.DAEMON_CONTAINER:
                    return False
        nodes = (await client.CoreV1Api(bed.api).list_node()).items
        return not any(names.DOMAIN_LABEL in (n.metadata.labels or {}) for n in nodes)

    await eventually(clean, timeout=180, what="containers, CDI specs or node labels were left behind")


async def test_allocation_mode_all_gives_every_channel_inside(bed: ContainerBed) -> None:
    """`allocationMode: All`: the container holds all 2048 channels, each with its own minor."""
    namespace = "wide"
    await client.CoreV1Api(bed.api).create_namespace(cast(Any, {"metadata": {"name": namespace}}))
    await client.CustomObjectsApi(bed.api).create_namespaced_custom_object(
        names.GROUP,
        names.VERSION,
        namespace,
        names.DOMAIN_PLURAL,
        domain_manifest("wide", namespace, allocationMode="All"),
    )
    pod = workload_pod("worker", namespace, "wide-channel", bed.nodes[1].name)
    pod["spec"]["containers"][0] |= {"image": WORKLOAD_IMAGE, "command": ["bash", "-c", "exec torchrun"]}
    await client.CoreV1Api(bed.api).create_namespaced_pod(namespace, cast(Any, pod))

    async def running() -> bool:
        live = await client.CoreV1Api(bed.api).read_namespaced_pod("worker", namespace)
        return bool(live.status.phase == "Running")

    await eventually(running, timeout=240, what="the allocationMode All pod running")
    seen = bed.exec_in(namespace, "worker", f"stat -c '%n %t %T' {CHANNELS}/*").split("\n")
    numbers = sorted(int(line.split()[2], 16) for line in seen if line)
    assert numbers == list(range(2048))
    assert {line.split()[1] for line in seen if line} == {format(234, "x")}
    bed.kubectl("delete", "namespace", namespace, "--wait=true", timeout=180)
