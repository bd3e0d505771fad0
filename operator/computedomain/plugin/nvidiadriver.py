"""The NVIDIA driver version check the kubelet plugin makes before it starts.

The IMEX daemons of this operator always name their peers by DNS names (`compute-domain-daemon-NNNN`
in `nodes.cfg`), which `nvidia-imex` understands from driver 570.158.01 on; below it a domain would
never form. NVIDIA's plugin refuses to start on such a driver when its `IMEXDaemonsWithDNSNames` gate
is on (its default), and so does this one, with a message that says what to do.

The version comes from what the driver root shows first: the running kernel module's own line in
`proc/driver/nvidia/version` below it (the node's /proc where the driver root is the host's root), else
the name of the NVML library the driver installed there (`libnvidia-ml.so.<version>`, which its
`libnvidia-ml.so.1` links to). Only where neither tells does the plugin ask NVML
(`nvmlSystemGetDriverVersion`): its bindings and library would stay in the process for good. A node
where none says anything starts as before, with a warning: a plugin that cannot judge the driver must
not keep a node from serving.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from computedomain.api import names
from computedomain.nvml.gpus import NodeGpus, NvmlStatus

log = logging.getLogger(__name__)

MINIMUM_DRIVER_VERSION = names.MINIMUM_DRIVER_VERSION
NVML_SOURCE = "NVML (nvmlSystemGetDriverVersion)"
# The kernel module's version file, relative to the driver root; its first line is
# "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.158.01  <build date>" (or "... Open Kernel
# Module for x86_64  570.158.01  Release Build ...").
PROC_VERSION = "proc/driver/nvidia/version"
_PROC_PREFIX = "NVRM version:"
_LIBRARY_PREFIX = "libnvidia-ml.so."
_LIBRARY_LINK = "libnvidia-ml.so.1"
# Where driver installations keep their libraries, relative to the driver root (the same list the
# chart's node agent searches for libnvidia-ml.so.1).
LIBRARY_DIRS = (
    "usr/lib64",
    "usr/lib/x86_64-linux-gnu",
    "usr/lib/aarch64-linux-gnu",
    "lib64",
    "lib/x86_64-linux-gnu",
    "lib/aarch64-linux-gnu",
)


@dataclass(frozen=True)
class DriverVersion:
    """A driver version and where it was read, for messages."""

    version: str
    source: str


def parse_version(text: str) -> tuple[int, ...] | None:
    """`570.158.01` as (570, 158, 1); None for anything but two to four dot-separated numbers."""
    parts = text.strip().split(".")
    if not 2 <= len(parts) <= 4 or not all(part.isdigit() for part in parts):
        return None
    return tuple(int(part) for part in parts)


def older_than(version: str, minimum: str = MINIMUM_DRIVER_VERSION) -> bool | None:
    """True when `version` is below `minimum`, compared number by number (570.86.15 < 570.158.01,
    570.158.1 == 570.158.01); None when `version` is no version number at all."""
    found, needed = parse_version(version), parse_version(minimum)
    if needed is None:
        raise ValueError(f"{minimum!r} is not a driver version")
    if found is None:
        return None
    width = max(len(found), len(needed))
    return found + (0,) * (width - len(found)) < needed + (0,) * (width - len(needed))


def version_of_library(file_name: str) -> str | None:
    """The version in an NVML library's file name (`libnvidia-ml.so.570.158.01`); None for the
    `libnvidia-ml.so.1` link and any other name."""
    if not file_name.startswith(_LIBRARY_PREFIX):
        return None
    suffix = file_name.removeprefix(_LIBRARY_PREFIX)
    return suffix if parse_version(suffix) is not None else None


def _newest(folder: Path, names: Iterable[str]) -> DriverVersion | None:
    versions = [(v, name) for name in names if (v := version_of_library(name)) is not None]
    if not versions:
        return None
    version, name = max(versions, key=lambda item: parse_version(item[0]) or ())
    return DriverVersion(version, str(folder / name))


def library_version(driver_root: Path) -> DriverVersion | None:
    """The version of the NVML library installed under `driver_root`, or None when there is none.

    The file `libnvidia-ml.so.1` links to wins: files of an older driver may be left beside it after an
    upgrade. Without that link, the newest versioned file of the first folder that has one.
    """
    for directory in LIBRARY_DIRS:
        folder = driver_root / directory
        try:
            # Only the link's last part: an absolute target names a path of the host, not of ours.
            target = Path(os.readlink(folder / _LIBRARY_LINK)).name
        except OSError:
            target = ""
        version = version_of_library(target)
        if version is not None:
            return DriverVersion(version, str(folder / target))
        try:
            found = _newest(folder, os.listdir(folder))
        except OSError:
            continue
        if found is not None:
            return found
    return None


def version_of_module(text: str) -> str | None:
    """The kernel module's version in the text of its version file; None when it names none."""
    for line in text.splitlines():
        if line.startswith(_PROC_PREFIX):
            return next((word for word in line.split() if parse_version(word) is not None), None)
    return None


def module_version(driver_root: Path) -> DriverVersion | None:
    """The running kernel module's version, from its version file under `driver_root`; None when that
    file is not there or names no version."""
    path = driver_root / PROC_VERSION
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    version = version_of_module(text)
    return None if version is None else DriverVersion(version, str(path))


def nvml_version(read: Callable[[], NodeGpus]) -> tuple[DriverVersion | None, str]:
    """The version NVML reports, or None and why NVML could not say."""
    reading = read()
    if reading.status is NvmlStatus.OK and reading.driver_version:
        return DriverVersion(reading.driver_version, NVML_SOURCE), ""
    if reading.error is not None:
        return None, reading.error.describe()
    return None, "NVML reported no driver version"


def read_driver_version(driver_root: Path, read_nvml: Callable[[], NodeGpus]) -> DriverVersion | None:
    """The node's driver version from the kernel module's version file under `driver_root`, else from
    the NVML library's file name there, else from NVML (`read_nvml` is called only then); None
    (logged) when none tells."""
    found = module_version(driver_root) or library_version(driver_root)
    if found is not None:
        return found
    found, why = nvml_version(read_nvml)
    if found is None:
        log.warning(
            "NVIDIA driver version unknown (no %s or %s<version> under %s; NVML: %s): not checked against %s",
            PROC_VERSION,
            _LIBRARY_PREFIX,
            driver_root,
            why,
            MINIMUM_DRIVER_VERSION,
        )
    return found


def driver_problem(found: DriverVersion | None, node: str, host_driver_root: Path) -> str | None:
    """Why the plugin must not start on this driver, or None when it may."""
    if found is None:
        return None
    too_old = older_than(found.version)
    if too_old is None:
        log.warning(
            "NVIDIA driver version %r (from %s) is not a version number: not checked against %s",
            found.version,
            found.source,
            MINIMUM_DRIVER_VERSION,
        )
        return None
    if not too_old:
        return None
    return (
        f"NVIDIA driver {found.version} on node {node} (read from {found.source}; host driver root "
        f"{host_driver_root}) is older than {MINIMUM_DRIVER_VERSION}: ComputeDomains give each IMEX "
        f"daemon its peers by DNS name, which nvidia-imex supports from {MINIMUM_DRIVER_VERSION} on. "
        f"Upgrade the GPU driver on this node to {MINIMUM_DRIVER_VERSION} or later"
    )
