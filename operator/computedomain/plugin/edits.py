"""The CDI container edits of a channel device and of an IMEX daemon device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from computedomain.plugin import devices, management
from computedomain.plugin.cdi import DAEMON_CONFIG_DIR, Edits, Mount
from computedomain.plugin.devices import DeviceError
from computedomain.plugin.management import ManagementSet
from computedomain.plugin.view import DomainRef

IMEX_BINARIES = ("nvidia-imex", "nvidia-imex-ctl")


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

    def management_set(self) -> ManagementSet:
        """The driver's management set as it is now under the driver root."""
        return management.read_management_set(self.driver_root, self.host_driver_root)


def require_imex_binaries(paths: HostPaths, found: ManagementSet) -> None:
    """DeviceError naming every path searched when `nvidia-imex` or `nvidia-imex-ctl` is missing.

    Without them the daemon container starts and then fails over and over; an error on the claim
    tells the node's operator where the plugin looked instead.
    """
    missing = [binary for binary in IMEX_BINARIES if binary not in found.binaries]
    if not missing:
        return
    candidates = {
        binary: [paths.driver_root / p for p in management.binary_candidates(binary)] for binary in missing
    }
    searched = "; ".join(f"{b} in " + ", ".join(map(str, where)) for b, where in candidates.items())
    # A file that is there but not executable would otherwise look like a wrong path.
    unusable = [str(p) for where in candidates.values() for p in where if p.exists()]
    note = f" ({', '.join(unusable)} present but not an executable file)" if unusable else ""
    raise DeviceError(
        f"{' and '.join(missing)} not found under the driver root {paths.driver_root} (the host's "
        f"{paths.host_driver_root}): looked for {searched}{note}. Install the NVIDIA IMEX package of "
        "the node's driver, or point DRIVER_ROOT and HOST_DRIVER_ROOT at the driver installation"
    )


def channel_edits(paths: HostPaths, clique_id: str, allocation_mode: str | None) -> Edits:
    """Channel 0 (or all 2048 with allocationMode All); nothing on a node without an NVLink clique."""
    if not clique_id:
        return Edits()
    major = devices.read_major(paths.proc_devices, devices.IMEX_CHANNELS_DEVICE)
    return Edits(device_nodes=devices.channel_devices(major, allocation_mode == "All"))


def domain_channel_edits(paths: HostPaths, channel: int) -> Edits:
    """Clique mode: exactly the domain's own channel, so that the container sees no other."""
    major = devices.read_major(paths.proc_devices, devices.IMEX_CHANNELS_DEVICE)
    return Edits(device_nodes=(devices.channel_device(major, channel),))


def daemon_edits(paths: HostPaths, domain: DomainRef, clique_id: str, *, identity: bool = True) -> Edits:
    """What the IMEX daemon container needs: its domain and clique, config dir, device and driver.

    Without `identity` (a clique daemon of clique mode, which serves no one domain) the domain's UID,
    name and namespace are left out; `domain.uid` still names its config folder.

    Where there is an NVLink fabric to run IMEX on, the container also gets the `fabric-imex-mgmt`
    capability device and the driver's management set (see `computedomain.plugin.management`: device
    nodes, libraries, `nvidia-smi`, `nvidia-imex`, `nvidia-imex-ctl`), as NVIDIA's plugin gives it; the
    claim fails when the IMEX tools are missing. Without a clique the daemon only reports itself.
    """
    env = {"CLIQUE_ID": clique_id}
    if identity:
        env.update(
            COMPUTE_DOMAIN_UUID=domain.uid,
            COMPUTE_DOMAIN_NAME=domain.name,
            COMPUTE_DOMAIN_NAMESPACE=domain.namespace,
        )
    env["IMEX_CONFIG_DIR"] = DAEMON_CONFIG_DIR
    config_dir = Mount(
        str(paths.domain_dir(domain.uid)), DAEMON_CONFIG_DIR, ("rw", "nosuid", "nodev", "bind")
    )
    if not clique_id:
        return Edits(env=env, mounts=(config_dir,))
    capability = devices.fabric_imex_mgmt_device(paths.proc_devices, paths.driver_root)
    driver = paths.management_set()
    require_imex_binaries(paths, driver)
    # The capability node comes from procfs, which the driver keeps true; the node of the same path
    # under dev/ (if any) is left out, as a container gets one node per path.
    nodes = (capability, *(n for n in driver.device_nodes if n.path != capability.path))
    return Edits(env={**driver.env, **env}, device_nodes=nodes, mounts=(config_dir, *driver.mounts))
