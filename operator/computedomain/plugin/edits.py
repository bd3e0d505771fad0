"""The CDI container edits of a channel device and of an IMEX daemon device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from computedomain.plugin import devices
from computedomain.plugin.cdi import DAEMON_CONFIG_DIR, Edits, Mount
from computedomain.plugin.view import DomainRef

IMEX_BINARIES = ("nvidia-imex", "nvidia-imex-ctl")
# Where a driver installation keeps its tools, relative to the driver root; the first hit wins.
_BINARY_DIRS = ("usr/bin", "usr/sbin", "bin", "sbin", "usr/local/bin")
CONTAINER_BINARY_DIR = "/usr/bin"


@dataclass(frozen=True)
class HostPaths:
    """Where the plugin finds the node's driver pieces, and where the host sees them."""

    proc_devices: Path
    driver_root: Path
    host_driver_root: Path
    domains_dir: Path

    def domain_dir(self, domain_uid: str) -> Path:
        """The IMEX config directory of one domain on this node."""
        return self.domains_dir / domain_uid

    def imex_binary_mounts(self) -> list[Mount]:
        """Read-only mounts of the host's `nvidia-imex` and `nvidia-imex-ctl`, for those that exist."""
        mounts = []
        for binary in IMEX_BINARIES:
            for directory in _BINARY_DIRS:
                if (self.driver_root / directory / binary).is_file():
                    host = self.host_driver_root / directory / binary
                    mounts.append(Mount(str(host), f"{CONTAINER_BINARY_DIR}/{binary}"))
                    break
        return mounts


def channel_edits(paths: HostPaths, clique_id: str, allocation_mode: str | None) -> Edits:
    """Channel 0 (or all 2048 with allocationMode All); nothing on a node without an NVLink clique."""
    if not clique_id:
        return Edits()
    major = devices.read_major(paths.proc_devices, devices.IMEX_CHANNELS_DEVICE)
    return Edits(device_nodes=devices.channel_devices(major, allocation_mode == "All"))


def daemon_edits(paths: HostPaths, domain: DomainRef, clique_id: str) -> Edits:
    """What the IMEX daemon container needs: its domain and clique, its config dir, device and tools.

    The capability device and the IMEX tools only matter where there is an NVLink fabric to run IMEX
    on; without a clique the daemon only reports itself.
    """
    env = {
        "CLIQUE_ID": clique_id,
        "COMPUTE_DOMAIN_UUID": domain.uid,
        "COMPUTE_DOMAIN_NAME": domain.name,
        "COMPUTE_DOMAIN_NAMESPACE": domain.namespace,
        "IMEX_CONFIG_DIR": DAEMON_CONFIG_DIR,
    }
    config_dir = Mount(
        str(paths.domain_dir(domain.uid)), DAEMON_CONFIG_DIR, ("rw", "nosuid", "nodev", "bind")
    )
    if not clique_id:
        return Edits(env=env, mounts=(config_dir,))
    capability = devices.fabric_imex_mgmt_device(paths.proc_devices, paths.driver_root)
    return Edits(env=env, device_nodes=(capability,), mounts=(config_dir, *paths.imex_binary_mounts()))
