"""The driver's management set: what an IMEX daemon container receives of the node's NVIDIA driver.

NVIDIA's kubelet plugin gives every IMEX daemon container the CDI device
`k8s.compute-domain.nvidia.com/device=all`, which NVIDIA's container toolkit generates in its
`management` mode (`nvidia-ctk cdi generate --mode=management`): every NVIDIA device node, the
driver's libraries, firmware and tools, and its IPC sockets. This module finds the same set under a
driver root, in two steps: `read_listing` reads the few folders of the driver root that matter (the
only I/O here) and `management_set` decides from that listing alone.

The toolkit's OCI hooks (`nvidia-cdi-hook create-symlinks`, `update-ldcache`, `enable-cuda-compat`,
`disable-device-node-modification`) are left out: they need that binary on the host, which a node
does not have in general. Library lookup works without them: each library is mounted at the path it
has under the driver root, the links beside it that name it (`libnvidia-ml.so.1`, the SONAME that
programs `dlopen`) are mounted too, from the library they resolve to, and `LD_LIBRARY_PATH` names the
library folders, since the image's `ld.so.cache` knows none of these files and a folder such as
`/usr/lib64` is not on every loader's default path.

Device nodes are read from the driver root's `dev/` only (NVIDIA's `--dev-root` set to the driver
root): with the chart's default driver root, the host's `/`, that is the host's `/dev`.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from computedomain.plugin.cdi import Mount
from computedomain.plugin.devices import CharDevice

# The folders below are relative to the driver root, in the order NVIDIA's CDI library searches them.
DEV_DIRS = ("dev", "dev/nvidia-caps", "dev/nvidia-caps-imex-channels")
# Its library locator's folders ("" is the driver root itself); `ld.so.cache` is not read.
LIBRARY_DIRS = (
    "",
    "usr/lib64",
    "usr/lib/x86_64-linux-gnu",
    "usr/lib/aarch64-linux-gnu",
    "usr/lib/x86_64-linux-gnu/nvidia/current",
    "usr/lib/aarch64-linux-gnu/nvidia/current",
    "lib64",
    "lib/x86_64-linux-gnu",
    "lib/aarch64-linux-gnu",
    "lib/x86_64-linux-gnu/nvidia/current",
    "lib/aarch64-linux-gnu/nvidia/current",
)
# Its executable locator's default PATH.
BINARY_DIRS = ("usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin")
BINARIES = (
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
    "nvidia-imex",
    "nvidia-imex-ctl",
)
# Libraries named by their own version rather than the driver's (libnvsdm and what it loads).
UNVERSIONED_LIBRARIES = ("libnvsdm.so.1", "libibumad.so.3", "libibmad.so.5")
LEGACY_LIBRARIES = ("libnvidia-nvvm70.so.*",)
# The daemon of each IPC socket; the first of `run/` and `var/run/` that has it wins.
IPC_SOCKETS = ("nvidia-persistenced", "nvidia-fabricmanager")
FIRMWARE_PATTERNS = ("gsp*.bin", "ucodes*.bin")
# Device nodes the management mode never hands out (GPUDirect Storage, NVSwitch and NVLink).
BLOCKED_DEVICE_PREFIXES = ("nvidia-fs", "nvidia-nvswitch", "nvidia-nvlink")
# The driver version is the suffix of the first of these found (`libcuda.so.580.82.07`).
VERSION_LIBRARIES = ("libcuda.so.", "libnvidia-ml.so.")

# NVIDIA's CDI library adds these to every spec: they keep the NVIDIA container runtime (if the node
# runs it) from injecting GPUs on top, whether it reads the environment or its volume-mounts list.
VOID_ENV = {"NVIDIA_VISIBLE_DEVICES": "void"}
VOID_MOUNT = Mount("/dev/null", "/var/run/nvidia-container-devices/void", ("ro", "nosuid", "nodev", "bind"))

LIBRARY_OPTIONS = ("ro", "nosuid", "nodev", "rbind", "rprivate")
# Sockets are written to, so not read-only.
IPC_OPTIONS = ("nosuid", "nodev", "rbind", "rprivate", "noexec")

EntryKind = Literal["char", "file", "dir", "socket", "other"]


@dataclass(frozen=True)
class Entry:
    """One file under the driver root, as far as the management set cares."""

    # What it is, links followed.
    kind: EntryKind
    # Its canonical path relative to the driver root, links followed inside the root; None when a
    # link leads to nothing there (the runtime, following it on the host, may still find a file).
    resolved: str | None
    is_link: bool = False
    mode: int = 0
    major: int = 0
    minor: int = 0
    executable: bool = False


# Paths relative to the driver root ("usr/lib64/libnvidia-ml.so.1") -> what is there.
Listing = Mapping[str, Entry]


@dataclass(frozen=True)
class ManagementSet:
    """What a management container receives of the driver: container edits plus what they were made of."""

    version: str
    device_nodes: tuple[CharDevice, ...] = ()
    mounts: tuple[Mount, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    # Tool name -> where it was found, relative to the driver root.
    binaries: Mapping[str, str] = field(default_factory=dict)


def firmware_dirs(kernel_release: str) -> tuple[str, ...]:
    """The kernel's firmware folders, in its search order (NVIDIA's CDI library uses the same)."""
    return (
        f"lib/firmware/updates/{kernel_release}",
        "lib/firmware/updates",
        f"lib/firmware/{kernel_release}",
        "lib/firmware",
    )


def binary_candidates(name: str) -> list[str]:
    """Every place, relative to the driver root, where `name` is looked for, in order."""
    return [posixpath.join(directory, name) for directory in BINARY_DIRS]


def _join(directory: str, name: str) -> str:
    return posixpath.join(directory, name) if directory else name


def _kind(mode: int) -> EntryKind:
    if stat.S_ISCHR(mode):
        return "char"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    return "socket" if stat.S_ISSOCK(mode) else "other"


class _Resolver:
    """Paths under a driver root resolved as the host sees the root: links followed, absolute targets
    taken inside the root (as in `chroot`), each folder resolved once."""

    _MAX_LINKS = 40

    def __init__(self, root: Path) -> None:
        self.root = root
        self._known: dict[str, str | None] = {}

    def resolve(self, relative: str, links: int = 0) -> str | None:
        """The canonical form of `relative` ('' for the root); None past 40 links (a loop)."""
        done = ""
        for part in relative.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                done = posixpath.dirname(done)
                continue
            resolved = self._component(_join(done, part), links)
            if resolved is None:
                return None
            done = resolved
        return done

    def _component(self, path: str, links: int) -> str | None:
        # `path`'s folder is canonical already; only its last part may be a link.
        if path not in self._known:
            try:
                target = os.readlink(self.root / path)
            except OSError:  # no link (or nothing there): the path is its own canonical form
                self._known[path] = path
                return path
            if links >= self._MAX_LINKS:
                return None
            base = "" if target.startswith("/") else posixpath.dirname(path)
            self._known[path] = self.resolve(_join(base, target), links + 1)
        return self._known[path]


def _entry(root: Path, resolver: _Resolver, folder: str | None, relative: str) -> Entry | None:
    path = root / relative
    try:
        info = os.lstat(path)
    except OSError:
        return None
    is_link = stat.S_ISLNK(info.st_mode)
    if is_link:
        resolved = resolver.resolve(relative)
    else:
        # Canonical, so that a library reached through a linked folder (`lib64` -> `usr/lib64`) is one file.
        base = resolver.resolve(posixpath.dirname(relative)) if folder is None else folder
        resolved = None if base is None else _join(base, posixpath.basename(relative))
    try:
        if is_link:
            # A link that leads nowhere inside the root may still work for the runtime, which follows
            # it on the host (a tool linked from elsewhere); it is described as the plugin sees it.
            inside = resolved is not None and os.path.lexists(root / resolved)
            info = os.stat(root / resolved) if inside and resolved is not None else os.stat(path)
            resolved = resolved if inside else None
    except OSError:
        return None
    kind = _kind(info.st_mode)
    char = kind == "char"
    return Entry(
        kind=kind,
        resolved=resolved,
        is_link=is_link,
        mode=stat.S_IMODE(info.st_mode),
        major=os.major(info.st_rdev) if char else 0,
        minor=os.minor(info.st_rdev) if char else 0,
        executable=kind == "file" and bool(info.st_mode & 0o111),
    )


def read_listing(driver_root: Path, kernel_release: str | None = None) -> dict[str, Entry]:
    """The files of `driver_root` that `management_set` looks at; missing folders are skipped.

    Library folders are read for shared objects only (`*.so*`): with the driver root at the host's
    `/`, they hold every library of the host.
    """
    release = kernel_release if kernel_release is not None else os.uname().release
    resolver = _Resolver(driver_root)
    listing: dict[str, Entry] = {}

    def add(relative: str, folder: str | None = None) -> None:
        entry = _entry(driver_root, resolver, folder, relative)
        if entry is not None:
            listing[relative] = entry

    def read_dir(directory: str, keep: str = "*") -> None:
        try:
            names = sorted(os.listdir(driver_root / directory))
        except OSError:
            return
        folder = resolver.resolve(directory)
        for name in names:
            if fnmatch.fnmatchcase(name, keep):
                add(_join(directory, name), folder)

    for directory in DEV_DIRS:
        read_dir(directory, "nvidia*" if directory == "dev" else "*")
    for directory in LIBRARY_DIRS:
        read_dir(directory, "*.so*")
        read_dir(_join(directory, "vdpau"), "*.so*")
    for directory in BINARY_DIRS:
        for name in BINARIES:
            add(posixpath.join(directory, name))
    for directory in firmware_dirs(release):
        try:
            versions = sorted(os.listdir(driver_root / directory / "nvidia"))
        except OSError:
            continue
        for version in versions:
            read_dir(posixpath.join(directory, "nvidia", version), "*.bin")
    for daemon in IPC_SOCKETS:
        for run in ("run", "var/run"):
            add(posixpath.join(run, daemon, "socket"))
    return listing


def _names(listing: Listing, directory: str) -> list[str]:
    prefix = f"{directory}/" if directory else ""
    return sorted(
        path[len(prefix) :] for path in listing if path.startswith(prefix) and "/" not in path[len(prefix) :]
    )


def _matches(listing: Listing, directory: str, pattern: str) -> list[str]:
    return [
        _join(directory, name) for name in _names(listing, directory) if fnmatch.fnmatchcase(name, pattern)
    ]


def _resolved_file(listing: Listing, path: str) -> str | None:
    entry = listing[path]
    if entry.kind != "file" or entry.resolved is None:
        return None
    return entry.resolved


def driver_version(listing: Listing) -> str:
    """The driver version, from the name of `libcuda.so.<version>` or `libnvidia-ml.so.<version>`.

    As NVIDIA's CDI library decides it: the first match in its folder order, links followed; '' when
    neither library is there.
    """
    for prefix in VERSION_LIBRARIES:
        for directory in LIBRARY_DIRS:
            for path in _matches(listing, directory, f"{prefix}*.*"):
                resolved = _resolved_file(listing, path)
                name = posixpath.basename(resolved or "")
                if resolved is not None and name.startswith(prefix) and name != prefix:
                    return name[len(prefix) :]
    return ""


def _device_nodes(listing: Listing, host_root: Path) -> list[CharDevice]:
    candidates = [
        *_matches(listing, "dev", "nvidia*"),
        *_matches(listing, "dev/nvidia-caps", "nvidia-cap*"),
        *_matches(listing, "dev/nvidia-caps-imex-channels", "channel*"),
    ]
    nodes = []
    for path in candidates:
        entry = listing[path]
        if entry.kind != "char" or posixpath.basename(path).startswith(BLOCKED_DEVICE_PREFIXES):
            continue
        nodes.append(
            CharDevice(
                f"/{path}", entry.major, entry.minor, file_mode=entry.mode, host_path=str(host_root / path)
            )
        )
    return nodes


def _libraries(listing: Listing, version: str) -> tuple[list[str], list[str]]:
    """The driver's library files (resolved paths) and the folders of its versioned libraries."""
    folders: list[str] = []
    for directory in LIBRARY_DIRS:
        for path in _matches(listing, directory, f"lib*.so.{version}"):
            resolved = _resolved_file(listing, path)
            if resolved is not None and posixpath.dirname(resolved) not in folders:
                folders.append(posixpath.dirname(resolved))
    libraries: list[str] = []

    def take(patterns: Iterable[str], directories: Iterable[str]) -> None:
        for pattern in patterns:
            for directory in directories:
                for path in _matches(listing, directory, pattern):
                    resolved = _resolved_file(listing, path)
                    if resolved is not None and resolved not in libraries:
                        libraries.append(resolved)

    take([f"*.so.{version}"], [d for folder in folders for d in (folder, _join(folder, "vdpau"))])
    take(LEGACY_LIBRARIES, folders)
    take(UNVERSIONED_LIBRARIES, folders)
    return libraries, folders


def _library_links(listing: Listing, libraries: list[str]) -> list[tuple[str, str]]:
    """(link, library) for each link beside a library that resolves to one of `libraries`."""
    wanted = set(libraries)
    links = []
    for folder in dict.fromkeys(posixpath.dirname(library) for library in libraries):
        for path in _matches(listing, folder, "*"):
            entry = listing[path]
            if entry.is_link and entry.resolved in wanted:
                links.append((path, entry.resolved))
    return links


def _firmware(listing: Listing, version: str, kernel_release: str) -> list[str]:
    found: list[str] = []
    for pattern in FIRMWARE_PATTERNS:
        for directory in firmware_dirs(kernel_release):
            for path in _matches(listing, posixpath.join(directory, "nvidia", version), pattern):
                if listing[path].kind == "file" and path not in found:
                    found.append(path)
    return found


def _binaries(listing: Listing) -> dict[str, str]:
    found = {}
    for name in BINARIES:
        for path in binary_candidates(name):
            entry = listing.get(path)
            if entry is not None and entry.executable:
                found[name] = path
                break
    return found


def _sockets(listing: Listing) -> list[str]:
    found = []
    for daemon in IPC_SOCKETS:
        for run in ("run", "var/run"):
            path = posixpath.join(run, daemon, "socket")
            entry = listing.get(path)
            if entry is not None and entry.kind != "dir":
                found.append(path)
                break
    return found


def management_set(listing: Listing, host_root: Path, kernel_release: str = "") -> ManagementSet:
    """The management set of the driver root that `listing` describes, with host paths under `host_root`.

    Device nodes, with their numbers and modes as the node has them, come from the driver root's
    `dev/`; libraries and firmware need the driver version and are left out without it. Every file is
    mounted at the path it has under the driver root; a binary found through a link is mounted from
    the link, which the runtime follows on the host.
    """

    def mount(path: str, source: str | None = None, options: tuple[str, ...] = LIBRARY_OPTIONS) -> Mount:
        return Mount(str(host_root / (source or path)), f"/{path}", options)

    version = driver_version(listing)
    mounts: list[Mount] = []
    env: dict[str, str] = dict(VOID_ENV)
    if version:
        libraries, folders = _libraries(listing, version)
        mounts += [mount(library) for library in libraries]
        mounts += [mount(link, library) for link, library in _library_links(listing, libraries)]
        if libraries:
            env["LD_LIBRARY_PATH"] = ":".join(f"/{folder}" for folder in folders)
        mounts += [mount(path) for path in _firmware(listing, version, kernel_release)]
    binaries = _binaries(listing)
    mounts += [mount(path) for path in binaries.values()]
    mounts += [mount(path, options=IPC_OPTIONS) for path in _sockets(listing)]
    mounts.append(VOID_MOUNT)
    return ManagementSet(
        version=version,
        device_nodes=tuple(_device_nodes(listing, host_root)),
        mounts=tuple(mounts),
        env=env,
        binaries=binaries,
    )


def read_management_set(driver_root: Path, host_root: Path) -> ManagementSet:
    """`management_set` of the driver root as it is now."""
    release = os.uname().release
    return management_set(read_listing(driver_root, release), host_root, release)
