"""What a real container runtime of the test bed is told: containerd's configuration, the node's CNI
network and the script that isolates the node. Pure rendering, no processes.

Every path containerd, runc and the CNI plugins use lies under the node's own folder: the root and
state, the sockets, the shims' sockets, the network namespaces, the CNI cache. Paths hard-coded in
the kubelet or libcni (`/var/lib/kubelet/device-plugins`, `/var/lib/cni`) are kept off the host by an
overlay on /var/lib inside the node's private mount namespace.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAUSE_IMAGE = "localhost/pause:3.10"
CNI_NETWORK = "cdbed"


@dataclass(frozen=True)
class NodeNetwork:
    """One node's pod network: a bridge of its own with a /24 of 10.244.0.0/16."""

    index: int

    @property
    def bridge(self) -> str:
        """The bridge's interface name."""
        return f"cdbr{self.index}"

    @property
    def subnet(self) -> str:
        """The node's pod subnet."""
        return f"10.244.{self.index}.0/24"

    @property
    def gateway(self) -> str:
        """The bridge's address: the pods' gateway and the node's InternalIP."""
        return f"10.244.{self.index}.1"


@dataclass(frozen=True)
class ContainerdPaths:
    """Where one node's containerd keeps things, as seen inside the node's mount namespace."""

    base: Path

    @property
    def root(self) -> Path:
        """Content, snapshots, metadata."""
        return self.base / "root"

    @property
    def state(self) -> Path:
        """Runtime state (tasks, fifos, network namespaces)."""
        return self.base / "state"

    @property
    def socket(self) -> Path:
        """The gRPC (and CRI) socket."""
        return self.base / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        """The node's CNI network configuration."""
        return self.base / "net.d"

    @property
    def cni_data_dir(self) -> Path:
        """host-local's address allocations."""
        return self.base / "ipam"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _toml(tables: dict[str, dict[str, Any]], top: dict[str, Any]) -> str:
    lines = [f"{key} = {_toml_value(value)}" for key, value in top.items()]
    for table, values in tables.items():
        lines += ["", f"[{table}]"]
        lines += [f"  {key} = {_toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def containerd_config(paths: ContainerdPaths, runc: Path, cni_bin: Path, cdi_dirs: Sequence[Path]) -> str:
    """containerd 2.x configuration (version 3) for one node."""
    cri_runtime = "plugins.'io.containerd.cri.v1.runtime'"
    runc_table = f"{cri_runtime}.containerd.runtimes.runc"
    tables: dict[str, dict[str, Any]] = {
        "grpc": {"address": str(paths.socket)},
        "ttrpc": {"address": f"{paths.socket}.ttrpc"},
        "plugins.'io.containerd.internal.v1.opt'": {"path": str(paths.base / "opt")},
        "plugins.'io.containerd.image-verifier.v1.bindir'": {"bin_dir": str(paths.base / "image-verifier")},
        # Otherwise shims put their sockets in /run/containerd/s on the host.
        "plugins.'io.containerd.shim.v1.manager'": {"socket_dir": str(paths.state / "s")},
        # NRI would listen in /var/run/nri on the host; nothing here uses it.
        "plugins.'io.containerd.nri.v1.nri'": {"disable": True},
        cri_runtime: {
            "cdi_spec_dirs": [str(d) for d in cdi_dirs],
            # Root here lacks CAP_SYS_RESOURCE: lowering a sandbox's OOM score would fail every pod.
            "restrict_oom_score_adj": True,
            "netns_mounts_under_state_dir": True,
        },
        f"{cri_runtime}.cni": {
            "bin_dirs": [str(cni_bin)],
            "conf_dir": str(paths.cni_conf_dir),
            "max_conf_num": 1,
        },
        runc_table: {"runtime_type": "io.containerd.runc.v2"},
        f"{runc_table}.options": {
            "BinaryName": str(runc),
            "Root": str(paths.state / "runc"),
            "SystemdCgroup": False,
        },
        # Nothing is pulled: the pause image is imported like every other one.
        "plugins.'io.containerd.cri.v1.images'.pinned_images": {"sandbox": PAUSE_IMAGE},
    }
    top = {"version": 3, "root": str(paths.root), "state": str(paths.state), "temp": str(paths.state / "tmp")}
    return _toml(tables, top)


def cni_conflist(network: NodeNetwork, data_dir: Path) -> str:
    """The node's CNI network: its own bridge, its own subnet, no masquerading (nothing leaves)."""
    config = {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": network.bridge,
                "isGateway": True,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": network.subnet, "gateway": network.gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(data_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(config, indent=2)


def node_script(
    binds: Sequence[tuple[Path, Path]], scratch: Path, overlay_dirs: Sequence[str] = ("/var/lib",)
) -> str:
    """The extra mounts of a real-runtime node, run first in its private mount namespace.

    Each `(source, target)` of `binds` is bind-mounted, so that every node sees its own files at the
    same paths (the chart's hostPath values are one string for all nodes); each of `overlay_dirs` gets
    an overlay whose writes land in `scratch`. Then every mount is made shared inside the namespace,
    because the runtime refuses HostToContainer propagation from a private mount.
    """
    lines = []
    for source, target in binds:
        lines.append(f"mount --bind {shlex.quote(str(source))} {shlex.quote(str(target))}")
    for directory in overlay_dirs:
        name = directory.strip("/").replace("/", ".")
        upper, work = scratch / f"{name}.upper", scratch / f"{name}.work"
        lines.append(f"mkdir -p {shlex.quote(str(upper))} {shlex.quote(str(work))}")
        lines.append(
            f"mount -t overlay overlay -o lowerdir={directory},upperdir={upper},workdir={work} {directory}"
        )
    lines.append("mount --make-rshared /")
    return "\n".join(lines)
