"""The ComputeDomain kubelet plugin for one real kubelet node, run as a host process.

It runs exactly as its container would (`python -m computedomain.plugin`, configured by environment),
pointed at that node's kubelet root (where it registers), at the CDI spec folder the node's runtime
double resolves against, and at a fake of the node's driver installation (`NodeHost`). It
authenticates with a token bound to a pod of the chart's plugin DaemonSet on that node, so the chart's
RBAC and admission policy are all it may use.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cdtestbed.cluster import ClusterError, die_with_parent, free_port
from cdtestbed.processes import terminate
from cdtestbed.tools import repo_root

FAKE_IMEX_DIR = repo_root() / "tests" / "fakes" / "imex"
FAKE_NVML_BUILD = repo_root() / "tests" / "fakenvml" / "build.py"
FAKE_NVML_CACHE = repo_root() / ".cache" / "fakenvml" / "current"
IMEX_BINARIES = ("nvidia-imex", "nvidia-imex-ctl")
PROC_DEVICES = """Character devices:
  1 mem
195 nvidia
234 nvidia-caps-imex-channels
235 nvidia-caps
510 nvidia-uvm

Block devices:
  7 loop
"""
IMEX_CHANNELS_MAJOR = 234
CAPS_MAJOR = 235
FABRIC_IMEX_MGMT_MINOR = 7
# What the fake NVML library reports (nvmlSystemGetDriverVersion), hence the suffix of its file name.
DRIVER_VERSION = "580.82.07"
GPUS = 4
# Path under the driver root -> (major, minor, mode), as a GB200 tray's driver makes them.
DEVICE_NODES: dict[str, tuple[int, int, int]] = {
    **{f"dev/nvidia{n}": (195, n, 0o666) for n in range(GPUS)},
    "dev/nvidiactl": (195, 255, 0o666),
    "dev/nvidia-uvm": (510, 0, 0o666),
    "dev/nvidia-uvm-tools": (510, 1, 0o666),
    f"dev/nvidia-caps/nvidia-cap{FABRIC_IMEX_MGMT_MINOR}": (CAPS_MAJOR, FABRIC_IMEX_MGMT_MINOR, 0o400),
    "dev/nvidia-caps-imex-channels/channel0": (IMEX_CHANNELS_MAJOR, 0, 0o666),
}
NVIDIA_SMI = """#!/bin/sh
# Test bed stand-in: there is no GPU to manage here.
echo "nvidia-smi: no NVIDIA GPU on this test bed" >&2
exit 9
"""
_CLUSTER_ENV = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")


def fake_nvml_library() -> Path | None:
    """The fake `libnvidia-ml.so.1` of the tests (built on first use); None without a C compiler."""
    # Loaded from its file: the test bed is a source root of its own, without the tests on its path.
    spec = importlib.util.spec_from_file_location("cdtestbed_fakenvml_build", FAKE_NVML_BUILD)
    if spec is None or spec.loader is None:
        raise ClusterError(f"cannot load {FAKE_NVML_BUILD}")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    if build.compiler() is None:
        return None
    return Path(build.build_fake_nvml(FAKE_NVML_CACHE))


def _char_device(path: Path, major: int, minor: int, mode: int) -> None:
    # Kept when it is already that node, so that a runtime holding it open is not disturbed.
    try:
        info = path.lstat()
    except FileNotFoundError:
        info = None
    if info is None or not stat.S_ISCHR(info.st_mode) or info.st_rdev != os.makedev(major, minor):
        if info is not None:
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mknod(path, stat.S_IFCHR | mode, os.makedev(major, minor))
    os.chmod(path, mode)


def _write(path: Path, content: bytes, mode: int = 0o755) -> None:
    # Replaced by a rename, and only when it changed: a process may be running it.
    if path.is_symlink() or not path.exists() or path.read_bytes() != content:
        scratch = path.with_name(f".{path.name}.tmp")
        scratch.write_bytes(content)
        os.replace(scratch, path)
    path.chmod(mode)


def _copy(source: Path, target: Path, mode: int = 0o755) -> None:
    _write(target, source.read_bytes(), mode)


def _link(link: Path, target: Path | str) -> None:
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    link.unlink(missing_ok=True)
    link.symlink_to(target)


@dataclass(frozen=True)
class NodeHost:
    """The host side of one kubelet node as the plugin sees it, under `root`.

    The driver root holds what the plugin reads of a driver installation (`create`): the
    `fabric-imex-mgmt` capability file, the NVML library under its versioned name
    (`usr/lib64/libnvidia-ml.so.<version>` with its `libnvidia-ml.so.1` link), `nvidia-smi` (a stub),
    `nvidia-imex` and `nvidia-imex-ctl` (copies of the IMEX test doubles) and, where the test bed runs
    as root, the driver's character device nodes under `dev/` (GPUs, control, UVM, the capability and
    channel 0). Making device nodes needs root: otherwise `dev/` stays empty, and the daemon claims'
    CDI specs have only the capability device.
    """

    root: Path

    @property
    def proc_devices(self) -> Path:
        """The node's `/proc/devices`."""
        return self.root / "proc" / "devices"

    @property
    def boot_id(self) -> Path:
        """The node's boot ID file."""
        return self.root / "boot_id"

    @property
    def driver_root(self) -> Path:
        """The NVIDIA driver installation (IMEX binaries, capability files)."""
        return self.root / "driver"

    @property
    def state(self) -> Path:
        """The plugin's checkpoint and per-domain IMEX config folders."""
        return self.root / "state"

    @property
    def nvml_library(self) -> Path:
        """The NVML library under its versioned name (its `libnvidia-ml.so.1` link lies beside it)."""
        return self.driver_root / "usr" / "lib64" / f"libnvidia-ml.so.{DRIVER_VERSION}"

    def create(self) -> None:
        """Write the node's driver files (idempotent; device nodes only when running as root)."""
        self.proc_devices.parent.mkdir(parents=True, exist_ok=True)
        self.proc_devices.write_text(PROC_DEVICES)
        if not self.boot_id.exists():
            self.boot_id.write_text("testbed-boot\n")
        caps = self.driver_root / "proc" / "driver" / "nvidia" / "capabilities"
        caps.mkdir(parents=True, exist_ok=True)
        (caps / "fabric-imex-mgmt").write_text(
            f"DeviceFileMinor: {FABRIC_IMEX_MGMT_MINOR}\nDeviceFileMode: 256\n"
        )
        binaries = self.driver_root / "usr" / "bin"
        binaries.mkdir(parents=True, exist_ok=True)
        # Copies, not links: a driver root must work wherever it is mounted (a container sees no
        # path of this checkout), and the doubles are self-contained scripts.
        for name in IMEX_BINARIES:
            _copy(FAKE_IMEX_DIR / name, binaries / name)
        _write(binaries / "nvidia-smi", NVIDIA_SMI.encode())
        self._create_nvml()
        if os.geteuid() == 0:
            for path, (major, minor, mode) in DEVICE_NODES.items():
                _char_device(self.driver_root / path, major, minor, mode)
        self.state.mkdir(parents=True, exist_ok=True)

    def _create_nvml(self) -> None:
        library = self.nvml_library
        library.parent.mkdir(parents=True, exist_ok=True)
        built = fake_nvml_library()
        if built is None:
            # Without a compiler there is no library to load; the plugin reads only its name.
            library.touch()
        else:
            _copy(built, library, mode=0o644)
        _link(library.with_name("libnvidia-ml.so.1"), library.name)


@dataclass
class PluginProcess:
    """`computedomain-kubelet-plugin` for one node; `start()`, `kill()`, `stop()` as often as needed."""

    node: str
    namespace: str
    kubelet_root: Path
    cdi_dir: Path
    host: NodeHost
    kubeconfig: Path
    log: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        """The plugin's settings (what the chart's DaemonSet sets, pointed at this node's folders)."""
        env = {key: value for key, value in os.environ.items() if key not in _CLUSTER_ENV}
        env.update(
            {
                "PYTHONPATH": str(repo_root() / "operator"),
                "PYTHONUNBUFFERED": "1",
                "KUBECONFIG": str(self.kubeconfig),
                "NODE_NAME": self.node,
                "NAMESPACE": self.namespace,
                "KUBELET_ROOT_DIR": str(self.kubelet_root),
                "CDI_ROOT": str(self.cdi_dir),
                "DRIVER_ROOT": str(self.host.driver_root),
                "PROC_DEVICES": str(self.host.proc_devices),
                "BOOT_ID_FILE": str(self.host.boot_id),
                "STATE_DIR": str(self.host.state),
                "HTTP_PORT": str(self.port),
                # No NVML on this machine: the devices are reported healthy.
                "HEALTH_SOURCE": "static",
                "EVENT_INTERVAL_SECONDS": "2",
                **self.extra_env,
            }
        )
        return env

    def start(self) -> None:
        """Start the process (its output is appended to `log`)."""
        self.port = self.port or free_port()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "computedomain.plugin"],
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    @property
    def pid(self) -> int | None:
        """The running process's pid; None once it exited."""
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def get(self, path: str) -> tuple[int, str]:
        """(status, body) of a GET on the plugin's HTTP server; (0, error) when unreachable."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read().decode()
        except (urllib.error.URLError, OSError) as error:
            return 0, str(error)

    def metric(self, name: str) -> float:
        """Sum of the samples of one of the plugin's Prometheus metrics (0 when absent)."""
        total = 0.0
        for line in self.get("/metrics")[1].splitlines():
            head, _, value = line.rpartition(" ")
            if not line.startswith("#") and (head == name or head.startswith(name + "{")):
                total += float(value)
        return total

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until /readyz answers 200: caches loaded, sockets listening, slice published."""
        deadline = time.monotonic() + timeout
        while self.get("/readyz")[0] != 200:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise ClusterError(f"kubelet plugin of {self.node} exited with {code}; see {self.log}")
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"kubelet plugin of {self.node} not ready after {timeout:.0f}s; see {self.log}"
                )
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: the plugin dies mid-work, as on a node's OOM kill."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (SIGKILL of its process group after `timeout`); the exit code."""
        return terminate(self.process, timeout, self.kill)

    def rss_bytes(self) -> int:
        """Resident memory of the running plugin."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(kib) * 1024
