"""`make gpu-check` on a machine without NVIDIA's driver: one clear sentence and a non-zero exit.

The same target on a GPU node (here: the fake NVML library) is covered in test_fake_nvml.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cdtestbed.tools import repo_root

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="no `make` on PATH")
NO_DRIVER = (
    "gpu-check: no NVIDIA GPU driver on this machine: libnvidia-ml.so.1 (NVML) cannot be loaded, so there "
    "are no GPUs to check. Run it on a node with NVIDIA GPUs and their driver installed."
)


def _has_nvml(library_path: Path) -> bool:
    probe = "import ctypes; ctypes.CDLL('libnvidia-ml.so.1')"
    env = {**os.environ, "LD_LIBRARY_PATH": str(library_path)}
    return (
        subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, check=False).returncode
        == 0
    )


def test_the_make_target_runs_the_script() -> None:
    makefile = (repo_root() / "Makefile").read_text()
    assert "\ngpu-check: ## " in makefile
    assert "\n\tscripts/gpu-check.sh\n" in makefile.partition("\ngpu-check: ")[2]


@needs_make
def test_gpu_check_without_a_driver_says_so_and_fails(tmp_path: Path) -> None:
    if _has_nvml(tmp_path):
        pytest.skip("this machine has a real libnvidia-ml.so.1, so it cannot play one without a driver")
    env = {**os.environ, "LD_LIBRARY_PATH": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(
        ["make", "--no-print-directory", "gpu-check"],
        cwd=repo_root(),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert NO_DRIVER in done.stderr.splitlines()
    assert done.stdout.strip() == "scripts/gpu-check.sh"
