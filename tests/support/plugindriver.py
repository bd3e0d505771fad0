"""A driver installation under the fake driver root of `support.pluginview.make_core`.

`make_core` writes `/proc/devices`, the `fabric-imex-mgmt` capability file and a bare `nvidia-imex`;
a daemon claim on a node with a clique also needs `nvidia-imex-ctl`, both executable, and takes the
driver's libraries (its management set).
"""

from __future__ import annotations

from pathlib import Path

DRIVER_VERSION = "580.82.07"


def install_imex_tools(root: Path) -> None:
    """Executable `nvidia-imex` and `nvidia-imex-ctl` under `<root>/driver/usr/bin`."""
    binaries = root / "driver" / "usr" / "bin"
    binaries.mkdir(parents=True, exist_ok=True)
    for tool in ("nvidia-imex", "nvidia-imex-ctl"):
        (binaries / tool).write_text("#!/bin/sh\n")
        (binaries / tool).chmod(0o755)


def install_driver(root: Path) -> None:
    """The IMEX tools and the NVML library of a driver (`libnvidia-ml.so.<version>` and its link)."""
    install_imex_tools(root)
    lib = root / "driver" / "usr" / "lib64"
    lib.mkdir(parents=True, exist_ok=True)
    (lib / f"libnvidia-ml.so.{DRIVER_VERSION}").write_bytes(b"\x7fELF")
    link = lib / "libnvidia-ml.so.1"
    if not link.is_symlink():
        link.symlink_to(f"libnvidia-ml.so.{DRIVER_VERSION}")
