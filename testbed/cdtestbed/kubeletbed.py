"""The operator on real kubelet nodes, with nothing of the kubelet plugin's part played by a double.

Beside a local control plane: N real kubelet nodes labelled like GB200 trays (`cdtestbed.kubelets`),
the chart's objects but its workloads (`cdtestbed.chartparts`), the real kubelet plugin per node as a
host process (`cdtestbed.pluginprocess`), and the controller as a process with the chart's controller
ServiceAccount. The IMEX daemon pods the controller creates are run by each node's runtime double as
host processes (`cdtestbed.podprocess`), with the environment, mounts and devices that their daemon
claim's CDI spec (written by the plugin) gives them; their exec probes run `compute-domain-daemon
check` the same way, so a daemon pod is Ready only when its IMEX double is.

The IMEX mode (`imex.mode`) is one value for the whole bed, as for one chart install: the chart's
objects are rendered with it and the plugins and the controller are given it (`IMEX_MODE`).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from kubernetes_asyncio import client

from cdtestbed import chartparts
from cdtestbed.cluster import LocalCluster
from cdtestbed.controller_process import ControllerProcess
from cdtestbed.install import apply_crds, ensure_namespace
from cdtestbed.kubelets import KubeletNode, KubeletNodes, KubeletOptions
from cdtestbed.nodes import wait_nodes_ready
from cdtestbed.pluginprocess import NodeHost, PluginProcess
from cdtestbed.serviceaccount import request_token, token_kubeconfig
from cdtestbed.tools import repo_root
from cdtestbed.topology import FakeNode
from computedomain.api import names

NAMESPACE = "computedomain-system"
RELEASE = "computedomain-operator"
IMAGE = "registry.example/computedomain-operator:0.1.0"
GPU_RESOURCE = "nvidia.com/gpu"
CONTROLLER_COMPONENT = "controller"
TOKEN_SECONDS = 86400


def pod_commands() -> dict[str, list[str]]:
    """The runtime doubles' command map: the operator image's daemon runs as a host process."""
    env = shutil.which("env") or "/usr/bin/env"
    python_path = f"PYTHONPATH={repo_root() / 'operator'}:{repo_root() / 'testbed'}"
    wrapper = [env, python_path, sys.executable, "-m", "cdtestbed.podprocess"]
    # The daemon's startup and readiness probes read its state file with the shell's builtins.
    return {"compute-domain-daemon": [*wrapper, "compute-domain-daemon"], "sh": ["/bin/sh"]}


async def advertise_gpus(api: client.ApiClient, nodes: Sequence[FakeNode]) -> None:
    """Give each node its `nvidia.com/gpu` capacity, as NVIDIA's device plugin would (the example's
    Job asks for 4 GPUs per pod). The kubelet keeps extended resources it does not manage."""
    core = client.CoreV1Api(api)
    for node in nodes:
        amount = str(node.gpus)
        body = {"status": {"capacity": {GPU_RESOURCE: amount}, "allocatable": {GPU_RESOURCE: amount}}}
        await core.patch_node_status(node.name, cast(Any, body))


@dataclass
class KubeletBed:
    """Everything running for the operator on real kubelet nodes."""

    cluster: LocalCluster
    api: client.ApiClient
    kubelets: KubeletNodes
    namespace: str = NAMESPACE
    manifests: list[dict[str, Any]] = field(default_factory=list)
    plugins: dict[str, PluginProcess] = field(default_factory=dict)
    plugin_pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    controller: ControllerProcess | None = None
    # `imex.mode` of the install: names.IMEX_MODE_DOMAIN or names.IMEX_MODE_CLIQUE.
    imex_mode: str = names.IMEX_MODE_DOMAIN
    # The settings the controller was last started with beyond the bed's own (`start_controller`).
    controller_env: dict[str, str] = field(default_factory=dict)

    @property
    def nodes(self) -> list[KubeletNode]:
        """The kubelet nodes, in the order given."""
        return list(self.kubelets.running)

    def node(self, name: str) -> KubeletNode:
        """The kubelet node called `name`."""
        return self.kubelets.node(name)

    def host(self, name: str) -> NodeHost:
        """The node's driver files and plugin state."""
        return NodeHost(self.node(name).home / "host")

    async def install(self, *values: str) -> None:
        """The chart's objects (CRDs, RBAC, admission policies, DeviceClasses) but its workloads,
        rendered with `values` (`--set` items) besides the bed's own.

        Called again with other values, it applies the new rendering over the old one, as `helm
        upgrade` does to these objects (but for deleting what the new rendering no longer has);
        `manifests` then holds the new rendering, which later plugin pods (`roll_plugin`) follow.
        """
        # Rendered with the bed's mode, which decides some of the RBAC (clique mode's plugin reads
        # clique objects).
        tools = self.cluster.tools
        self.manifests = await asyncio.to_thread(
            chartparts.render_chart,
            tools,
            self.namespace,
            RELEASE,
            "nodeAgent.enabled=false",
            f"imex.mode={self.imex_mode}",
            *values,
        )
        await apply_crds(self.api)
        await ensure_namespace(self.api, self.namespace)
        objects = [m for m in self.manifests if m["kind"] not in chartparts.WORKLOAD_KINDS]
        await asyncio.to_thread(chartparts.kubectl_apply, tools, self.cluster.kubeconfig, objects)

    async def start_plugin(self, name: str, extra_env: Mapping[str, str] | None = None) -> PluginProcess:
        """Start (or restart) the plugin of node `name` and wait until it is ready."""
        plugin = self.plugins.get(name)
        if plugin is None:
            plugin = await self._plugin(name, dict(extra_env or {}))
            self.plugins[name] = plugin
        plugin.start()
        await asyncio.to_thread(plugin.wait_ready)
        return plugin

    async def roll_plugin(self, name: str) -> PluginProcess:
        """Replace the plugin of node `name` as its DaemonSet's rolling update does, and wait until the
        new one is ready.

        The old process is stopped (SIGTERM) and its pod deleted, which also voids the token bound to
        it; a new pod of the current rendering then gets a new process with a token of its own, on the
        same node with the same host folders (kubelet plugin sockets, CDI specs, checkpoint).
        """
        old = self.plugins.pop(name)
        await asyncio.to_thread(old.stop)
        pod = self.plugin_pods.pop(name)
        await client.CoreV1Api(self.api).delete_namespaced_pod(
            pod["metadata"]["name"], self.namespace, grace_period_seconds=0
        )
        return await self.start_plugin(name, old.extra_env)

    async def _plugin(self, name: str, extra_env: dict[str, str]) -> PluginProcess:
        daemonset = chartparts.component(self.manifests, "DaemonSet", chartparts.PLUGIN_COMPONENT)
        pod = await client.CoreV1Api(self.api).create_namespaced_pod(
            self.namespace, cast(Any, chartparts.identity_pod(daemonset, name))
        )
        self.plugin_pods[name] = self.api.sanitize_for_serialization(pod)
        account = chartparts.account_of(self.manifests, chartparts.PLUGIN_COMPONENT)
        token = await request_token(
            self.api, self.namespace, account, TOKEN_SECONDS, (pod.metadata.name, pod.metadata.uid)
        )
        node = self.node(name)
        kubeconfig = token_kubeconfig(
            self.cluster.kubeconfig, token, node.home / "plugin-kubeconfig", "plugin"
        )
        host = NodeHost(node.home / "host")
        host.create()
        return PluginProcess(
            name,
            self.namespace,
            node.root_dir,
            node.cdi_dir,
            host,
            kubeconfig,
            self.cluster.logs / f"kubelet-plugin-{name}.log",
            {"IMEX_MODE": self.imex_mode, **extra_env},
        )

    async def start_controller(self, **env: str) -> ControllerProcess:
        """Run the controller with the chart's controller ServiceAccount and wait until it is ready."""
        account = chartparts.account_of(self.manifests, CONTROLLER_COMPONENT)
        token = await request_token(self.api, self.namespace, account, TOKEN_SECONDS)
        identity = token_kubeconfig(
            self.cluster.kubeconfig, token, self.cluster.workdir / "kubeconfig-controller", "controller"
        )
        settings = {
            "NAMESPACE": self.namespace,
            "IMAGE_NAME": IMAGE,
            "POD_NAME": "controller-testbed",
            "LEADER_ELECTION": "false",
            "STATUS_BATCH_SECONDS": "0.1",
            "IMEX_MODE": self.imex_mode,
            **env,
        }
        self.controller_env = dict(env)
        self.controller = ControllerProcess(identity, self.cluster.logs / "controller.log", settings)
        await asyncio.to_thread(self.controller.start)
        return self.controller

    async def restart_controller(self, **env: str) -> ControllerProcess:
        """Replace the controller as its Deployment's rollout does, as far as the cluster can tell: the
        running process stops (SIGTERM; a leader hands over at once), then a new one starts with the
        settings of the last start updated by `env`, and is waited for until ready."""
        if self.controller is not None:
            await asyncio.to_thread(self.controller.stop)
        return await self.start_controller(**{**self.controller_env, **env})

    async def restart_kubelet(self, name: str, trays: Sequence[FakeNode]) -> None:
        """Restart one node's kubelet and wait until the node is Ready again with its GPUs."""
        await asyncio.to_thread(self.kubelets.restart_kubelet, name)
        await wait_nodes_ready(self.api, [name], timeout=90)
        await advertise_gpus(self.api, [t for t in trays if t.name == name])

    def stop(self) -> None:
        """Stop the controller and the plugins (the kubelets are stopped by their owner)."""
        if self.controller is not None:
            self.controller.stop()
        for plugin in self.plugins.values():
            plugin.stop()


@contextlib.asynccontextmanager
async def kubelet_bed(
    cluster: LocalCluster,
    api: client.ApiClient,
    trays: Sequence[FakeNode],
    options: KubeletOptions | None = None,
    controller_env: Mapping[str, str] | None = None,
    imex_mode: str = names.IMEX_MODE_DOMAIN,
    values: Sequence[str] = (),
) -> AsyncIterator[KubeletBed]:
    """Real kubelet nodes for `trays`, the chart's objects (rendered with `values` too: `--set`
    items), a plugin per node and the controller, all in IMEX mode `imex_mode`."""
    options = options or KubeletOptions(commands=pod_commands())
    kubelets = KubeletNodes(cluster, trays, options)
    await asyncio.to_thread(kubelets.start)
    bed = KubeletBed(cluster, api, kubelets, imex_mode=imex_mode)
    try:
        await wait_nodes_ready(api, [t.name for t in trays], timeout=120)
        await advertise_gpus(api, trays)
        await bed.install(*values)
        await asyncio.gather(*(bed.start_plugin(t.name) for t in trays))
        await bed.start_controller(**dict(controller_env or {}))
        yield bed
    finally:
        await asyncio.to_thread(bed.stop)
        await asyncio.to_thread(kubelets.stop)
