"""Compiles the fake NVML library with the system C compiler, only when its source or flags changed."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("fakenvml.c")
LIBRARY_NAME = "libnvidia-ml.so.1"
_BASE_FLAGS = ("-shared", "-fPIC", "-O1", "-std=c11", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden")


class CompilerMissingError(RuntimeError):
    """No C compiler (`cc`) on PATH."""


def compiler() -> str | None:
    """Path of the system C compiler, or None when there is none."""
    return shutil.which(os.environ.get("CC", "cc"))


def build_fake_nvml(out_dir: Path, *, versioned_fabric: bool = True) -> Path:
    """Build `<out_dir>/libnvidia-ml.so.1` and return its path.

    With `versioned_fabric=False` the library lacks the `nvmlDeviceGetGpuFabricInfoV` symbol, like a
    driver older than that call. The library is rebuilt only when the source or the flags change; a
    stamp file beside it records what it was built from.
    """
    cc = compiler()
    if cc is None:
        raise CompilerMissingError("no C compiler: install `cc` (e.g. gcc) to build the fake NVML library")
    flags = list(_BASE_FLAGS)
    if not versioned_fabric:
        flags.append("-DFAKE_NVML_NO_FABRIC_V")
    digest = hashlib.sha256(SOURCE.read_bytes() + "\0".join(flags).encode()).hexdigest()
    out_dir.mkdir(parents=True, exist_ok=True)
    library = out_dir / LIBRARY_NAME
    stamp = out_dir / f"{LIBRARY_NAME}.sha256"
    if library.exists() and stamp.exists() and stamp.read_text() == digest:
        return library
    # Build beside the target and rename, so a concurrent reader never loads a half-written file.
    fd, tmp_name = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=out_dir)
    os.close(fd)
    try:
        subprocess.run([cc, *flags, "-o", tmp_name, str(SOURCE)], check=True, capture_output=True, text=True)
        os.replace(tmp_name, library)
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"building the fake NVML library failed:\n{err.stderr}") from err
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    stamp.write_text(digest)
    return library
