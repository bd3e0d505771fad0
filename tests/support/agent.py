"""Node agents run the way the chart deploys them, against an API server, on fake NVML hardware.

`AgentBed` renders the chart's node-agent pieces with `helm template` (service accounts, RBAC, the
admission policy, the DaemonSet), applies all but the DaemonSet, and creates for a node the pod the
DaemonSet would create there (its template pinned to the node). `AgentProcess` runs that pod's command as
a local process with the pod's environment, a token bound to the pod (so the API server authenticates the
agent as running on that node), and the fake `libnvidia-ml.so.1`, which reads the node's "hardware" from a
file the test rewrites and logs every NVML initialisation (one per check) to a trace file.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from cdtestbed import chartparts
from cdtestbed.processes import terminate
from cdtestbed.tools import Tools, repo_root
from computedomain.kube import KubeError
from fakenvml.build import build_fake_nvml
from fakenvml.config import FakeGpuNode
from support.kubelet import (
    container_env,
    local_argv,
    pod_token,
    process_env,
    spawn,
    token_client,
    token_kubeconfig,
)
from support.waiting import eventually

RELEASE = "nodetests"
AGENT_NAMESPACE = "agent-system"
CHART = repo_root() / "charts" / "computedomain-operator"
AGENT_TEMPLATES = (
    "templates/serviceaccounts.yaml",
    "templates/rbac-node-agent.yaml",
    "templates/node-agent-admission-policy.yaml",
    "templates/node-agent-daemonset.yaml",
)
AGENT_COMPONENT = "node-agent"
FAKE_NVML_CACHE = repo_root() / ".cache" / "fakenvml" / "current"
MERGE_PATCH = "application/merge-patch+json"
# The client's stubs omit `_content_type`; without it the client would send a strategic merge patch.
MERGE_PATCH_ARGS: dict[str, Any] = {"_content_type": MERGE_PATCH}

Manifest = dict[str, Any]


def render_chart(templates: Sequence[str], namespace: str, release: str = RELEASE) -> list[Manifest]:
    """The chart's objects from `templates`, rendered offline for a Kubernetes 1.36 cluster."""
    return chartparts.render_chart(Tools.default(), namespace, release, show_only=templates)


def kubectl(kubeconfig: Path, *args: str, manifests: Sequence[Manifest] = ()) -> str:
    """Run kubectl against the cluster of `kubeconfig`, with `manifests` on stdin; its output."""
    command = [str(Tools.default().bin("kubectl")), "--kubeconfig", str(kubeconfig), *args]
    text = yaml.safe_dump_all(list(manifests)) if manifests else None
    done = subprocess.run(command, input=text, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def component(manifests: Sequence[Manifest], kind: str, name: str = AGENT_COMPONENT) -> Manifest:
    """The one object of `kind` whose `app.kubernetes.io/component` label is `name`."""
    found = [
        m
        for m in manifests
        if m["kind"] == kind and m["metadata"].get("labels", {}).get("app.kubernetes.io/component") == name
    ]
    if len(found) != 1:
        raise LookupError(f"expected one {kind} of component {name}, found {len(found)}")
    return found[0]


def pinned_pod(daemonset: Manifest, node: str) -> Manifest:
    """The pod `daemonset` would run on `node` (what the DaemonSet controller creates, bound already)."""
    template = daemonset["spec"]["template"]
    spec = {**template["spec"], "nodeName": node}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{daemonset['metadata']['name']}-{uuid.uuid4().hex[:5]}",
            "namespace": daemonset["metadata"]["namespace"],
            "labels": template["metadata"]["labels"],
        },
        "spec": spec,
    }


WRITE_VERBS = ("POST", "PUT", "PATCH", "APPLY", "DELETE")


def api_writes(kubeconfig: Path, resource: str) -> int:
    """How many write requests on `resource` the API server has answered since it started (its metrics).

    Server-side apply counts as its own verb, APPLY; a no-op apply is a request all the same.
    """
    total = 0.0
    for line in kubectl(kubeconfig, "get", "--raw", "/metrics").splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels, _, value = line.rpartition(" ")
        verb = labels.partition('verb="')[2].partition('"')[0]
        if verb in WRITE_VERBS and f'resource="{resource}"' in labels and 'subresource=""' in labels:
            total += float(value)
    return int(total)


def fake_nvml_dir() -> Path:
    """The folder holding the fake `libnvidia-ml.so.1` (built on first use)."""
    return build_fake_nvml(FAKE_NVML_CACHE).parent


async def forbidden_message(call: Any) -> str | None:
    """Await `call` (of the generated client or of `computedomain.kube`); the API server's message if
    it answered 403 Forbidden, None if it succeeded."""
    try:
        await call
    except ApiException as err:
        if err.status != 403:
            raise
        return str(yaml.safe_load(err.body or "{}").get("message", ""))
    except KubeError as err:
        if err.status != 403:
            raise
        return str(err)
    return None


@dataclass
class AgentProcess:
    """`computedomain-agent` for one node, run from its pod's spec, on the fake NVML library."""

    node: str
    pod: Manifest
    argv: list[str]
    env: dict[str, str]
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def hardware_file(self) -> Path:
        """The fake NVML's config: what the node's GPUs report."""
        return self.directory / "nvml.cfg"

    @property
    def trace_file(self) -> Path:
        """One line per NVML initialisation, i.e. per check the agent made."""
        return self.directory / "nvml.trace"

    @property
    def log(self) -> Path:
        """The agent's stdout and stderr."""
        return self.directory / "agent.log"

    def set_hardware(self, hardware: FakeGpuNode) -> None:
        """Change what the node's GPUs report from the agent's next check on."""
        hardware.write(self.hardware_file)

    def readings(self) -> int:
        """How many checks (NVML initialisations) the agent made so far."""
        try:
            return len(self.trace_file.read_text().splitlines())
        except FileNotFoundError:
            return 0

    def start(self) -> None:
        """Start the process; its output goes to `log`."""
        self.process = spawn(self.argv, self.env, self.log)

    @property
    def pid(self) -> int | None:
        """The running process's pid, None once it exited."""
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def exit_code(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for the process to exit by itself; its exit code."""
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (SIGKILL after `timeout`); the exit code."""
        return terminate(self.process, timeout)

    def log_text(self) -> str:
        """What the agent printed so far."""
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@dataclass
class AgentBed:
    """The chart's node-agent objects in a cluster, and agent pods and processes for chosen nodes."""

    api: client.ApiClient
    kubeconfig: Path
    workdir: Path
    namespace: str = AGENT_NAMESPACE
    manifests: list[Manifest] = field(default_factory=list)
    agents: list[AgentProcess] = field(default_factory=list)

    @property
    def service_account(self) -> str:
        """The agent's service account name, as the chart renders it."""
        return str(component(self.manifests, "ServiceAccount")["metadata"]["name"])

    @property
    def daemonset(self) -> Manifest:
        """The agent's DaemonSet as rendered (not applied: its pods are created pinned, by `agent_pod`)."""
        return component(self.manifests, "DaemonSet")

    @property
    def policy_name(self) -> str:
        """The name of the chart's admission policy for the agent."""
        return str(component(self.manifests, "ValidatingAdmissionPolicy")["metadata"]["name"])

    async def install(self) -> None:
        """Create the namespace and apply the chart's agent objects except the DaemonSet."""
        self.manifests = render_chart(AGENT_TEMPLATES, self.namespace)
        core = client.CoreV1Api(self.api)
        try:
            await core.create_namespace(cast(Any, {"metadata": {"name": self.namespace}}))
        except ApiException as err:
            if err.status != 409:
                raise
        objects = [m for m in self.manifests if m["kind"] != "DaemonSet"]
        await asyncio.to_thread(kubectl, self.kubeconfig, "apply", "-f", "-", manifests=objects)

    async def agent_pod(self, node: str) -> Manifest:
        """Create the agent's pod bound to `node`, as the DaemonSet controller would; the created pod."""
        created = await client.CoreV1Api(self.api).create_namespaced_pod(
            self.namespace, cast(Any, pinned_pod(self.daemonset, node))
        )
        pod: Manifest = self.api.sanitize_for_serialization(created)
        return pod

    async def pod_client(self, pod: Manifest) -> client.ApiClient:
        """An API client with a token bound to `pod`: the agent's identity on the pod's node."""
        token = await pod_token(self.api, pod)
        path = self.workdir / "tokens" / f"{pod['metadata']['name']}.kubeconfig"
        return await token_client(self.kubeconfig, token, path)

    async def agent(self, node: str, hardware: FakeGpuNode, *args: str, **env: str) -> AgentProcess:
        """An agent process (not started) for `node` with `hardware`, run as the chart's pod runs it.

        `args` are appended to the container's command (e.g. a short `--interval`); `env` overrides the
        pod's environment.
        """
        pod = await self.agent_pod(node)
        container = pod["spec"]["containers"][0]
        directory = self.workdir / f"{node}-{pod['metadata']['name'][-5:]}"
        directory.mkdir(parents=True, exist_ok=True)
        token = await pod_token(self.api, pod)
        kubeconfig = token_kubeconfig(self.kubeconfig, token, directory / "kubeconfig")
        pod_env = container_env(pod, container)
        agent = AgentProcess(node, pod, [], {}, directory)
        agent.env = process_env(
            pod_env,
            {
                # Stands in for the host's library, which the chart's init container links into /nvml.
                "LD_LIBRARY_PATH": str(fake_nvml_dir()),
                "FAKE_NVML_CONFIG": str(agent.hardware_file),
                "FAKE_NVML_TRACE": str(agent.trace_file),
                "KUBECONFIG": str(kubeconfig),
            },
            env,
        )
        agent.argv = local_argv([*container["command"], *container.get("args", []), *args], agent.env)
        agent.set_hardware(hardware)
        self.agents.append(agent)
        return agent

    async def wait_policy_enforced(
        self, agent_api: client.ApiClient, other_node: str, timeout: float
    ) -> None:
        """Wait until the admission policy rejects a (dry-run) change of `other_node` by `agent_api`."""
        core = client.CoreV1Api(agent_api)
        body = {"metadata": {"labels": {"policy-probe": "1"}}}

        async def enforced() -> str | None:
            message = await forbidden_message(
                core.patch_node(other_node, body, dry_run="All", **MERGE_PATCH_ARGS)
            )
            return message if message and self.policy_name in message else None

        await eventually(enforced, timeout=timeout, what=f"admission policy {self.policy_name} enforced")

    def stop_agents(self) -> None:
        """Stop every agent process started from this bed."""
        for agent in self.agents:
            agent.stop()
