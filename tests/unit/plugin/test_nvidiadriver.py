"""The kubelet plugin's driver version check: the comparison, where the version is read, the refusal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from computedomain.nvml.gpus import NodeGpus, NvmlCallError, NvmlStatus
from computedomain.plugin.nvidiadriver import (
    MINIMUM_DRIVER_VERSION,
    NVML_SOURCE,
    DriverVersion,
    driver_problem,
    library_version,
    module_version,
    older_than,
    parse_version,
    read_driver_version,
    version_of_library,
    version_of_module,
)

MISSING = NodeGpus(status=NvmlStatus.MISSING, error=NvmlCallError("nvmlInit", 12, "Library Not Found"))


@pytest.mark.parametrize(
    ("version", "old"),
    [
        ("570.158.01", False),
        ("570.158.1", False),  # the same version without the leading zero
        ("580.82.07", False),
        ("575.51.03", False),
        ("570.158.02", False),
        ("570.172", False),  # two parts, above 570.158
        ("570.158", True),  # 570.158.0
        ("565.57.01", True),
        ("570.86.15", True),  # 86 < 158 as numbers, though "86" > "158" as text
        ("570.158.00", True),
        ("550.163.01", True),
        (" 580.82.07\n", False),
    ],
)
def test_versions_compare_number_by_number(version: str, old: bool) -> None:
    assert older_than(version) is old


@pytest.mark.parametrize("text", ["", "570", "570.158.01-beta", "r570", "570..01", "1.2.3.4.5", "N/A"])
def test_what_is_no_version_is_not_judged(text: str) -> None:
    assert parse_version(text) is None
    assert older_than(text) is None


def test_the_minimum_is_570_158_01() -> None:
    assert parse_version(MINIMUM_DRIVER_VERSION) == (570, 158, 1)
    assert older_than("565.57.01", "565.57.01") is False


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("libnvidia-ml.so.570.158.01", "570.158.01"),
        ("libnvidia-ml.so.580.82.07", "580.82.07"),
        ("libnvidia-ml.so.1", None),
        ("libnvidia-ml.so", None),
        ("libnvidia-cfg.so.570.158.01", None),
        ("libnvidia-ml.so.570.158.01.bak", None),
    ],
)
def test_version_from_the_library_file_name(name: str, version: str | None) -> None:
    assert version_of_library(name) == version


def _install(root: Path, directory: str, version: str, *, link: bool = True, absolute: bool = False) -> Path:
    folder = root / directory
    folder.mkdir(parents=True, exist_ok=True)
    library = folder / f"libnvidia-ml.so.{version}"
    library.write_bytes(b"\x7fELF")
    if link:
        target = f"/{directory}/{library.name}" if absolute else library.name
        os.symlink(target, folder / "libnvidia-ml.so.1")
    return library


def test_library_version_follows_the_link(tmp_path: Path) -> None:
    library = _install(tmp_path, "usr/lib/x86_64-linux-gnu", "565.57.01")
    # A newer file left beside it that the link does not name is not the driver in use.
    (library.parent / "libnvidia-ml.so.580.82.07").write_bytes(b"")
    assert library_version(tmp_path) == DriverVersion("565.57.01", str(library))


def test_library_version_reads_an_absolute_link_by_its_name(tmp_path: Path) -> None:
    # A host's absolute link points outside the mounted driver root; its file name still tells.
    library = _install(tmp_path, "usr/lib64", "570.86.15", absolute=True)
    assert library_version(tmp_path) == DriverVersion("570.86.15", str(library))


def test_library_version_without_a_link_takes_the_newest_file(tmp_path: Path) -> None:
    _install(tmp_path, "lib64", "570.86.15", link=False)
    newest = _install(tmp_path, "lib64", "570.158.01", link=False)
    assert library_version(tmp_path) == DriverVersion("570.158.01", str(newest))


def test_no_library_no_version(tmp_path: Path) -> None:
    (tmp_path / "usr" / "lib64").mkdir(parents=True)
    (tmp_path / "usr" / "lib64" / "libc.so.6").write_bytes(b"")
    assert library_version(tmp_path) is None


PROPRIETARY = (
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.158.01  Tue Jun  3 12:26:13 UTC 2025\n"
    "GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04)\n"
)
OPEN = (
    "NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  580.82.07  Release Build  "
    "(dvs-builder@U22-I3-AE18-23-3)  Wed Aug 27 18:08:21 UTC 2025\n"
    "GCC version:  gcc version 13.3.0 (Ubuntu 13.3.0-6ubuntu2~24.04)\n"
)


@pytest.mark.parametrize(
    ("text", "version"),
    [(PROPRIETARY, "570.158.01"), (OPEN, "580.82.07"), ("GCC version: 12.3.0\n", None), ("", None)],
)
def test_version_from_the_kernel_module_file(text: str, version: str | None) -> None:
    assert version_of_module(text) == version


def _module(root: Path, text: str) -> Path:
    path = root / "proc" / "driver" / "nvidia" / "version"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


def _no_nvml() -> NodeGpus:
    raise AssertionError("NVML was asked although the driver root tells the version")


def test_the_kernel_module_wins_and_nvml_is_not_asked(tmp_path: Path) -> None:
    # A library left by a newer driver whose module is not loaded yet (no reboot since the upgrade).
    _install(tmp_path, "usr/lib64", "580.82.07")
    path = _module(tmp_path, PROPRIETARY)
    assert module_version(tmp_path) == DriverVersion("570.158.01", str(path))
    assert read_driver_version(tmp_path, _no_nvml) == DriverVersion("570.158.01", str(path))


def test_the_library_tells_without_nvml_being_asked(tmp_path: Path) -> None:
    library = _install(tmp_path, "usr/lib64", "565.57.01")
    _module(tmp_path, "GCC version:  gcc version 12.3.0\n")
    assert read_driver_version(tmp_path, _no_nvml) == DriverVersion("565.57.01", str(library))


def test_nvml_tells_where_the_driver_root_does_not(tmp_path: Path) -> None:
    reading = NodeGpus(status=NvmlStatus.OK, driver_version="580.82.07")
    assert read_driver_version(tmp_path, lambda: reading) == DriverVersion("580.82.07", NVML_SOURCE)


def test_without_nvml_the_library_tells(tmp_path: Path) -> None:
    library = _install(tmp_path, "usr/lib/aarch64-linux-gnu", "570.86.15")
    assert read_driver_version(tmp_path, lambda: MISSING) == DriverVersion("570.86.15", str(library))


def test_without_nvml_or_library_the_version_is_unknown_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert read_driver_version(tmp_path, lambda: MISSING) is None
    assert "NVIDIA driver version unknown" in caplog.text
    assert "Library Not Found" in caplog.text


def test_an_old_driver_is_refused_with_what_to_do() -> None:
    problem = driver_problem(DriverVersion("565.57.01", NVML_SOURCE), "gb200-n01", Path("/run/nvidia/driver"))
    assert problem is not None
    assert "NVIDIA driver 565.57.01 on node gb200-n01" in problem
    assert "read from NVML (nvmlSystemGetDriverVersion)" in problem
    assert "/run/nvidia/driver" in problem
    assert "Upgrade the GPU driver on this node to 570.158.01 or later" in problem


@pytest.mark.parametrize(
    "found",
    [
        None,
        DriverVersion("570.158.01", NVML_SOURCE),
        DriverVersion("580.82.07", "/driver-root/usr/lib64/libnvidia-ml.so.580.82.07"),
        DriverVersion("unknown", NVML_SOURCE),
    ],
)
def test_a_new_unknown_or_unreadable_driver_is_not_refused(found: DriverVersion | None) -> None:
    assert driver_problem(found, "n", Path("/")) is None
