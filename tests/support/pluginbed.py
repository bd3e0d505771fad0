"""A node for the kubelet plugin on the real API server: a Node object no kubelet runs, the node's
files, the plugin running in the test's process (or as a process of its own, which a test can SIGKILL
and start again on the same files), and the objects a scheduler and kubelets would write.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest_asyncio
from kubernetes_asyncio import client

from cdtestbed.cluster import free_port
from cdtestbed.connection import connection_of
from computedomain.api import names
from computedomain.dra.slices import slice_name
from computedomain.kube import DOMAINS, NODES, PODS, Kind, Kube, claims, resource_slices
from computedomain.plugin.app import CHECKPOINT_FILE, Plugin
from computedomain.plugin.checkpoint import ClaimRecord, checksum
from computedomain.plugin.kubelet.health import StaticHealth
from computedomain.plugin.settings import PluginSettings
from support import pluginkubelet
from support.plugindriver import install_imex_tools
from support.pluginview import PROC_DEVICES
from support.waiting import eventually

VERSION = "v1"
CLIQUE = "7d9c0f3e-1111-4222-8333-944455556666.3"
NOT_READY_TOLERATIONS = [
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
]
Object = dict[str, Any]


@dataclass
class RunningPlugin:
    node: str
    node_uid: str
    root: Path
    settings: PluginSettings
    plugin: Plugin
    kube: Kube

    @property
    def cdi(self) -> Path:
        return self.settings.cdi_root

    def spec(self, claim_uid: str) -> Path:
        return self.cdi / f"k8s.compute-domain.nvidia.com-claim_{claim_uid}.json"


@pytest_asyncio.fixture
async def kube(api: client.ApiClient) -> AsyncIterator[Kube]:
    kube = Kube(connection_of(api), field_manager="plugin-test")
    yield kube
    await kube.close()


def plugin_env(
    node: str, root: Path, operator_namespace: str, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The bed's plugin settings for `node` on the files under `root` (`env`: settings beyond them)."""
    return {
        "NODE_NAME": node,
        "NAMESPACE": operator_namespace,
        "KUBELET_ROOT_DIR": str(root / "kubelet"),
        "CDI_ROOT": str(root / "cdi"),
        "DRIVER_ROOT": str(root / "driver"),
        "PROC_DEVICES": str(root / "proc" / "devices"),
        "BOOT_ID_FILE": str(root / "boot_id"),
        "STATE_DIR": str(root / "state"),
        "HTTP_PORT": "0",
        "PREPARE_WAIT_SECONDS": "20",
        "EVENT_INTERVAL_SECONDS": "1",
        **(env or {}),
    }


@asynccontextmanager
async def start_plugin(
    api: client.ApiClient,
    kube: Kube,
    node: str,
    node_uid: str,
    root: Path,
    operator_namespace: str,
    env: dict[str, str] | None = None,
    *,
    register: bool = True,
) -> AsyncIterator[RunningPlugin]:
    """Run the plugin in this process on files under `root` until the block ends (`env`: settings
    beyond the bed's).

    With `register`, the test plays the kubelet's registration and the block starts once the plugin is
    ready (its slice published); without, it starts once the plugin serves, unregistered.
    """
    settings = PluginSettings.from_env(plugin_env(node, root, operator_namespace, env))
    plugin = Plugin(settings, connection_of(api), health=StaticHealth())
    task = asyncio.create_task(plugin.run())

    def running() -> None:
        if task.done():
            raise AssertionError(f"plugin exited with {task.result()}")

    async def serving() -> bool:
        running()
        return plugin.serving.is_set()

    async def ready() -> bool:
        running()
        return plugin.readiness()[0]

    try:
        await eventually(serving, timeout=60, what="plugin serving")
        if register:
            await pluginkubelet.register(settings.registration_socket)
            await eventually(ready, timeout=30, what="plugin ready")
        yield RunningPlugin(node, node_uid, root, settings, plugin, kube)
    finally:
        plugin.stop.set()
        assert await asyncio.wait_for(task, 30) == 0


# Where a plugin process started with a kill point SIGKILLs itself, each in the middle of a clique
# mode prepare that is past its wait for the channel: once its write to the ComputeDomainClique
# succeeded (`marked`), once the claim's CDI spec is written (`spec-written`), once the checkpoint says
# the claim is prepared (`completed`). In each the kubelet never gets its answer. From outside, only
# a watch would see the first of them, and too late: the rest of the prepare takes milliseconds.
KILL_POINTS = ("marked", "spec-written", "completed")
_KILL_AT = "PLUGINBED_KILL_AT"
_PROCESS_MAIN = (
    "import sys; from support.pluginbed import plugin_process_main; sys.exit(plugin_process_main())"
)
_REPO = Path(__file__).resolve().parents[2]
# The kernel module's line the plugin reads its driver version from: without it the process would
# load NVML to learn the version.
_DRIVER_VERSION_LINE = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.82.07  Release Build\n"


def _arm(point: str) -> None:
    """Make this process SIGKILL itself at `point` (one of `KILL_POINTS`)."""
    from computedomain.plugin.cdi import Spec, SpecStore
    from computedomain.plugin.checkpoint import Checkpoint
    from computedomain.plugin.kubeio import CliqueChannels

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "marked":
        record_prepare = CliqueChannels.record_prepare

        async def record_then_die(
            self: CliqueChannels, obj: Mapping[str, Any], node: str, claim_uid: str
        ) -> str | None:
            why = await record_prepare(self, obj, node, claim_uid)
            if why is None:
                die()
            return why

        CliqueChannels.record_prepare = record_then_die  # type: ignore[method-assign]
    elif point == "spec-written":
        write = SpecStore.write

        def write_then_die(self: SpecStore, claim_uid: str, spec: Spec) -> Path:
            write(self, claim_uid, spec)
            die()
            raise AssertionError("unreachable: the process is gone")

        SpecStore.write = write_then_die  # type: ignore[method-assign]
    elif point == "completed":
        put = Checkpoint.put

        def put_then_die(self: Checkpoint, record: ClaimRecord) -> None:
            put(self, record)
            if record.state == "PrepareCompleted":
                die()

        Checkpoint.put = put_then_die  # type: ignore[method-assign]
    else:
        raise ValueError(f"no kill point {point!r}: one of {', '.join(KILL_POINTS)}")


def plugin_process_main() -> int:
    """The plugin's entry point, with the kill point `PLUGINBED_KILL_AT` names armed (if any)."""
    point = os.environ.pop(_KILL_AT, "")
    if point:
        _arm(point)
    from computedomain.plugin.__main__ import main

    return main([])


@dataclass
class PluginProcess:
    """The plugin as a process of its own on a node's files: a test SIGKILLs it (or has it SIGKILL
    itself at one of `KILL_POINTS`) and starts it again on the same files (checkpoint, CDI specs,
    sockets), as the kubelet's pod restart does."""

    node: str
    node_uid: str
    root: Path
    settings: PluginSettings
    kube: Kube
    env: dict[str, str]
    log: Path
    process: asyncio.subprocess.Process | None = None
    starts: int = 0

    @property
    def cdi(self) -> Path:
        return self.settings.cdi_root

    def spec(self, claim_uid: str) -> Path:
        return self.cdi / f"k8s.compute-domain.nvidia.com-claim_{claim_uid}.json"

    def specs(self) -> list[Path]:
        """Every CDI spec file on the node."""
        return sorted(self.cdi.glob("*.json")) if self.cdi.is_dir() else []

    def checkpoint(self) -> dict[str, ClaimRecord]:
        """The claims of the plugin's checkpoint file, as a restarted plugin would load them."""
        path = self.settings.state / CHECKPOINT_FILE
        if not path.exists():
            return {}
        document = json.loads(path.read_text())
        data = document["data"]
        assert document["checksum"] == checksum(data), f"checkpoint {path} fails its checksum"
        return {uid: ClaimRecord.from_json(record) for uid, record in data["claims"].items()}

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def start(self, kill_at: str | None = None) -> None:
        """Start the process and register it as the kubelet does; return once it is ready."""
        assert self.process is None or self.process.returncode is not None, "the plugin still runs"
        port = free_port()
        env = {**self.env, "HTTP_PORT": str(port)}
        if kill_at is not None:
            assert kill_at in KILL_POINTS, kill_at
            env[_KILL_AT] = kill_at
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts} (kill point: {kill_at})\n".encode())
            out.flush()
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _PROCESS_MAIN,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        process = self.process

        def running() -> None:
            assert process.returncode is None, f"plugin exited with {process.returncode}:\n{self.log_tail()}"

        async def registered() -> bool:
            # A killed plugin leaves its socket file behind: until the new process binds it, dialing
            # it is refused.
            running()
            try:
                await pluginkubelet.register(self.settings.registration_socket)
            except grpc.aio.AioRpcError:
                return False
            return True

        async def ready() -> bool:
            running()
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://127.0.0.1:{port}/readyz") as response,
                ):
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(registered, timeout=60, what="the plugin process registered")
        await eventually(ready, timeout=30, what="the plugin process ready")

    async def kill(self) -> None:
        """SIGKILL the process."""
        assert self.process is not None, "the plugin was not started"
        assert self.process.returncode is None, "the plugin does not run"
        self.process.kill()
        assert await asyncio.wait_for(self.process.wait(), 10) == -signal.SIGKILL

    async def killed_itself(self, timeout: float = 20) -> None:
        """Wait until the process died at its kill point."""
        assert self.process is not None
        code = await asyncio.wait_for(self.process.wait(), timeout)
        assert code == -signal.SIGKILL, f"plugin exited with {code}:\n{self.log_tail()}"

    async def close(self) -> None:
        """Stop the process if it runs (SIGTERM; SIGKILL when it does not stop in time)."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            code = await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(f"the plugin did not stop on SIGTERM:\n{self.log_tail()}") from None
        assert code == 0, f"plugin exited with {code}:\n{self.log_tail()}"


@asynccontextmanager
async def plugin_process(
    kubeconfig: Path,
    kube: Kube,
    node: str,
    node_uid: str,
    root: Path,
    operator_namespace: str,
    env: dict[str, str] | None = None,
) -> AsyncIterator[PluginProcess]:
    """A `PluginProcess` on the files under `root`, not started yet; stopped when the block ends."""
    settings_env = plugin_env(node, root, operator_namespace, env)
    version = root / "driver" / "proc" / "driver" / "nvidia" / "version"
    version.parent.mkdir(parents=True, exist_ok=True)
    version.write_text(_DRIVER_VERSION_LINE)
    process_env = {
        **os.environ,
        **settings_env,
        "PYTHONPATH": os.pathsep.join(str(_REPO / d) for d in ("operator", "testbed", "tests")),
        "KUBECONFIG": str(kubeconfig),
        "HEALTH_SOURCE": "static",
    }
    # The API server is the one of the kubeconfig, not one of a pod's environment.
    process_env.pop("KUBERNETES_SERVICE_HOST", None)
    running = PluginProcess(
        node,
        node_uid,
        root,
        PluginSettings.from_env(settings_env),
        kube,
        process_env,
        root / "plugin.log",
    )
    try:
        yield running
    finally:
        await running.close()


def fill_node_root(root: Path) -> None:
    """Write a node's files under the empty folder `root`: /proc/devices, boot ID, the driver's
    capability, IMEX tools."""
    (root / "proc").mkdir()
    (root / "proc" / "devices").write_text(PROC_DEVICES)
    (root / "boot_id").write_text("boot-a\n")
    caps = root / "driver" / "proc" / "driver" / "nvidia" / "capabilities"
    caps.mkdir(parents=True)
    (caps / "fabric-imex-mgmt").write_text("DeviceFileMinor: 7\n")
    # A daemon claim on a node with a clique fails without the driver's IMEX tools.
    install_imex_tools(root)


@pytest_asyncio.fixture
async def node_root() -> AsyncIterator[Path]:
    """A node's files (short path: sockets), as `fill_node_root` writes them."""
    with tempfile.TemporaryDirectory(prefix="cdp-", dir="/tmp") as scratch:
        root = Path(scratch)
        fill_node_root(root)
        yield root


@pytest_asyncio.fixture
async def node(kube: Kube) -> AsyncIterator[tuple[str, str]]:
    """A Node object of its own, in a clique, that no kubelet runs: (name, uid)."""
    name = f"plugin-{uuid.uuid4().hex[:6]}"
    labels = {names.GPU_CLIQUE_LABEL: CLIQUE, names.GPU_PRESENT_LABEL: "true"}
    created = await kube.create(
        NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}
    )
    yield name, created["metadata"]["uid"]
    with contextlib.suppress(Exception):
        await kube.delete(resource_slices(VERSION), slice_name(name))
    await kube.delete(NODES, name)


async def create_domain(kube: Kube, namespace: str, name: str = "cd") -> Object:
    return await kube.create(
        DOMAINS,
        {
            "apiVersion": names.API_VERSION,
            "kind": names.DOMAIN_KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"channel": {"resourceClaimTemplate": {"name": f"{name}-channel"}}},
        },
    )


async def allocated_claim(
    kube: Kube, namespace: str, name: str, node: str, device: str, parameters: Object
) -> tuple[Object, Object]:
    """A ResourceClaim with `device` allocated on `node` for a pod that uses it (`<name>-pod`).

    Written as the scheduler would: the allocation, and the pod in `reservedFor`.
    """
    request = "channel" if device.startswith("channel") else "daemon"
    device_class = names.CHANNEL_DEVICE_CLASS if request == "channel" else names.DAEMON_DEVICE_CLASS
    opaque = {"driver": names.DRIVER, "parameters": parameters}
    claim = await kube.create(
        claims(VERSION),
        {
            "apiVersion": f"resource.k8s.io/{VERSION}",
            "kind": "ResourceClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "devices": {
                    "requests": [{"name": request, "exactly": {"deviceClassName": device_class}}],
                    "config": [{"requests": [request], "opaque": opaque}],
                }
            },
        },
    )
    consumer = await pod(kube, namespace, f"{name}-pod", node, claim=name)
    claim["status"] = {
        "allocation": {
            "devices": {
                "results": [{"request": request, "driver": names.DRIVER, "pool": node, "device": device}],
                "config": [{"source": "FromClaim", "requests": [request], "opaque": opaque}],
            },
            "nodeSelector": {
                "nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
                ]
            },
        },
        "reservedFor": [{"resource": "pods", "name": f"{name}-pod", "uid": consumer["metadata"]["uid"]}],
    }
    allocated = await kube.call("PUT", claims(VERSION).path(namespace, name, "status"), body=claim)
    return allocated, consumer


SERVICE_ACCOUNTS = Kind("", "v1", "serviceaccounts", True)


async def pod(
    kube: Kube,
    namespace: str,
    name: str,
    node: str,
    labels: dict[str, str] | None = None,
    claim: str | None = None,
) -> Object:
    """A pod bound to `node` (which nothing runs), using `claim` if given."""
    container: Object = {"name": "c", "image": "registry.example/none:1"}
    metadata: Object = {"name": name, "namespace": namespace, "labels": labels or {}}
    if labels and names.DOMAIN_LABEL in labels:
        # A stand-in for a domain's IMEX daemon. Where a controller runs beside the test, the domain's
        # DaemonSet would adopt a pod matching its selector and delete it as surplus on its node; a
        # controller reference of its own (to an object that lives as long as the namespace) keeps
        # it out of that DaemonSet's reach.
        account = await kube.get(SERVICE_ACCOUNTS, "default", namespace)
        assert account is not None, f"namespace {namespace} has no default ServiceAccount"
        metadata["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "name": "default",
                "uid": account["metadata"]["uid"],
                "controller": True,
            }
        ]
    spec: Object = {"nodeName": node, "tolerations": NOT_READY_TOLERATIONS, "containers": [container]}
    if claim:
        spec["resourceClaims"] = [{"name": "imex", "resourceClaimName": claim}]
        container["resources"] = {"claims": [{"name": "imex"}]}
    return await kube.create(
        PODS,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": spec,
        },
    )


async def delete_all(kube: Kube, namespace: str, objects: list[Object]) -> None:
    """Delete claims and pods a test made outside its own namespace."""
    for obj in objects:
        kind = PODS if obj["kind"] == "Pod" else claims(VERSION)
        await kube.delete(kind, obj["metadata"]["name"], namespace)


async def set_ready(kube: Kube, obj: Object) -> None:
    meta = obj["metadata"]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = {
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
        }
    }
    await kube.patch(PODS, meta["name"], meta["namespace"], status, subresource="status")


def ref(claim: Object) -> tuple[str, str, str]:
    meta = claim["metadata"]
    return meta["namespace"], meta["name"], meta["uid"]
