"""Real kubelet nodes beside the control plane, each with its own container-runtime double.

A node is three processes, all children of this one that die with it: a holder of a private
mount namespace (`unshare --mount --propagation private`, with scratch copies bind-mounted over the
sysctls the kubelet rewrites and over /var/log), and, joined to that namespace with `nsenter`, the
runtime double (`cri-double`) and the kubelet. The kubelet's mounts (pod volumes) stay in the
namespace, where the runtime double's host processes see them; its plugin sockets are plain files any
process can dial.

Per node, the kubelet's root dir and the runtime socket live under a short temporary folder (unix
socket paths are limited to 107 bytes); certificates, configuration, CDI spec dir and the runtime's
records live under `<cluster workdir>/kubelets/<node>/`; logs go to the cluster's logs folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdtestbed import kubelet_config
from cdtestbed.cluster import ClusterError, LocalCluster, die_with_parent, free_port
from cdtestbed.tools import Tools
from cdtestbed.topology import FakeNode

NODE_BINARIES = ("kubelet", "cri-double")
_HOST_COMMANDS = ("unshare", "nsenter", "mount", "sleep")
STOP_GRACE = 15.0


def can_run_kubelet(tools: Tools | None = None) -> str | None:
    """None when this machine can run real kubelet nodes; otherwise why not."""
    if not sys.platform.startswith("linux"):
        return f"real kubelets need Linux, not {sys.platform}"
    if os.geteuid() != 0:
        return "real kubelets need root (mount namespaces, bind mounts over /proc/sys)"
    missing = [name for name in _HOST_COMMANDS if shutil.which(name) is None]
    if missing:
        return f"host commands missing: {', '.join(missing)}"
    tools = tools or Tools.default()
    absent = [name for name in NODE_BINARIES if not (tools.directory / "bin" / name).exists()]
    if absent:
        return f"{', '.join(absent)} not built in {tools.directory}: run `make tools` (tools/build.sh)"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "mount", "--bind", "/proc/sys/vm", "/proc/sys/vm"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        return (
            "cannot create a mount namespace with bind mounts: "
            + probe.stderr.decode(errors="replace").strip()
        )
    return None


@dataclass(frozen=True)
class KubeletOptions:
    """What every kubelet node of one start gets."""

    # Container command (first element) -> host argv; such containers run as host processes.
    commands: Mapping[str, Sequence[str]] = field(default_factory=dict)
    # CDI spec dirs the runtime resolves against; None: the node's own `cdi_dir`.
    cdi_spec_dirs: Sequence[Path] | None = None
    feature_gates: str = ""
    verbosity: int = 1
    start_timeout: float = 60.0


@dataclass
class KubeletNode:
    """One real kubelet node: where its files are and its processes."""

    node: FakeNode
    index: int
    home: Path  # <cluster workdir>/kubelets/<name>
    short: Path  # short temporary folder for the root dir and sockets
    port: int = 0
    healthz_port: int = 0
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The Node's name (`--hostname-override`)."""
        return self.node.name

    @property
    def root_dir(self) -> Path:
        """The kubelet's `--root-dir`."""
        return self.short / "root"

    @property
    def plugins_registry(self) -> Path:
        """Where a kubelet plugin puts its registration socket."""
        return self.root_dir / "plugins_registry"

    @property
    def plugins_dir(self) -> Path:
        """Where a kubelet plugin puts its service socket (`<plugins>/<driver>/dra.sock`)."""
        return self.root_dir / "plugins"

    @property
    def runtime_socket(self) -> Path:
        """The CRI socket of this node's runtime double."""
        return self.short / "cri.sock"

    @property
    def cdi_dir(self) -> Path:
        """This node's own CDI spec dir (the runtime's default spec dir)."""
        return self.home / "cdi"

    @property
    def runtime_state(self) -> Path:
        """The runtime double's state: `containers/<id>.json` records, `logs/<id>.log` of host processes."""
        return self.home / "runtime"

    @property
    def pod_cidr(self) -> str:
        """The loopback prefix this node's pod IPs come from."""
        return f"127.{10 + self.index}.0.0/16"

    def records(self, namespace: str | None = None, pod: str | None = None) -> list[dict[str, Any]]:
        """The runtime's container records (optionally of one namespace / pod), oldest first."""
        folder = self.runtime_state / "containers"
        paths = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime) if folder.exists() else []
        found = [json.loads(p.read_text()) for p in paths]
        return [
            r
            for r in found
            if (namespace is None or r["podNamespace"] == namespace) and (pod is None or r["podName"] == pod)
        ]

    def rss_bytes(self, process: str = "kubelet") -> int:
        """Resident memory of one of the node's processes ("kubelet" or "cri-double")."""
        status = Path(f"/proc/{self.processes[process].pid}/status").read_text()
        kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(kib) * 1024


@dataclass
class KubeletNodes:
    """N real kubelet nodes of `cluster`. Use `start()`/`stop()` or as a context manager."""

    cluster: LocalCluster
    nodes: Sequence[FakeNode]
    options: KubeletOptions = field(default_factory=KubeletOptions)
    running: list[KubeletNode] = field(default_factory=list)
    _short_root: Path | None = None

    def __enter__(self) -> KubeletNodes:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def node(self, name: str) -> KubeletNode:
        """The running node called `name`."""
        return next(n for n in self.running if n.name == name)

    def start(self) -> None:
        """Start every node and wait until each kubelet answers its health check (the Node object
        may become Ready a few seconds later: wait with `cdtestbed.nodes.wait_nodes_ready`)."""
        reason = can_run_kubelet(self.cluster.tools)
        if reason is not None:
            raise ClusterError(f"cannot run kubelets: {reason}")
        self._short_root = Path(tempfile.mkdtemp(prefix="cdk-"))
        try:
            for index, node in enumerate(self.nodes):
                home = self.cluster.workdir / "kubelets" / node.name
                kubelet = KubeletNode(node, index, home, self._short_root / str(index))
                self.running.append(kubelet)
                self._start_node(kubelet)
            for kubelet in self.running:
                self._wait_healthy(kubelet)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop each node's kubelet, then its runtime (which stops its host processes), then its
        namespace; remove the short folders."""
        for kubelet in reversed(self.running):
            for name in ("kubelet", "cri-double", "namespace"):
                process = kubelet.processes.pop(name, None)
                if process is not None:
                    _stop(process)
        self.running.clear()
        if self._short_root is not None:
            shutil.rmtree(self._short_root, ignore_errors=True)
            self._short_root = None

    def restart_kubelet(self, name: str) -> None:
        """Stop and start one node's kubelet process (its runtime and namespace keep running)."""
        kubelet = self.node(name)
        _stop(kubelet.processes.pop("kubelet"))
        self._spawn_kubelet(kubelet)
        self._wait_healthy(kubelet)

    def _start_node(self, kubelet: KubeletNode) -> None:
        for folder in (
            kubelet.home / "certs",
            kubelet.home / "pod-logs",
            kubelet.cdi_dir,
            kubelet.runtime_state,
        ):
            folder.mkdir(parents=True, exist_ok=True)
        scratch = kubelet.short / "sysctl"
        scratch.mkdir(parents=True)
        kubelet.root_dir.mkdir()
        ready = kubelet.short / "namespace-ready"
        self._spawn(
            kubelet,
            "namespace",
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                kubelet_config.namespace_script(scratch, ready),
            ],
        )
        self._wait(kubelet, "namespace", ready.exists, "private mount namespace")
        commands = kubelet.home / "commands.json"
        commands.write_text(
            json.dumps({key: list(value) for key, value in self.options.commands.items()}, indent=2)
        )
        spec_dirs = self.options.cdi_spec_dirs or [kubelet.cdi_dir]
        self._spawn(
            kubelet,
            "cri-double",
            [
                str(self.cluster.tools.bin("cri-double")),
                f"--socket={kubelet.runtime_socket}",
                f"--state-dir={kubelet.runtime_state}",
                f"--cdi-spec-dirs={','.join(str(d) for d in spec_dirs)}",
                f"--command-map={commands}",
                f"--pod-cidr={kubelet.pod_cidr}",
                f"--api-server=127.0.0.1:{self.cluster.api_port}",
            ],
            joined=True,
        )
        self._wait(kubelet, "cri-double", kubelet.runtime_socket.exists, "runtime socket")
        kubelet.port, kubelet.healthz_port = free_port(), free_port()
        config = kubelet_config.kubelet_configuration(
            port=kubelet.port,
            healthz_port=kubelet.healthz_port,
            runtime_socket=kubelet.runtime_socket,
            pod_logs_dir=kubelet.home / "pod-logs",
            volume_plugin_dir=kubelet.root_dir / "volume-plugins",
            client_ca=self.cluster.workdir / "pki" / "ca.crt",
        )
        # JSON is YAML; the kubelet reads either.
        (kubelet.home / "config.yaml").write_text(json.dumps(config, indent=2))
        self.cluster.kubeconfig_for(f"system:node:{kubelet.name}", ("system:nodes",))
        self._spawn_kubelet(kubelet)

    def _spawn_kubelet(self, kubelet: KubeletNode) -> None:
        args = [
            str(self.cluster.tools.bin("kubelet")),
            f"--config={kubelet.home / 'config.yaml'}",
            f"--kubeconfig={self.cluster.workdir / f'kubeconfig-system:node:{kubelet.name}'}",
            f"--root-dir={kubelet.root_dir}",
            f"--cert-dir={kubelet.home / 'certs'}",
            f"--hostname-override={kubelet.name}",
            # The kubelet refuses a loopback node IP as its address (it logs that on each status
            # update) and then reports none, rather than a host address outside loopback.
            "--node-ip=127.0.0.1",
            f"--node-labels={kubelet_config.labels_flag(kubelet_config.node_labels(kubelet.node))}",
            f"--v={self.options.verbosity}",
        ]
        if self.options.feature_gates:
            args.append(f"--feature-gates={self.options.feature_gates}")
        self._spawn(kubelet, "kubelet", args, joined=True)

    def _spawn(self, kubelet: KubeletNode, name: str, args: Sequence[str], joined: bool = False) -> None:
        # An empty working directory of its own: nsenter would otherwise start the process in "/",
        # where a path bug (a relative glob, a relative remove) would hit the host.
        cwd = kubelet.short / "cwd"
        cwd.mkdir(exist_ok=True)
        if joined:
            holder = kubelet.processes["namespace"].pid
            args = ["nsenter", f"--target={holder}", "--mount", f"--wd={cwd}", "--", *args]
        log = self.cluster.logs / f"{name}-{kubelet.name}.log"
        with log.open("ab") as out:
            kubelet.processes[name] = subprocess.Popen(
                list(args),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    def _wait(self, kubelet: KubeletNode, name: str, done: Any, what: str) -> None:
        process = kubelet.processes[name]
        deadline = time.monotonic() + self.options.start_timeout
        while not done():
            log = self.cluster.logs / f"{name}-{kubelet.name}.log"
            if process.poll() is not None:
                raise ClusterError(f"{name} of {kubelet.name} exited with {process.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"no {what} for {kubelet.name} after {self.options.start_timeout:.0f}s; see {log}"
                )
            time.sleep(0.1)

    def _wait_healthy(self, kubelet: KubeletNode) -> None:
        url = f"http://127.0.0.1:{kubelet.healthz_port}/healthz"
        self._wait(kubelet, "kubelet", lambda: _http_ok(url), "healthy kubelet")


@contextlib.contextmanager
def kubelet_nodes(
    cluster: LocalCluster, nodes: Sequence[FakeNode], options: KubeletOptions | None = None
) -> Iterator[KubeletNodes]:
    """Run real kubelet nodes for `nodes` (names, labels) beside `cluster` for the duration of the block."""
    with KubeletNodes(cluster, nodes, options or KubeletOptions()) as running:
        yield running


def _stop(process: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
