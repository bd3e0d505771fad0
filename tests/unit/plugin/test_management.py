"""The driver's management set (what NVIDIA's `nvidia-ctk cdi generate --mode=management` gives)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cdtestbed.pluginprocess import NodeHost
from computedomain.plugin.cdi import Mount
from computedomain.plugin.devices import CharDevice
from computedomain.plugin.management import (
    VOID_MOUNT,
    Entry,
    ManagementSet,
    driver_version,
    management_set,
    read_listing,
)

HOST = Path("/host/driver")
LIBS = ("ro", "nosuid", "nodev", "rbind", "rprivate")
VERSION = "580.82.07"
X86 = "usr/lib/x86_64-linux-gnu"


def char(major: int, minor: int, mode: int = 0o666) -> Entry:
    return Entry("char", "", mode=mode, major=major, minor=minor)


def file(path: str, executable: bool = False) -> Entry:
    return Entry("file", path, executable=executable)


def link(target: str | None, kind: str = "file", executable: bool = False) -> Entry:
    return Entry("file" if kind == "file" else "other", target, is_link=True, executable=executable)


def mount(path: str, source: str | None = None, options: tuple[str, ...] = LIBS) -> Mount:
    return Mount(str(HOST / (source or path)), f"/{path}", options)


def test_device_nodes_are_every_nvidia_node_but_nvswitch_nvlink_and_gds() -> None:
    listing = {
        "dev/nvidia0": char(195, 0),
        "dev/nvidia1": char(195, 1),
        "dev/nvidiactl": char(195, 255),
        "dev/nvidia-modeset": char(195, 254),
        "dev/nvidia-uvm": char(510, 0),
        "dev/nvidia-uvm-tools": char(510, 1),
        "dev/nvidia-nvswitch0": char(241, 0),
        "dev/nvidia-nvlink": char(240, 0),
        "dev/nvidia-fs0": char(242, 0),
        "dev/nvidia-caps": Entry("dir", "dev/nvidia-caps"),
        "dev/nvidia-notadevice": file("dev/nvidia-notadevice"),
        "dev/nvidia-caps/nvidia-cap1": char(235, 1, 0o400),
        "dev/nvidia-caps/nvidia-cap7": char(235, 7, 0o400),
        "dev/nvidia-caps-imex-channels/channel0": char(234, 0),
    }

    nodes = management_set(listing, HOST).device_nodes

    assert [(n.path, n.major, n.minor, n.file_mode) for n in nodes] == [
        ("/dev/nvidia-modeset", 195, 254, 0o666),
        ("/dev/nvidia-uvm", 510, 0, 0o666),
        ("/dev/nvidia-uvm-tools", 510, 1, 0o666),
        ("/dev/nvidia0", 195, 0, 0o666),
        ("/dev/nvidia1", 195, 1, 0o666),
        ("/dev/nvidiactl", 195, 255, 0o666),
        ("/dev/nvidia-caps/nvidia-cap1", 235, 1, 0o400),
        ("/dev/nvidia-caps/nvidia-cap7", 235, 7, 0o400),
        ("/dev/nvidia-caps-imex-channels/channel0", 234, 0, 0o666),
    ]
    # The runtime finds each node on the host, under the host's driver root.
    assert nodes[3].host_path == "/host/driver/dev/nvidia0"


def test_driver_version_is_libcudas_suffix_before_nvmls() -> None:
    nvml = {f"{X86}/libnvidia-ml.so.570.1.2": file(f"{X86}/libnvidia-ml.so.570.1.2")}
    cuda = {
        f"{X86}/libcuda.so.1": link(f"{X86}/libcuda.so.{VERSION}"),
        f"{X86}/libcuda.so.{VERSION}": file(f"{X86}/libcuda.so.{VERSION}"),
    }

    assert driver_version(nvml) == "570.1.2"
    assert driver_version({**nvml, **cuda}) == VERSION
    assert driver_version({f"{X86}/libnvidia-ml.so.1": link(f"{X86}/libnvidia-ml.so.{VERSION}")}) == ""
    assert driver_version({}) == ""


def test_libraries_of_the_driver_version_and_their_links_are_mounted() -> None:
    listing = {
        f"{X86}/libnvidia-ml.so.1": link(f"{X86}/libnvidia-ml.so.{VERSION}"),
        f"{X86}/libnvidia-ml.so.{VERSION}": file(f"{X86}/libnvidia-ml.so.{VERSION}"),
        f"{X86}/libcuda.so": link(f"{X86}/libcuda.so.{VERSION}"),
        f"{X86}/libcuda.so.1": link(f"{X86}/libcuda.so.{VERSION}"),
        f"{X86}/libcuda.so.{VERSION}": file(f"{X86}/libcuda.so.{VERSION}"),
        f"{X86}/vdpau/libvdpau_nvidia.so.{VERSION}": file(f"{X86}/vdpau/libvdpau_nvidia.so.{VERSION}"),
        f"{X86}/libnvidia-nvvm70.so.4": link(f"{X86}/libnvidia-nvvm70.so.4.0.0"),
        f"{X86}/libnvidia-nvvm70.so.4.0.0": file(f"{X86}/libnvidia-nvvm70.so.4.0.0"),
        f"{X86}/libibumad.so.3": link(f"{X86}/libibumad.so.3.2.0"),
        f"{X86}/libibumad.so.3.2.0": file(f"{X86}/libibumad.so.3.2.0"),
        # An older driver's leftover, another program's library, a link that leaves the driver root.
        "usr/lib64/libnvidia-old.so.570.1.1": file("usr/lib64/libnvidia-old.so.570.1.1"),
        f"{X86}/libz.so.1": link(f"{X86}/libz.so.1.2.13"),
        f"{X86}/libz.so.1.2.13": file(f"{X86}/libz.so.1.2.13"),
        f"{X86}/libnvidia-gone.so.{VERSION}": link(None),
    }

    found = management_set(listing, HOST)

    assert found.version == VERSION
    assert found.mounts == (
        mount(f"{X86}/libcuda.so.{VERSION}"),
        mount(f"{X86}/libnvidia-ml.so.{VERSION}"),
        mount(f"{X86}/vdpau/libvdpau_nvidia.so.{VERSION}"),
        mount(f"{X86}/libnvidia-nvvm70.so.4.0.0"),
        mount(f"{X86}/libibumad.so.3.2.0"),
        # The links a program opens by name, each mounted from the library it resolves to.
        mount(f"{X86}/libcuda.so", f"{X86}/libcuda.so.{VERSION}"),
        mount(f"{X86}/libcuda.so.1", f"{X86}/libcuda.so.{VERSION}"),
        mount(f"{X86}/libibumad.so.3", f"{X86}/libibumad.so.3.2.0"),
        mount(f"{X86}/libnvidia-ml.so.1", f"{X86}/libnvidia-ml.so.{VERSION}"),
        mount(f"{X86}/libnvidia-nvvm70.so.4", f"{X86}/libnvidia-nvvm70.so.4.0.0"),
        VOID_MOUNT,
    )
    # No ldcache hook: the loader finds them through LD_LIBRARY_PATH.
    assert found.env == {"NVIDIA_VISIBLE_DEVICES": "void", "LD_LIBRARY_PATH": f"/{X86}"}


def test_binaries_are_found_in_path_order_and_must_be_executable() -> None:
    listing = {
        "usr/bin/nvidia-smi": file("usr/bin/nvidia-smi", executable=True),
        "usr/sbin/nvidia-imex": file("usr/sbin/nvidia-imex", executable=True),
        "usr/bin/nvidia-imex": file("usr/bin/nvidia-imex", executable=True),
        # A link to a file outside the driver root still counts: the runtime follows it on the host.
        "usr/local/bin/nvidia-imex-ctl": link(None, executable=True),
        "usr/bin/nvidia-persistenced": file("usr/bin/nvidia-persistenced"),
    }

    found = management_set(listing, HOST)

    assert found.binaries == {
        "nvidia-smi": "usr/bin/nvidia-smi",
        "nvidia-imex": "usr/sbin/nvidia-imex",
        "nvidia-imex-ctl": "usr/local/bin/nvidia-imex-ctl",
    }
    assert found.mounts == (
        mount("usr/bin/nvidia-smi"),
        mount("usr/sbin/nvidia-imex"),
        mount("usr/local/bin/nvidia-imex-ctl"),
        VOID_MOUNT,
    )
    assert found.version == ""
    assert "LD_LIBRARY_PATH" not in found.env


def test_firmware_of_the_driver_version_and_ipc_sockets() -> None:
    firmware = f"lib/firmware/nvidia/{VERSION}"
    listing = {
        f"usr/lib64/libnvidia-ml.so.{VERSION}": file(f"usr/lib64/libnvidia-ml.so.{VERSION}"),
        f"{firmware}/gsp_ga10x.bin": file(f"{firmware}/gsp_ga10x.bin"),
        f"{firmware}/ucodes_x.bin": file(f"{firmware}/ucodes_x.bin"),
        "lib/firmware/nvidia/570.1.1/gsp_ga10x.bin": file("lib/firmware/nvidia/570.1.1/gsp_ga10x.bin"),
        "run/nvidia-persistenced/socket": Entry("socket", "run/nvidia-persistenced/socket"),
        "var/run/nvidia-persistenced/socket": Entry("socket", "run/nvidia-persistenced/socket"),
        "var/run/nvidia-fabricmanager/socket": Entry("socket", "var/run/nvidia-fabricmanager/socket"),
    }

    mounts = management_set(listing, HOST, "6.8.0").mounts

    ipc = ("nosuid", "nodev", "rbind", "rprivate", "noexec")
    assert mounts == (
        mount(f"usr/lib64/libnvidia-ml.so.{VERSION}"),
        mount(f"{firmware}/gsp_ga10x.bin"),
        mount(f"{firmware}/ucodes_x.bin"),
        mount("run/nvidia-persistenced/socket", options=ipc),
        mount("var/run/nvidia-fabricmanager/socket", options=ipc),
        VOID_MOUNT,
    )


def test_an_empty_driver_root_gives_only_the_void_markers() -> None:
    assert management_set({}, HOST) == ManagementSet(
        version="", mounts=(VOID_MOUNT,), env={"NVIDIA_VISIBLE_DEVICES": "void"}
    )


def test_listing_reads_files_links_and_where_links_lead(tmp_path: Path) -> None:
    root = tmp_path / "driver"
    lib = root / "usr" / "lib64"
    lib.mkdir(parents=True)
    (lib / f"libnvidia-ml.so.{VERSION}").write_bytes(b"\x7fELF")
    (lib / "libnvidia-ml.so.1").symlink_to(f"libnvidia-ml.so.{VERSION}")
    (lib / "README").write_text("not a library")
    # An absolute link means the driver root's own file, as the host sees a driver root it runs from.
    (lib / f"libcuda.so.{VERSION}").write_bytes(b"\x7fELF")
    (lib / "libcuda.so.1").symlink_to(f"/usr/lib64/libcuda.so.{VERSION}")
    (lib / "libloop.so.1").symlink_to("libloop.so.1")
    (root / "lib64").symlink_to("usr/lib64")
    outside = tmp_path / "elsewhere"
    outside.write_text("#!/bin/sh\n")
    outside.chmod(0o755)
    (root / "usr" / "bin").mkdir()
    (root / "usr" / "bin" / "nvidia-imex").symlink_to(outside)

    listing = read_listing(root, "6.8.0")

    assert listing[f"usr/lib64/libnvidia-ml.so.{VERSION}"] == Entry(
        "file", f"usr/lib64/libnvidia-ml.so.{VERSION}", mode=0o644
    )
    assert listing["usr/lib64/libnvidia-ml.so.1"].resolved == f"usr/lib64/libnvidia-ml.so.{VERSION}"
    assert listing["usr/lib64/libnvidia-ml.so.1"].is_link
    # Through a linked folder the file is the same one, so it is mounted once.
    assert listing[f"lib64/libnvidia-ml.so.{VERSION}"].resolved == f"usr/lib64/libnvidia-ml.so.{VERSION}"
    assert "usr/lib64/README" not in listing
    assert listing["usr/lib64/libcuda.so.1"].resolved == f"usr/lib64/libcuda.so.{VERSION}"
    assert "usr/lib64/libloop.so.1" not in listing
    imex = listing["usr/bin/nvidia-imex"]
    assert (imex.executable, imex.resolved) == (True, None)
    found = management_set(listing, HOST)
    assert [m.container_path for m in found.mounts].count(f"/usr/lib64/libnvidia-ml.so.{VERSION}") == 1
    assert (
        Mount(f"/host/driver/usr/lib64/libcuda.so.{VERSION}", "/usr/lib64/libcuda.so.1", LIBS) in found.mounts
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="making device nodes needs root")
def test_listing_reads_device_numbers_and_modes(tmp_path: Path) -> None:
    caps = tmp_path / "dev" / "nvidia-caps"
    caps.mkdir(parents=True)
    for path, number, mode in (
        (tmp_path / "dev" / "nvidiactl", (195, 255), 0o666),
        (caps / "nvidia-cap7", (235, 7), 0o400),
    ):
        os.mknod(path, stat.S_IFCHR | mode, os.makedev(*number))
        os.chmod(path, mode)  # past the umask

    nodes = management_set(read_listing(tmp_path, "6.8.0"), HOST).device_nodes

    assert nodes == (
        CharDevice("/dev/nvidiactl", 195, 255, 0o666, "/host/driver/dev/nvidiactl"),
        CharDevice("/dev/nvidia-caps/nvidia-cap7", 235, 7, 0o400, "/host/driver/dev/nvidia-caps/nvidia-cap7"),
    )


# What nvidia-ctk v1.20.2 emitted for the test bed's driver root (`nvidia-ctk cdi generate
# --mode=management --driver-root=<root> --dev-root=<root>`), hooks and its NVIDIA_CTK_LIBCUDA_DIR left
# out: its device nodes (path, major, minor, mode) and mounts (host path under the root, container path).
NVIDIA_CTK_NODES = {
    ("/dev/nvidia-uvm", 510, 0, 0o666),
    ("/dev/nvidia-uvm-tools", 510, 1, 0o666),
    *{(f"/dev/nvidia{n}", 195, n, 0o666) for n in range(4)},
    ("/dev/nvidiactl", 195, 255, 0o666),
    ("/dev/nvidia-caps-imex-channels/channel0", 234, 0, 0o666),
    ("/dev/nvidia-caps/nvidia-cap7", 235, 7, 0o400),
}
NVIDIA_CTK_MOUNTS = {
    ("usr/bin/nvidia-imex", "/usr/bin/nvidia-imex"),
    ("usr/bin/nvidia-imex-ctl", "/usr/bin/nvidia-imex-ctl"),
    ("usr/bin/nvidia-smi", "/usr/bin/nvidia-smi"),
    (f"usr/lib64/libnvidia-ml.so.{VERSION}", f"/usr/lib64/libnvidia-ml.so.{VERSION}"),
    ("/dev/null", "/var/run/nvidia-container-devices/void"),
}


@pytest.mark.skipif(os.geteuid() != 0, reason="the test bed makes device nodes only as root")
def test_the_test_beds_driver_root_gives_what_nvidia_ctk_gives(tmp_path: Path) -> None:
    host = NodeHost(tmp_path)
    host.create()
    root = host.driver_root

    found = management_set(read_listing(root), root)

    assert {(n.path, n.major, n.minor, n.file_mode) for n in found.device_nodes} == NVIDIA_CTK_NODES
    assert all(n.host_path == str(root) + n.path for n in found.device_nodes)
    mounts = {(m.host_path, m.container_path) for m in found.mounts}
    expected = {(str(root / h) if not h.startswith("/") else h, c) for h, c in NVIDIA_CTK_MOUNTS}
    # Ours adds the library's .so.1 link, which NVIDIA's create-symlinks hook makes in the container.
    link = (str(root / f"usr/lib64/libnvidia-ml.so.{VERSION}"), "/usr/lib64/libnvidia-ml.so.1")
    assert mounts == expected | {link}
