"""Start and stop a real control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and KWOK, each a child process with its log in `<workdir>/logs/`."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cdtestbed import pki as pki_mod
from cdtestbed.netns import NetworkNamespace
from cdtestbed.tools import Tools

STATE_FILE = "cluster.json"
# Metadata only (who, what, when): enough to count requests per client without slowing the server.
_AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
"""
_PR_SET_PDEATHSIG = 1
# Inside a bed's own network namespace the API server listens where pods look for it: the
# `kubernetes` Service's port, on every address of the namespace (the Service IP among them).
INNER_API_PORT = 443


class ClusterError(RuntimeError):
    """The control plane could not be started; the message names the log to read."""


@dataclass
class ClusterOptions:
    """What to run. The defaults give the full control plane the end-to-end tests need."""

    runtime_config: str = ""
    feature_gates: str = ""
    # Without these the API server still works (e.g. for API-version tests), but nothing schedules.
    controllers: bool = True
    # Tie the processes to this one so they die with it (tests); off for `testbed up` (humans).
    tie_to_parent: bool = True
    # Record every request's metadata in <workdir>/audit.log (benchmarks count requests per user).
    audit: bool = False
    # The Node authorizer of 1.36 waits for resource.k8s.io/v1 ResourceSlices; a server with v1
    # switched off needs RBAC alone (no kubelet runs here, so nothing needs the Node authorizer).
    authorization_mode: str = "Node,RBAC"
    start_timeout: float = 120.0
    # KWOK renews each fake node's Lease every quarter of this: thousands of nodes need a longer one
    # (the node-lifecycle grace period follows it).
    node_lease_seconds: int = 40
    # Client QPS of kube-controller-manager and kube-scheduler (burst twice that); 0 keeps the
    # controller manager at 200 and the scheduler at its default 50. Thousands of pods and claims need more.
    controllers_qps: float = 0.0
    # Without kube-scheduler something else must bind pods (a benchmark's scheduler double).
    scheduler: bool = True


@dataclass
class Component:
    """One running process of the control plane."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    # How it was started and how to tell it is up, so that it can be started again the same way.
    args: tuple[str, ...] = ()
    healthy: Callable[[], bool] | None = None
    # `healthy` as called from this process (inside the cluster's network namespace where there is one).
    check: Callable[[], bool] | None = None


# Ports handed to components come from below the kernel's ephemeral range (32768-60999 by
# default): a port the kernel picks for `bind(0)` is one it may give any outgoing connection a moment
# later, before the component binds it, and the component then fails with "address in use" while its
# health check reaches whichever process took the port.
_PORTS = (20000, 32767)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, outside the ephemeral range."""
    for _ in range(100):
        port = random.randint(*_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def node_grace_seconds(lease_seconds: int) -> int:
    """kube-controller-manager's node-monitor grace period for a node lease of `lease_seconds`: five
    lease durations, at least 200 s (a late renewal on a loaded machine must not evict a fake node)."""
    return max(200, 5 * lease_seconds)


def die_with_parent() -> None:
    """Between fork and exec: have the child get SIGTERM when its parent dies, so an interrupted or
    killed test run leaves no process behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def killed_with_parent() -> None:
    """Like `die_with_parent`, with SIGKILL: for a child that ignores SIGTERM (`unshare --fork` does
    while it waits for its own child)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class LocalCluster:
    """A control plane under `workdir`. Use `start()`/`stop()` or as a context manager."""

    workdir: Path
    tools: Tools
    options: ClusterOptions = field(default_factory=ClusterOptions)
    # Where the components run; None: the machine's own network namespace, on loopback.
    network: NetworkNamespace | None = None
    components: list[Component] = field(default_factory=list)
    api_port: int = 0

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (client certificate in system:masters)."""
        return self.workdir / "kubeconfig"

    @property
    def logs(self) -> Path:
        """Folder with one log file per component."""
        return self.workdir / "logs"

    @property
    def audit_log(self) -> Path:
        """Where the API server writes audit events when `options.audit` is on."""
        return self.workdir / "audit.log"

    @property
    def component_kubeconfig(self) -> Path:
        """Admin kubeconfig for processes inside the cluster's network namespace (the controllers)."""
        return self.workdir / "kubeconfig-inside" if self.network else self.kubeconfig

    def kubeconfig_for(self, user: str, groups: tuple[str, ...] = (), inside: bool = False) -> Path:
        """A kubeconfig for `user` (a client certificate in `groups`), e.g. to tell a process apart;
        `inside`: for a process in the cluster's network namespace (a kubelet)."""
        certs = pki_mod.load(self.workdir / "pki")
        cert, key = pki_mod.issue_client(certs, user, groups, self.workdir / "pki")
        path = self.workdir / f"kubeconfig-{user}"
        self._write_kubeconfig(certs, path, (cert, key), self.inner_server if inside else self.server)
        return path

    @property
    def server(self) -> str:
        """The API server URL (for processes in the machine's own network namespace)."""
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def inner_server(self) -> str:
        """The API server URL inside the cluster's network namespace (the same as `server` without one)."""
        return f"https://127.0.0.1:{INNER_API_PORT}" if self.network else self.server

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start every component in order and wait until each is healthy."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self._write_state()  # marks the folder as in use from the first moment
        certs = pki_mod.create(self.workdir / "pki")
        try:
            self._start_all(certs)
        except BaseException:
            self.stop()
            raise
        self._write_state()

    def _start_all(self, certs: pki_mod.Pki) -> None:
        etcd_port, peer_port = free_port(), free_port()
        self.api_port = free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._spawn("etcd", self._etcd_args(etcd_url, peer_port), lambda: _http_ok(f"{etcd_url}/health"))
        self._wait("etcd")
        ca = ssl.create_default_context(cafile=str(certs.ca_cert))
        self._spawn(
            "kube-apiserver",
            self._apiserver_args(certs, etcd_url),
            lambda: _http_ok(f"{self.inner_server}/readyz", ca),
        )
        self._wait("kube-apiserver")
        self._write_kubeconfig(certs)
        if self.network is not None:
            self._write_kubeconfig(certs, self.component_kubeconfig, server=self.inner_server)
            self._spawn("api-forward", self._forward_args(), lambda: _http_ok(f"{self.server}/readyz", ca))
            self._wait("api-forward")
        if not self.options.controllers:
            return
        kcm_port, sched_port, kwok_port = free_port(), free_port(), free_port()
        insecure = ssl._create_unverified_context()
        self._spawn(
            "kube-controller-manager",
            self._kcm_args(certs, kcm_port),
            lambda: _http_ok(f"https://127.0.0.1:{kcm_port}/healthz", insecure),
        )
        if self.options.scheduler:
            self._spawn(
                "kube-scheduler",
                self._scheduler_args(sched_port),
                lambda: _http_ok(f"https://127.0.0.1:{sched_port}/healthz", insecure),
            )
        self._spawn(
            "kwok", self._kwok_args(kwok_port), lambda: _http_ok(f"http://127.0.0.1:{kwok_port}/healthz")
        )
        for component in self.components:
            if component.name not in ("etcd", "kube-apiserver"):  # those two are up already
                self._wait(component.name)

    def stop(self) -> None:
        """Stop every component (SIGTERM, then SIGKILL) in reverse start order."""
        for component in reversed(self.components):
            _terminate(component.process.pid, component.process)
        self.components.clear()
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / STATE_FILE).unlink()

    def component(self, name: str) -> Component:
        """The running component called `name` (etcd, kube-apiserver, ...)."""
        for component in self.components:
            if component.name == name:
                return component
        raise KeyError(f"no component {name!r}; have {[c.name for c in self.components]}")

    def stop_component(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop one component (by `sig`, SIGKILL after a grace period) and leave it down."""
        process = self.component(name).process
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        _terminate(process.pid, process)

    def start_component(self, name: str) -> None:
        """Start a stopped component again with the arguments it first had; wait until healthy."""
        old = self.component(name)
        if old.process.poll() is None:
            raise ClusterError(f"{name} is still running")
        self._spawn(name, old.args, old.healthy)
        self._wait(name)
        self._write_state()

    def restart(self, name: str, down_seconds: float = 0.0, sig: int = signal.SIGTERM) -> float:
        """Stop a component, keep it down for `down_seconds`, start it again and wait until it is
        healthy; returns how long it was unavailable (seconds)."""
        began = time.monotonic()
        self.stop_component(name, sig)
        time.sleep(max(0.0, down_seconds - (time.monotonic() - began)))
        self.start_component(name)
        return time.monotonic() - began

    def _etcd_args(self, url: str, peer_port: int) -> list[str]:
        peer = f"http://127.0.0.1:{peer_port}"
        return [
            str(self.tools.bin("etcd")),
            "--name=default",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            # Test data only: fsync dominates etcd latency on shared disks.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]

    def _forward_args(self) -> list[str]:
        assert self.network is not None
        testbed = Path(__file__).resolve().parent.parent
        return [
            "env",
            f"PYTHONPATH={testbed}",
            sys.executable,
            "-m",
            "cdtestbed.forward",
            f"--listen=127.0.0.1:{self.api_port}",
            f"--netns={self.network.path}",
            f"--to=127.0.0.1:{INNER_API_PORT}",
        ]

    def _apiserver_args(self, certs: pki_mod.Pki, etcd_url: str) -> list[str]:
        inside = self.network is not None
        args = [
            str(self.tools.bin("kube-apiserver")),
            f"--etcd-servers={etcd_url}",
            # In the bed's own namespace pods reach it through the Service address (see netns).
            f"--bind-address={'0.0.0.0' if inside else '127.0.0.1'}",
            # Without it the API server derives an address from the default route, which an
            # offline machine may not have.
            "--advertise-address=127.0.0.1",
            f"--secure-port={INNER_API_PORT if inside else self.api_port}",
            f"--tls-cert-file={certs.serving_cert}",
            f"--tls-private-key-file={certs.serving_key}",
            f"--client-ca-file={certs.ca_cert}",
            f"--authorization-mode={self.options.authorization_mode}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={certs.sa_pub}",
            f"--service-account-signing-key-file={certs.sa_key}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            "--profiling=false",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
        ]
        if inside:
            # Real kubelets there have node addresses (their bridges): `kubectl exec` and logs dial them.
            args.append("--kubelet-preferred-address-types=InternalIP")
        if self.options.runtime_config:
            args.append(f"--runtime-config={self.options.runtime_config}")
        if self.options.audit:
            policy = self.workdir / "audit-policy.yaml"
            policy.write_text(_AUDIT_POLICY)
            args += [
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-maxsize=0",
            ]
        if self.options.feature_gates:
            args.append(f"--feature-gates={self.options.feature_gates}")
        return args

    def _kcm_args(self, certs: pki_mod.Pki, port: int) -> list[str]:
        args = [
            str(self.tools.bin("kube-controller-manager")),
            f"--kubeconfig={self.component_kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            "--leader-elect=false",
            "--controllers=*",
            f"--service-account-private-key-file={certs.sa_key}",
            f"--root-ca-file={certs.ca_cert}",
            f"--cluster-signing-cert-file={certs.ca_cert}",
            f"--cluster-signing-key-file={certs.ca_key}",
            # KWOK heartbeats can lag on a loaded 2-core machine; do not evict fake nodes for it.
            f"--node-monitor-grace-period={node_grace_seconds(self.options.node_lease_seconds)}s",
            f"--kube-api-qps={self.options.controllers_qps or 200:g}",
            f"--kube-api-burst={2 * (self.options.controllers_qps or 200):g}",
            "--concurrent-daemonset-syncs=8",
            "--profiling=false",
        ]
        if self.options.feature_gates:
            args.append(f"--feature-gates={self.options.feature_gates}")
        return args

    def _scheduler_args(self, port: int) -> list[str]:
        args = [
            str(self.tools.bin("kube-scheduler")),
            f"--kubeconfig={self.component_kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            "--leader-elect=false",
            "--profiling=false",
        ]
        if self.options.controllers_qps:
            qps = self.options.controllers_qps
            args += [f"--kube-api-qps={qps:g}", f"--kube-api-burst={2 * qps:g}"]
        if self.options.feature_gates:
            args.append(f"--feature-gates={self.options.feature_gates}")
        return args

    def _kwok_args(self, port: int) -> list[str]:
        args = [
            str(self.tools.bin("kwok")),
            f"--kubeconfig={self.component_kubeconfig}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--cidr=10.244.0.0/16",
            "--node-ip=10.240.0.1",
            f"--node-lease-duration-seconds={self.options.node_lease_seconds}",
            f"--server-address=127.0.0.1:{port}",
        ]
        args += [f"--config={stage}" for stage in self.tools.kwok_stages()]
        return args

    def _spawn(self, name: str, args: Sequence[str], healthy: Callable[[], bool] | None = None) -> None:
        log = self.logs / f"{name}.log"
        run, check = list(args), healthy
        network = self.network
        if network is not None and name != "api-forward":
            run = network.wrap(run)
            if healthy is not None:
                inner = healthy
                check = lambda: network.call(inner)  # noqa: E731
        with log.open("ab") as out:
            process = subprocess.Popen(
                run,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent if self.options.tie_to_parent else None,
            )
        component = Component(name, process, log, tuple(args), healthy, check)
        for index, known in enumerate(self.components):
            if known.name == name:
                self.components[index] = component  # started again: same place in the order
                return
        self.components.append(component)

    def _wait(self, name: str) -> None:
        component = self.component(name)
        healthy = component.check or (lambda: True)
        deadline = time.monotonic() + self.options.start_timeout
        while time.monotonic() < deadline:
            if component.process.poll() is not None:
                raise ClusterError(
                    f"{name} exited with status {component.process.returncode}; see {component.log}\n"
                    + _tail(component.log)
                )
            if healthy():
                return
            time.sleep(0.2)
        raise ClusterError(f"{name} not healthy after {self.options.start_timeout:.0f}s; see {component.log}")

    def _write_kubeconfig(
        self,
        certs: pki_mod.Pki,
        path: Path | None = None,
        client: tuple[Path, Path] | None = None,
        server: str | None = None,
    ) -> None:
        path = path or self.kubeconfig
        cert, key = client or (certs.admin_cert, certs.admin_key)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "testbed",
                    "cluster": {"server": server or self.server, "certificate-authority": str(certs.ca_cert)},
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate": str(cert),
                        "client-key": str(key),
                    },
                }
            ],
            "contexts": [{"name": "testbed", "context": {"cluster": "testbed", "user": "admin"}}],
            "current-context": "testbed",
        }
        # JSON is YAML; every kubeconfig reader accepts it.
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)

    def _write_state(self) -> None:
        state = {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "pids": {c.name: c.process.pid for c in self.components},
        }
        (self.workdir / STATE_FILE).write_text(json.dumps(state, indent=2))


def stop_from_state(workdir: Path) -> bool:
    """Stop a control plane started by another process (`testbed up`); False if none was running."""
    path = workdir / STATE_FILE
    if not path.exists():
        return False
    state = json.loads(path.read_text())
    for pid in reversed(list(state["pids"].values())):
        _terminate(int(pid), None)
    path.unlink()
    return True


def _terminate(pid: int, process: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if process is not None:
            if process.poll() is not None:
                return
        elif not _alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if process is not None:
        process.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    return True


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""
