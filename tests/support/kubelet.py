"""A kubelet double for IMEX daemon pods, and the service account credentials a kubelet hands to pods.

No kubelet runs in the test bed: KWOK only reports pods Running. `DaemonKubelet` plays the kubelet's part
for the per-domain IMEX daemon pods (label `resource.nvidia.com/computeDomain`) in one namespace: for
every such pod that is Running it runs the pod's real command (`compute-domain-daemon run`) as a local
process, with the environment the pod spec describes (downward API resolved), what NVIDIA's kubelet
plugin would add through CDI (`CLIQUE_ID`, taken from the node's `nvidia.com/gpu.clique` label), a
per-pod config directory and hosts file, the fake `nvidia-imex` binaries, and a service account token
bound to the pod. When the pod is deleted it sends SIGTERM, as the kubelet would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config, watch

from cdtestbed.cluster import die_with_parent
from cdtestbed.serviceaccount import TOKEN_SECONDS, request_token, token_kubeconfig
from cdtestbed.tools import repo_root
from computedomain.api import names
from fakes.imex.harness import FAKE_IMEX, FAKE_IMEX_CTL, read_events

log = logging.getLogger(__name__)

STOP_GRACE = 20.0
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
# The image's console scripts, as this checkout runs them.
ENTRY_POINTS: dict[str, list[str]] = {
    "compute-domain-daemon": [sys.executable, "-m", "computedomain.daemon"],
    "computedomain-agent": [sys.executable, "-m", "computedomain.agent"],
    # The base image's shell, which the daemon's startup and readiness probes run.
    "sh": ["/bin/sh"],
}
# Variables of the test runner's own environment that must not leak into a pod's process.
_CLUSTER_ENV = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")


def spawn(argv: Sequence[str], env: Mapping[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session with stdout and stderr appended to `log_file`.

    The child dies with the test process, so an interrupted run leaves nothing behind.
    """
    with log_file.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )


def process_env(*layers: Mapping[str, str]) -> dict[str, str]:
    """The test runner's environment without its cluster credentials, with this checkout importable,
    overlaid with `layers` (later ones win)."""
    env = {key: value for key, value in os.environ.items() if key not in _CLUSTER_ENV}
    env["PYTHONPATH"] = str(repo_root() / "operator")
    env["PYTHONUNBUFFERED"] = "1"
    for layer in layers:
        env.update(layer)
    return env


async def pod_token(api: client.ApiClient, pod: Mapping[str, Any], seconds: int = TOKEN_SECONDS) -> str:
    """A token of the pod's service account bound to the pod, as the kubelet projects it into the pod.

    The API server records the pod's node in a bound token, and authenticates its requests with the
    user extra `authentication.kubernetes.io/node-name`.
    """
    meta, spec = pod["metadata"], pod.get("spec") or {}
    account = spec.get("serviceAccountName") or "default"
    return await request_token(api, meta["namespace"], account, seconds, (meta["name"], meta["uid"]))


async def account_token(api: client.ApiClient, namespace: str, account: str) -> str:
    """A token of a service account that is not bound to any pod (so it carries no node name)."""
    return await request_token(api, namespace, account)


async def token_client(cluster_kubeconfig: Path, token: str, path: Path) -> client.ApiClient:
    """An API client that authenticates with `token` (its kubeconfig is written to `path`)."""
    return await config.new_client_from_config(
        config_file=str(token_kubeconfig(cluster_kubeconfig, token, path))
    )


def _field(pod: Mapping[str, Any], path: str) -> str:
    value: Any = pod
    for part in path.split("."):
        value = (value or {}).get(part)
    return "" if value is None else str(value)


def expand(text: str, env: Mapping[str, str]) -> str:
    """Expand `$(VAR)` references the way the kubelet does in commands and env values."""
    return _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def container_env(pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, str]:
    """The container's `env`, with downward API field references resolved against the pod."""
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = expand(str(item["value"]), env)
            continue
        ref = ((item.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if ref is None:
            raise ValueError(f"env {item['name']}: only values and fieldRefs are supported by this double")
        env[item["name"]] = _field(pod, ref)
    return env


def local_argv(command: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """A container command with variables expanded and the image's entry point mapped to this checkout."""
    expanded = [expand(part, env) for part in command]
    entry = ENTRY_POINTS.get(expanded[0])
    if entry is None:
        raise ValueError(f"no local stand-in for the image's {expanded[0]!r}")
    return [*entry, *expanded[1:]]


def initial_hosts(pod: Mapping[str, Any]) -> str:
    """The hosts file the kubelet writes into a pod: localhost and the pod's own name."""
    ip, name = _field(pod, "status.podIP"), _field(pod, "metadata.name")
    return f"# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost\n{ip}\t{name}\n"


def is_running(pod: Mapping[str, Any]) -> bool:
    """Running (as KWOK reports it), with an IP and a node, and not being deleted."""
    return (
        _field(pod, "status.phase") == "Running"
        and bool(_field(pod, "status.podIP"))
        and bool(_field(pod, "spec.nodeName"))
        and not _field(pod, "metadata.deletionTimestamp")
    )


@dataclass
class DaemonRun:
    """One daemon pod's process and the files it works on."""

    pod_name: str
    pod_uid: str
    node: str
    pod_ip: str
    directory: Path
    env: dict[str, str]
    pod: dict[str, Any]
    process: subprocess.Popen[bytes] | None = None

    @property
    def config_dir(self) -> Path:
        """The pod's IMEX config directory (`/imexd` in a real pod); the fake IMEX records events here."""
        return self.directory / "imexd"

    @property
    def hosts_file(self) -> Path:
        """The pod's hosts file (`/etc/hosts` in a real pod)."""
        return self.directory / "hosts"

    @property
    def log(self) -> Path:
        """stdout and stderr of the daemon and of the IMEX process it runs."""
        return self.directory / "daemon.log"

    @property
    def alive(self) -> bool:
        """Whether the daemon process is running."""
        return self.process is not None and self.process.poll() is None

    def imex_events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """What the fake `nvidia-imex` recorded for this pod ("start", "reload", "stop"), oldest first."""
        events = read_events(self.config_dir)
        return events if kind is None else [e for e in events if e["event"] == kind]

    def imex_pid(self) -> int | None:
        """The pid of the fake `nvidia-imex` running for this pod now, if any."""
        try:
            pid = int((self.config_dir / "imex.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def log_text(self) -> str:
        """The daemon's log so far."""
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    async def probe(self, kind: str = "readinessProbe") -> tuple[int, str]:
        """Run the container's exec probe (`check`) as the kubelet would; (exit code, what it printed).

        Its log lines (stderr) go to the daemon's log.
        """
        container = self.pod["spec"]["containers"][0]
        argv = local_argv(container[kind]["exec"]["command"], self.env)
        with self.log.open("ab") as log_file:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=self.env,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
                preexec_fn=die_with_parent,
            )
            output, _ = await asyncio.wait_for(proc.communicate(), 60)
        return int(proc.returncode or 0), output.decode(errors="replace")

    async def stop(self, grace: float = STOP_GRACE) -> int | None:
        """SIGTERM the daemon, SIGKILL after `grace` seconds; its exit code."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, grace)
            except subprocess.TimeoutExpired:
                log.warning("daemon of pod %s ignored SIGTERM; killing it", self.pod_name)
                proc.kill()
                await asyncio.to_thread(proc.wait)
        return proc.returncode


@dataclass
class DaemonKubelet:
    """Runs `compute-domain-daemon run` for each Running IMEX daemon pod of `namespace` (a kubelet double).

    Use as an async context manager. `runs` holds every pod it started, by pod UID; `stopped` those whose
    pod went away (their processes were sent SIGTERM and have exited).
    """

    api: client.ApiClient
    cluster_kubeconfig: Path
    namespace: str
    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    runs: dict[str, DaemonRun] = field(default_factory=dict)
    stopped: dict[str, DaemonRun] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> DaemonKubelet:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.create_task(self._follow(), name="daemon-kubelet")
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for uid in list(self.runs):
            await self._stop(uid)

    def running(self) -> dict[str, DaemonRun]:
        """The daemons alive now, by node name."""
        return {run.node: run for run in self.runs.values() if run.alive}

    async def _follow(self) -> None:
        core = client.CoreV1Api(self.api)
        while True:
            try:
                listing = await core.list_namespaced_pod(self.namespace, label_selector=names.DOMAIN_LABEL)
                pods = [self.api.sanitize_for_serialization(p) for p in listing.items]
                await self._sync(pods)
                async with watch.Watch().stream(
                    core.list_namespaced_pod,
                    self.namespace,
                    label_selector=names.DOMAIN_LABEL,
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=60,
                ) as stream:
                    async for event in stream:
                        if not isinstance(event, dict) or event.get("type") == "ERROR":
                            raise RuntimeError(f"watch of daemon pods failed: {event!r}")
                        pod = event["raw_object"]
                        if event["type"] == "DELETED" or not is_running(pod):
                            await self._stop(pod["metadata"]["uid"])
                        elif pod["metadata"]["uid"] not in self.runs:
                            await self._start(pod)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a double keeps going, and says what went wrong
                self.errors.append(repr(err))
                log.warning("daemon kubelet: %r; listing again", err)
                await asyncio.sleep(0.5)

    async def _sync(self, pods: list[dict[str, Any]]) -> None:
        present = {pod["metadata"]["uid"] for pod in pods if is_running(pod)}
        for uid in list(self.runs):
            if uid not in present:
                await self._stop(uid)
        for pod in pods:
            if is_running(pod) and pod["metadata"]["uid"] not in self.runs:
                await self._start(pod)

    async def _clique_of(self, node: str) -> str:
        # Stands in for the kubelet plugin's CDI edit, which reads the clique from NVML on the node.
        found = await client.CoreV1Api(self.api).read_node(node)
        return str((found.metadata.labels or {}).get(names.GPU_CLIQUE_LABEL, ""))

    async def _start(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        node = pod["spec"]["nodeName"]
        directory = self.workdir / f"{node}-{meta['uid'][:8]}"
        container = pod["spec"]["containers"][0]
        env = container_env(pod, container)
        kubeconfig = token_kubeconfig(
            self.cluster_kubeconfig, await pod_token(self.api, pod), directory / "kubeconfig"
        )
        run = DaemonRun(meta["name"], meta["uid"], node, _field(pod, "status.podIP"), directory, {}, pod)
        run.config_dir.mkdir(parents=True, exist_ok=True)
        run.hosts_file.write_text(initial_hosts(pod))
        run.env = process_env(
            env,
            {
                "CLIQUE_ID": await self._clique_of(node),
                "IMEX_CONFIG_DIR": str(run.config_dir),
                "IMEX_HOSTS_FILE": str(run.hosts_file),
                "IMEX_BINARY": str(FAKE_IMEX),
                "IMEX_CTL_BINARY": str(FAKE_IMEX_CTL),
                "KUBECONFIG": str(kubeconfig),
            },
            self.extra_env,
        )
        argv = local_argv(container["command"], run.env)
        run.process = spawn(argv, run.env, run.log)
        self.runs[meta["uid"]] = run
        log.info("daemon kubelet: started %s for pod %s on %s", argv, meta["name"], node)

    async def _stop(self, uid: str) -> None:
        run = self.runs.pop(uid, None)
        if run is None:
            return
        await run.stop()
        self.stopped[uid] = run
