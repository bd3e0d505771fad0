"""Character devices of the NVIDIA driver: majors from /proc/devices, capability minors from procfs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

IMEX_CHANNELS_DEVICE = "nvidia-caps-imex-channels"
CAPS_DEVICE = "nvidia-caps"
CHANNEL_DIR = "/dev/nvidia-caps-imex-channels"
CAPS_DIR = "/dev/nvidia-caps"
CHANNEL_COUNT = 2048
FABRIC_IMEX_MGMT = "proc/driver/nvidia/capabilities/fabric-imex-mgmt"

_MINOR = re.compile(r"^\s*DeviceFileMinor:\s*(\d+)\s*$", re.MULTILINE)
_MODE = re.compile(r"^\s*DeviceFileMode:\s*(\d+)\s*$", re.MULTILINE)
# The driver makes capability nodes readable by root alone unless told otherwise.
DEFAULT_CAPABILITY_MODE = 0o400


class DeviceError(RuntimeError):
    """A device the claim needs is not known to this node's kernel or driver."""


@dataclass(frozen=True)
class CharDevice:
    """A character device node as CDI describes it.

    `host_path` names an existing node on the host (CDI 0.5.0); '' when the runtime makes the node
    from its numbers alone.
    """

    path: str
    major: int
    minor: int
    file_mode: int = 0o666
    host_path: str = ""


def parse_majors(text: str) -> dict[str, int]:
    """The character devices of a /proc/devices text, name -> major (block devices are skipped)."""
    majors: dict[str, int] = {}
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.endswith(":"):
            section = stripped[:-1].lower()
            continue
        parts = stripped.split(None, 1)
        if section == "character devices" and len(parts) == 2 and parts[0].isdigit():
            majors.setdefault(parts[1].strip(), int(parts[0]))
    return majors


def read_major(proc_devices: Path, name: str) -> int:
    """The major of character device `name`; DeviceError naming the file when it is not listed."""
    try:
        text = proc_devices.read_text()
    except OSError as error:
        raise DeviceError(f"cannot read {proc_devices}: {error.strerror or error}") from None
    major = parse_majors(text).get(name)
    if major is None:
        raise DeviceError(f"{proc_devices} lists no character device {name!r}: is the NVIDIA driver loaded?")
    return major


def parse_capability_minor(text: str) -> int | None:
    """The `DeviceFileMinor` of an NVIDIA capability file, or None when it has none."""
    match = _MINOR.search(text)
    return int(match.group(1)) if match else None


def parse_capability_mode(text: str) -> int:
    """The `DeviceFileMode` of an NVIDIA capability file (decimal there), or the driver's default."""
    match = _MODE.search(text)
    return int(match.group(1)) & 0o777 if match else DEFAULT_CAPABILITY_MODE


def read_capability(path: Path) -> tuple[int, int]:
    """The minor and file mode of the capability device described by `path`."""
    try:
        text = path.read_text()
    except OSError as error:
        raise DeviceError(f"cannot read {path}: {error.strerror or error}") from None
    minor = parse_capability_minor(text)
    if minor is None:
        raise DeviceError(f"{path} has no DeviceFileMinor line")
    return minor, parse_capability_mode(text)


def channel_devices(major: int, all_channels: bool) -> list[CharDevice]:
    """Channel 0, or every channel (0 to 2047) when the domain's allocation mode is All."""
    count = CHANNEL_COUNT if all_channels else 1
    return [channel_device(major, n) for n in range(count)]


def channel_device(major: int, channel: int) -> CharDevice:
    """IMEX channel `channel` alone."""
    return CharDevice(f"{CHANNEL_DIR}/channel{channel}", major, channel)


def fabric_imex_mgmt_device(proc_devices: Path, driver_root: Path) -> CharDevice:
    """The `fabric-imex-mgmt` capability device the IMEX daemon needs, with the mode the driver gives it
    (0400: only root opens it), as NVIDIA's plugin does."""
    major = read_major(proc_devices, CAPS_DEVICE)
    minor, mode = read_capability(driver_root / FABRIC_IMEX_MGMT)
    return CharDevice(f"{CAPS_DIR}/nvidia-cap{minor}", major, minor, file_mode=mode)
