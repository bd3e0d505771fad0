"""`computedomain-kubelet-plugin` refuses a driver older than 570.158.01 before it does anything else.

Each case runs the real entry point in a process of its own, with the real pynvml loading the fake
`libnvidia-ml.so.1` (or no NVML at all, and a driver root holding the library's versioned file). The
check comes before the plugin reads its credentials: a plugin that passes it stops next at "no
Kubernetes credentials", which these tests arrange, so no control plane is needed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fakenvml.build import build_fake_nvml, compiler
from fakenvml.config import FakeGpuNode

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "fakenvml"
RUN_TIMEOUT = 60
# What the plugin says when it got past the driver check and found no credentials (the next step).
NO_CREDENTIALS = "no Kubernetes credentials"

needs_cc = pytest.mark.skipif(compiler() is None, reason="no C compiler (cc) to build the fake NVML library")


@pytest.fixture(scope="module")
def fake_lib() -> Path:
    """Folder holding the fake `libnvidia-ml.so.1`."""
    return build_fake_nvml(CACHE / "current").parent


def run_plugin(tmp_path: Path, lib_dir: Path, driver_root: Path, nvml_config: Path | None) -> tuple[int, str]:
    """Start the plugin's entry point on a node named gb200-n07; its exit status and output."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KUBERNETES_", "FAKE_NVML")) and key not in ("KUBECONFIG", "LOG_FORMAT")
    }
    env.update(
        {
            "PYTHONPATH": str(REPO / "operator"),
            "LD_LIBRARY_PATH": str(lib_dir),
            "KUBECONFIG": str(tmp_path / "no-such-kubeconfig"),
            "NODE_NAME": "gb200-n07",
            "DRIVER_ROOT": str(driver_root),
            "HOST_DRIVER_ROOT": "/run/nvidia/driver",
            "STATE_DIR": str(tmp_path / "state"),
            "HTTP_PORT": "0",
        }
    )
    if nvml_config is not None:
        env["FAKE_NVML_CONFIG"] = str(nvml_config)
    proc = subprocess.run(
        [sys.executable, "-m", "computedomain.plugin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def no_nvml(tmp_path: Path) -> Path:
    """A library folder without NVML; skips where the machine has a real one the loader would find."""
    empty = tmp_path / "no-nvml"
    empty.mkdir()
    probe = "import ctypes; ctypes.CDLL('libnvidia-ml.so.1')"
    found = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "LD_LIBRARY_PATH": str(empty)},
        capture_output=True,
        check=False,
    )
    if found.returncode == 0:
        pytest.skip("this machine has a real libnvidia-ml.so.1, so NVML cannot be made missing")
    return empty


def driver_root_with_library(root: Path, version: str) -> Path:
    """A driver root whose libnvidia-ml.so.1 links to libnvidia-ml.so.<version>, as drivers install it."""
    folder = root / "usr" / "lib" / "x86_64-linux-gnu"
    folder.mkdir(parents=True)
    (folder / f"libnvidia-ml.so.{version}").write_bytes(b"\x7fELF")
    (folder / "libnvidia-ml.so.1").symlink_to(f"libnvidia-ml.so.{version}")
    return folder / f"libnvidia-ml.so.{version}"


@needs_cc
def test_an_old_driver_from_nvml_stops_the_plugin_with_what_to_do(fake_lib: Path, tmp_path: Path) -> None:
    config = FakeGpuNode(driver="565.57.01").write(tmp_path / "node.cfg")

    code, output = run_plugin(tmp_path, fake_lib, tmp_path / "driver", config)

    assert code == 2, output
    assert "refusing to start: NVIDIA driver 565.57.01 on node gb200-n07" in output
    assert "read from NVML (nvmlSystemGetDriverVersion)" in output
    assert "host driver root /run/nvidia/driver" in output
    assert "Upgrade the GPU driver on this node to 570.158.01 or later" in output
    assert NO_CREDENTIALS not in output  # it stopped before reaching for the cluster


@needs_cc
@pytest.mark.parametrize("driver", ["570.158.01", "580.82.07"])
def test_a_driver_from_570_158_01_on_passes(fake_lib: Path, tmp_path: Path, driver: str) -> None:
    config = FakeGpuNode(driver=driver).write(tmp_path / "node.cfg")

    code, output = run_plugin(tmp_path, fake_lib, tmp_path / "driver", config)

    assert f"NVIDIA driver {driver}, read from NVML" in output
    assert "refusing to start" not in output
    assert NO_CREDENTIALS in output, output
    assert code == 2


def test_without_nvml_the_driver_roots_library_tells(tmp_path: Path) -> None:
    library = driver_root_with_library(tmp_path / "driver", "570.86.15")

    code, output = run_plugin(tmp_path, no_nvml(tmp_path), tmp_path / "driver", None)

    assert code == 2, output
    assert f"refusing to start: NVIDIA driver 570.86.15 on node gb200-n07 (read from {library}" in output
    assert NO_CREDENTIALS not in output


def test_without_nvml_or_library_the_plugin_starts_as_before(tmp_path: Path) -> None:
    (tmp_path / "driver").mkdir()

    code, output = run_plugin(tmp_path, no_nvml(tmp_path), tmp_path / "driver", None)

    assert "NVIDIA driver version unknown" in output
    assert "refusing to start" not in output
    assert NO_CREDENTIALS in output, output
    assert code == 2
