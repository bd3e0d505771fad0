"""Real kubelet nodes beside the control plane, each with its own container runtime: the runtime
double (`cri-double`, host processes) or a real containerd with runc and CNI (`runtime="containerd"`).

A node is three processes, all children of this one that die with it: a holder of a private
mount namespace (`unshare --mount --propagation private`, with scratch copies bind-mounted over the
sysctls the kubelet rewrites and over /var/log), and, joined to that namespace with `nsenter`, the
runtime double (`cri-double`) and the kubelet. The kubelet's mounts (pod volumes) stay in the
namespace, where the runtime double's host processes see them; its plugin sockets are plain files any
process can dial.

Per node, the kubelet's root dir and the runtime socket live under a short temporary folder (unix
socket paths are limited to 107 bytes); certificates, configuration, CDI spec dir and the runtime's
records live under `<cluster workdir>/kubelets/<node>/`; logs go to the cluster's logs folder.

A containerd node runs inside the bed's network namespace (`cdtestbed.netns`, where its pod bridge
lives) and in a PID namespace of its own besides its mount namespace: containerd's shims leave their
parent, and when the node's holder dies the kernel ends every process of the node, containers
included. Inside its mount namespace each node sees its own kubelet root, CDI folder, driver root and
plugin state at the same paths (`KubeletNode.inside`), so the chart's host paths are one value for all
nodes.
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdtestbed import kubelet_config, runtime_config
from cdtestbed.cluster import ClusterError, LocalCluster, die_with_parent, free_port, killed_with_parent
from cdtestbed.netns import NetworkNamespace
from cdtestbed.tools import Tools
from cdtestbed.topology import FakeNode

NODE_BINARIES = ("kubelet", "cri-double")
CONTAINERD_BINARIES = ("kubelet", "containerd", "containerd-shim-runc-v2", "ctr", "runc")
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
PAUSE_ARCHIVE = "images/pause.oci.tar"
DOUBLE = "double"
CONTAINERD = "containerd"
_HOST_COMMANDS = ("unshare", "nsenter", "mount", "sleep", "ip")
STOP_GRACE = 15.0
# Nodes started by this process, by runtime: a run says which runtime its kubelets used.
STARTED: dict[str, int] = {}
RUNTIME_NAMES = {DOUBLE: "runtime double (host processes)", CONTAINERD: "containerd + runc (real containers)"}
_CGROUP_ROOT = Path("/sys/fs/cgroup")
# containerd's CRI plugin puts every container of its k8s.io namespace under this cgroup.
_CGROUP_PARENT = "k8s.io"


def can_run_containers(tools: Tools | None = None) -> str | None:
    """None when this machine can run real kubelet nodes on containerd; otherwise why not."""
    tools = tools or Tools.default()
    reason = can_run_kubelet(tools)
    if reason is not None:
        return reason
    absent = [name for name in CONTAINERD_BINARIES if not (tools.directory / "bin" / name).exists()]
    absent += [
        f"cni/bin/{name}" for name in CNI_PLUGINS if not (tools.directory / "cni" / "bin" / name).exists()
    ]
    if not (tools.directory / PAUSE_ARCHIVE).exists():
        absent.append(PAUSE_ARCHIVE)
    if absent:
        return f"{', '.join(absent)} not built in {tools.directory}: run `make tools` (tools/build.sh)"
    probe = subprocess.run(
        [
            "unshare",
            "--net",
            "--mount",
            "--pid",
            "--fork",
            "--mount-proc",
            "ip",
            "link",
            "add",
            "probe0",
            "type",
            "bridge",
        ],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        return (
            "cannot create network and PID namespaces with a bridge: "
            + probe.stderr.decode(errors="replace").strip()
        )
    return None


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
    # DOUBLE: the runtime double; CONTAINERD: containerd, runc and CNI (needs `network`).
    runtime: str = DOUBLE
    # The bed's network namespace, where containerd nodes (and the control plane) run.
    network: NetworkNamespace | None = None
    # OCI archives imported into each containerd node (the pause image always is).
    images: Sequence[Path] = ()
    # Tie the nodes' processes to this one so they die with it (tests); off for a demo left running.
    tie_to_parent: bool = True


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
    # Containerd nodes: the folder every node sees its own node files at (kubelet root, CDI specs,
    # driver root, plugin state, containerd) inside its mount namespace; None for the runtime double.
    inside: Path | None = None
    # Containerd nodes: PID 1 of the node's PID namespace (what nsenter joins).
    init_pid: int = 0

    @property
    def runtime(self) -> str:
        """DOUBLE or CONTAINERD."""
        return DOUBLE if self.inside is None else CONTAINERD

    @property
    def node_dir(self) -> Path:
        """Containerd nodes: the real folder that appears at `inside` in the node's namespace."""
        return self.short / "node"

    @property
    def shared_folders(self) -> list[tuple[Path, str]]:
        """Containerd nodes: (real folder, name under `inside`) of what each node sees at one path;
        the node's own folder first, since the others are mounted onto its subfolders."""
        host = self.home / "host"
        return [
            (self.node_dir, ""),
            (self.cdi_dir, "cdi"),
            (host / "driver", "driver"),
            (host / "state", "plugin-state"),
        ]

    def seen_inside(self, path: Path) -> Path:
        """Where the node's own processes see `path` (a file of `node_dir`, `cdi_dir` or the host)."""
        if self.inside is None:
            return path
        for real, name in self.shared_folders:
            if path == real or real in path.parents:
                return self.inside / name / path.relative_to(real)
        return path

    @property
    def network(self) -> runtime_config.NodeNetwork:
        """Containerd nodes: the node's pod bridge and subnet."""
        return runtime_config.NodeNetwork(self.index)

    @property
    def containerd(self) -> runtime_config.ContainerdPaths:
        """Containerd nodes: containerd's folders, as the host sees them."""
        return runtime_config.ContainerdPaths(self.node_dir / "containerd")

    @property
    def name(self) -> str:
        """The Node's name (`--hostname-override`)."""
        return self.node.name

    @property
    def root_dir(self) -> Path:
        """The kubelet's `--root-dir` (as the host sees it)."""
        return self.node_dir / "kubelet" if self.inside is not None else self.short / "root"

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
        """The CRI socket of this node's runtime (as the host sees it)."""
        return self.containerd.socket if self.inside is not None else self.short / "cri.sock"

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

    def pid(self, process: str = "kubelet") -> int:
        """The PID of one of the node's processes (past nsenter, which forks to join a PID namespace)."""
        pid = self.processes[process].pid
        if self.inside is not None and process != "namespace":
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            pid = int(children[0]) if children else pid
        return pid

    def rss_bytes(self, process: str = "kubelet") -> int:
        """Resident memory of one of the node's processes ("kubelet", "cri-double" or "containerd")."""
        return rss_of(self.pid(process))


def rss_of(pid: int) -> int:
    """Resident memory of process `pid`, in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
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
        containers = self.options.runtime == CONTAINERD
        reason = can_run_containers(self.cluster.tools) if containers else can_run_kubelet(self.cluster.tools)
        if reason is not None:
            raise ClusterError(f"cannot run kubelets: {reason}")
        if containers and self.options.network is None:
            raise ClusterError("containerd nodes need the bed's network namespace (KubeletOptions.network)")
        if containers:
            # What an interrupted run left: its processes died with it, its empty cgroups did not.
            remove_container_cgroups(wait=0)
        self._short_root = Path(tempfile.mkdtemp(prefix="cdk-"))
        try:
            for index, node in enumerate(self.nodes):
                home = self.cluster.workdir / "kubelets" / node.name
                kubelet = KubeletNode(node, index, home, self._short_root / str(index))
                if containers:
                    kubelet.inside = self.inside
                self.running.append(kubelet)
                self._start_node(kubelet)
                STARTED[kubelet.runtime] = STARTED.get(kubelet.runtime, 0) + 1
            for kubelet in self.running:
                self._wait_healthy(kubelet)
        except BaseException:
            self.stop()
            raise

    @property
    def inside(self) -> Path:
        """Where each containerd node sees its own node files (one path for all nodes)."""
        assert self._short_root is not None
        return self._short_root / "node"

    def stop(self) -> None:
        """Stop each node's kubelet, then its runtime (which stops its host processes), then its
        namespace (with a real runtime: every container of the node); remove the short folders."""
        for kubelet in reversed(self.running):
            for name in ("kubelet", "cri-double", "containerd", "namespace"):
                process = kubelet.processes.pop(name, None)
                if process is not None:
                    # A containerd node's holder (`unshare --fork`) ignores SIGTERM; SIGKILL ends it and,
                    # through --kill-child, PID 1 of the node's namespace and so every process of the node.
                    holder = name == "namespace" and kubelet.inside is not None
                    _stop(process, signal.SIGKILL if holder else signal.SIGTERM)
        containers = any(k.inside is not None for k in self.running)
        self.running.clear()
        if containers:
            remove_container_cgroups()
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
        if kubelet.inside is not None:
            self._start_containerd_node(kubelet)
            return
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

    def _start_containerd_node(self, kubelet: KubeletNode) -> None:
        network = self.options.network
        assert network is not None
        assert kubelet.inside is not None
        for folder in (
            kubelet.home / "certs",
            kubelet.home / "pod-logs",
            kubelet.short / "scratch",
            kubelet.containerd.cni_conf_dir,
            kubelet.inside,
            kubelet.node_dir / "kubelet",
            *(real for real, _ in kubelet.shared_folders),
            *(kubelet.node_dir / name for _, name in kubelet.shared_folders if name),
        ):
            folder.mkdir(parents=True, exist_ok=True)
        network.add_bridge(kubelet.network.bridge, f"{kubelet.network.gateway}/24")
        binds = [(real, kubelet.inside / name) for real, name in kubelet.shared_folders]
        ready = kubelet.short / "namespace-ready"
        script = kubelet_config.namespace_script(
            kubelet.short / "scratch",
            ready,
            first=runtime_config.node_script(binds, kubelet.short / "scratch"),
        )
        self._spawn(
            kubelet,
            "namespace",
            network.wrap(
                [
                    "unshare",
                    "--mount",
                    "--pid",
                    "--fork",
                    # Whoever stops the holder stops the node: PID 1 of its namespace goes with it.
                    "--kill-child",
                    "--mount-proc",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    script,
                ]
            ),
        )
        self._wait(kubelet, "namespace", ready.exists, "node namespaces")
        holder = kubelet.processes["namespace"].pid
        children = Path(f"/proc/{holder}/task/{holder}/children").read_text().split()
        kubelet.init_pid = int(children[0])
        inner = kubelet.seen_inside
        paths = runtime_config.ContainerdPaths(inner(kubelet.containerd.base))
        tools = self.cluster.tools
        (kubelet.containerd.cni_conf_dir / "10-cdbed.conflist").write_text(
            runtime_config.cni_conflist(kubelet.network, paths.cni_data_dir)
        )
        config = kubelet.home / "containerd.toml"
        config.write_text(
            runtime_config.containerd_config(
                paths, tools.bin("runc"), tools.directory / "cni" / "bin", [inner(kubelet.cdi_dir)]
            )
        )
        self._spawn(kubelet, "containerd", [str(tools.bin("containerd")), f"--config={config}"], joined=True)
        self._wait(kubelet, "containerd", kubelet.runtime_socket.exists, "containerd socket")
        for archive in (tools.directory / PAUSE_ARCHIVE, *self.options.images):
            import_image(tools, kubelet.runtime_socket, archive)
        kubelet.port, kubelet.healthz_port = free_port(), free_port()
        config_yaml = kubelet_config.kubelet_configuration(
            address="0.0.0.0",
            port=kubelet.port,
            healthz_port=kubelet.healthz_port,
            runtime_socket=paths.socket,
            pod_logs_dir=kubelet.home / "pod-logs",
            volume_plugin_dir=inner(kubelet.root_dir) / "volume-plugins",
            client_ca=self.cluster.workdir / "pki" / "ca.crt",
        )
        (kubelet.home / "config.yaml").write_text(json.dumps(config_yaml, indent=2))
        self.cluster.kubeconfig_for(f"system:node:{kubelet.name}", ("system:nodes",), inside=True)
        self._spawn_kubelet(kubelet)

    def _spawn_kubelet(self, kubelet: KubeletNode) -> None:
        containers = kubelet.inside is not None
        args = [
            str(self.cluster.tools.bin("kubelet")),
            f"--config={kubelet.home / 'config.yaml'}",
            f"--kubeconfig={self.cluster.workdir / f'kubeconfig-system:node:{kubelet.name}'}",
            f"--root-dir={kubelet.seen_inside(kubelet.root_dir)}",
            f"--cert-dir={kubelet.home / 'certs'}",
            f"--hostname-override={kubelet.name}",
            # The kubelet refuses a loopback node IP as its address (it logs that on each status
            # update) and then reports none, rather than a host address outside loopback. A real
            # runtime's node has its bridge's address, inside the bed's network namespace.
            f"--node-ip={kubelet.network.gateway if containers else '127.0.0.1'}",
            f"--node-labels={kubelet_config.labels_flag(kubelet_config.node_labels(kubelet.node))}",
            f"--v={self.options.verbosity}",
        ]
        if self.options.feature_gates:
            args.append(f"--feature-gates={self.options.feature_gates}")
        self._spawn(kubelet, "kubelet", args, joined=True)

    def _tie(self, kubelet: KubeletNode, name: str) -> Callable[[], None] | None:
        if not self.options.tie_to_parent:
            return None
        return killed_with_parent if name == "namespace" and kubelet.inside is not None else die_with_parent

    def _spawn(self, kubelet: KubeletNode, name: str, args: Sequence[str], joined: bool = False) -> None:
        # An empty working directory of its own: nsenter would otherwise start the process in "/",
        # where a path bug (a relative glob, a relative remove) would hit the host.
        cwd = kubelet.short / "cwd"
        cwd.mkdir(exist_ok=True)
        if joined and kubelet.inside is not None:
            # nsenter forks to join the PID namespace; the program runs as its child.
            args = [
                "nsenter",
                f"--target={kubelet.init_pid}",
                "--mount",
                "--net",
                "--pid",
                f"--wd={cwd}",
                "--",
                *args,
            ]
        elif joined:
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
                preexec_fn=self._tie(kubelet, name),
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
        network = self.options.network
        if kubelet.inside is not None and network is not None:
            # A containerd node's kubelet listens in the bed's network namespace.
            self._wait(kubelet, "kubelet", lambda: network.call(lambda: _http_ok(url)), "healthy kubelet")
            return
        self._wait(kubelet, "kubelet", lambda: _http_ok(url), "healthy kubelet")


@contextlib.contextmanager
def kubelet_nodes(
    cluster: LocalCluster, nodes: Sequence[FakeNode], options: KubeletOptions | None = None
) -> Iterator[KubeletNodes]:
    """Run real kubelet nodes for `nodes` (names, labels) beside `cluster` for the duration of the block."""
    with KubeletNodes(cluster, nodes, options or KubeletOptions()) as running:
        yield running


def ctr(tools: Tools, socket: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`ctr ARGS` against the containerd at `socket`, in the namespace the kubelet uses."""
    result = subprocess.run(
        [str(tools.bin("ctr")), f"--address={socket}", "--namespace=k8s.io", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        raise ClusterError(f"ctr {' '.join(args)} against {socket} failed: {result.stderr.strip()}")
    return result


def import_image(tools: Tools, socket: Path, archive: Path) -> None:
    """Import an OCI archive into the containerd at `socket`."""
    ctr(tools, socket, "images", "import", str(archive))


def remove_container_cgroups(
    root: Path = _CGROUP_ROOT, parent: str = _CGROUP_PARENT, wait: float = 10.0
) -> None:
    """Remove the cgroups runc made for containers, deepest first, in every hierarchy; a cgroup whose
    processes are still being ended is tried again for up to `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        left = []
        for hierarchy in (root, *root.iterdir()) if root.exists() else ():
            top = hierarchy / parent
            if not top.is_dir():
                continue
            folders = sorted(
                (p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
            )
            for folder in [*folders, top]:
                try:
                    folder.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    left.append(folder)
        if not left or time.monotonic() > deadline:
            return
        time.sleep(0.2)


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = STOP_GRACE) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
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
