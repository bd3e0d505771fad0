"""The agent's `--once` report through the real pynvml, loading a fake `libnvidia-ml.so.1` per run.

pynvml keeps the library it loaded for the life of a process, so every configuration runs the agent in
its own subprocess (LD_LIBRARY_PATH points the loader at the fake); one test keeps a single agent
process running while the "hardware" changes, through NVML's own init/shutdown cycle.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakenvml.build import build_fake_nvml, compiler
from fakenvml.config import (
    DEFAULT_CLUSTER_UUID,
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_GPU_IS_LOST,
    FakeGpu,
    FakeGpuNode,
    default_gpu_uuid,
)

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "fakenvml"
RUN_TIMEOUT = 60
AGENT = (sys.executable, "-m", "computedomain.agent")

needs_cc = pytest.mark.skipif(compiler() is None, reason="no C compiler (cc) to build the fake NVML library")


@pytest.fixture(scope="session")
def fake_lib() -> Path:
    """Folder holding the fake `libnvidia-ml.so.1`."""
    return build_fake_nvml(CACHE / "current").parent


@pytest.fixture(scope="session")
def legacy_lib() -> Path:
    """Folder holding a fake library without `nvmlDeviceGetGpuFabricInfoV`, like an older driver."""
    return build_fake_nvml(CACHE / "legacy", versioned_fabric=False).parent


def agent_env(lib_dir: Path, config: Path | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"REQUIRE_NVML", "NODE_NAME", "LOG_FORMAT"}}
    env["LD_LIBRARY_PATH"] = str(lib_dir)
    env["PYTHONPATH"] = str(REPO / "operator")
    if config is not None:
        env["FAKE_NVML_CONFIG"] = str(config)
    env.update(extra)
    return env


def run_once(
    lib_dir: Path, config: Path | None, *args: str, **env: str
) -> tuple[int, dict[str, Any] | None, str]:
    """Run `--once --no-kube --json`; return the exit code, the parsed report (if any) and stderr."""
    proc = subprocess.run(
        [*AGENT, "--once", "--no-kube", "--json", *args],
        env=agent_env(lib_dir, config, **env),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    report = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, report, proc.stderr


@pytest.fixture
def node_file(tmp_path: Path) -> Path:
    return tmp_path / "node.cfg"


@needs_cc
def test_healthy_gb200_tray(fake_lib: Path, node_file: Path) -> None:
    node = FakeGpuNode()
    code, report, _ = run_once(fake_lib, node.write(node_file))
    assert code == 0
    assert report is not None
    assert report["clique"]["id"] == node.clique == f"{DEFAULT_CLUSTER_UUID}.32766"
    assert report["clique"]["reason"] == "CliqueFound"
    assert report["nvml"] == {"status": "ok", "driverVersion": "580.82.07", "error": None}
    assert [g["uuid"] for g in report["gpus"]] == [default_gpu_uuid(i) for i in range(4)]
    assert {g["name"] for g in report["gpus"]} == {"NVIDIA GB200"}
    assert {g["fabric"]["call"] for g in report["gpus"]} == {"v3"}
    assert {g["fabric"]["state"] for g in report["gpus"]} == {"completed"}


@needs_cc
def test_gpus_that_disagree(fake_lib: Path, node_file: Path) -> None:
    node = FakeGpuNode(overrides={2: FakeGpu(clique_id=7)})
    code, report, _ = run_once(fake_lib, node.write(node_file))
    assert code == 1
    assert report is not None
    assert report["clique"]["id"] is None
    assert report["clique"]["reason"] == "CliquesDisagree"
    assert f"{DEFAULT_CLUSTER_UUID}.7 (GPU 2)" in report["clique"]["message"]


@needs_cc
def test_registration_in_progress_then_completed(fake_lib: Path, node_file: Path) -> None:
    FakeGpuNode(state="in_progress", cluster_uuid="zero", clique_id=0).write(node_file)
    code, report, _ = run_once(fake_lib, node_file)
    assert code == 0
    assert report is not None
    assert report["clique"]["id"] is None
    assert report["clique"]["reason"] == "RegistrationInProgress"

    node = FakeGpuNode().write(node_file)
    code, report, _ = run_once(fake_lib, node)
    assert code == 0
    assert report is not None
    assert report["clique"]["reason"] == "CliqueFound"


@needs_cc
def test_registration_failed(fake_lib: Path, node_file: Path) -> None:
    node = FakeGpuNode(overrides={3: FakeGpu(status=999)})
    code, report, _ = run_once(fake_lib, node.write(node_file))
    assert code == 1
    assert report is not None
    assert report["clique"]["reason"] == "RegistrationFailed"
    assert "status 999" in report["clique"]["message"]
    assert report["gpus"][3]["fabric"]["status"] == 999


@needs_cc
def test_no_fabric_like_h100_pcie(fake_lib: Path, node_file: Path) -> None:
    node = FakeGpuNode(gpus=2, name="NVIDIA H100 PCIe", fabric=False)
    code, report, _ = run_once(fake_lib, node.write(node_file))
    assert code == 0
    assert report is not None
    assert report["clique"] == {
        "id": None,
        "reason": "NoFabric",
        "message": "none of the 2 GPUs is in a multi-node NVLink fabric",
        "problems": [],
        "fabricGpus": 0,
    }
    assert [g["fabric"] for g in report["gpus"]] == [None, None]


@needs_cc
def test_gpu_lost_during_fabric_query(fake_lib: Path, node_file: Path) -> None:
    node = FakeGpuNode(overrides={1: FakeGpu(fabric_error=NVML_ERROR_GPU_IS_LOST)})
    code, report, _ = run_once(fake_lib, node.write(node_file))
    assert code == 1
    assert report is not None
    assert report["clique"]["reason"] == "NvmlCallFailed"
    assert report["gpus"][1]["error"]["code"] == NVML_ERROR_GPU_IS_LOST


@needs_cc
def test_init_failure_exits_2_with_one_clear_line(fake_lib: Path, node_file: Path) -> None:
    node = FakeGpuNode(init_error=NVML_ERROR_DRIVER_NOT_LOADED)
    code, report, stderr = run_once(fake_lib, node.write(node_file))
    assert code == 2
    assert report is None
    lines = stderr.strip().splitlines()
    assert len(lines) == 1
    assert "NVML is required but not usable: nvmlInit: Driver Not Loaded (9)" in lines[0]


@needs_cc
def test_init_failure_without_requirement_is_no_gpu_mode(fake_lib: Path, node_file: Path) -> None:
    node = FakeGpuNode(init_error=NVML_ERROR_DRIVER_NOT_LOADED)
    code, report, _ = run_once(fake_lib, node.write(node_file), REQUIRE_NVML="false")
    assert code == 0
    assert report is not None
    assert report["nvml"]["status"] == "initFailed"
    assert report["clique"]["reason"] == "NvmlUnavailable"
    assert report["gpus"] == []


def _system_has_nvml(empty: Path) -> bool:
    probe = "import ctypes; ctypes.CDLL('libnvidia-ml.so.1')"
    env = {**os.environ, "LD_LIBRARY_PATH": str(empty)}
    return (
        subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, check=False).returncode
        == 0
    )


def test_nvml_library_missing(tmp_path: Path) -> None:
    empty = tmp_path / "no-nvml"
    empty.mkdir()
    if _system_has_nvml(empty):
        pytest.skip("this machine has a real libnvidia-ml.so.1, so the library cannot be made missing")
    code, report, stderr = run_once(empty, None)
    assert code == 2
    assert "NVML Shared Library Not Found" in stderr

    code, report, _ = run_once(empty, None, "--no-require-nvml")
    assert code == 0
    assert report is not None
    assert report["nvml"]["status"] == "missing"
    assert report["clique"]["reason"] == "NvmlUnavailable"


@needs_cc
@pytest.mark.parametrize(
    ("node", "call"),
    [(FakeGpuNode(fabric_v=False), "legacy"), (FakeGpuNode(fabric_v_max=2), "v2")],
    ids=["versioned-call-unavailable", "driver-knows-only-v2"],
)
def test_older_fabric_calls(fake_lib: Path, node_file: Path, node: FakeGpuNode, call: str) -> None:
    code, report, _ = run_once(fake_lib, node.write(node_file))
    assert code == 0
    assert report is not None
    assert report["clique"]["id"] == node.clique
    assert {g["fabric"]["call"] for g in report["gpus"]} == {call}


@needs_cc
def test_library_without_versioned_symbol(legacy_lib: Path, node_file: Path) -> None:
    node = FakeGpuNode(clique_id=5)
    code, report, _ = run_once(legacy_lib, node.write(node_file))
    assert code == 0
    assert report is not None
    assert report["clique"]["id"] == f"{DEFAULT_CLUSTER_UUID}.5"
    assert {g["fabric"]["call"] for g in report["gpus"]} == {"legacy"}
    assert {g["fabric"]["healthMask"] for g in report["gpus"]} == {None}


@needs_cc
def test_gpu_check_script(fake_lib: Path, node_file: Path) -> None:
    node = FakeGpuNode().write(node_file)
    proc = subprocess.run(
        [str(REPO / "scripts" / "gpu-check.sh")],
        env={**agent_env(fake_lib, node), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"clique: {DEFAULT_CLUSTER_UUID}.32766" in proc.stdout
    assert "gpu 3: NVIDIA GB200" in proc.stdout


def _lines(stream: Any) -> Iterator[str]:
    yield from iter(stream.readline, "")


@needs_cc
def test_one_process_sees_the_hardware_change(fake_lib: Path, node_file: Path) -> None:
    """A running agent re-initialises NVML on every check, so it notices registration completing."""
    FakeGpuNode(state="in_progress").write(node_file)
    proc = subprocess.Popen(
        [*AGENT, "--no-kube", "--json", "--interval", "3600", "--retry-interval", "0.05"],
        env=agent_env(fake_lib, node_file),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    reports: queue.Queue[dict[str, Any]] = queue.Queue()

    def pump() -> None:
        for line in _lines(proc.stdout):
            reports.put(json.loads(line))

    threading.Thread(target=pump, daemon=True).start()
    try:
        first = reports.get(timeout=RUN_TIMEOUT)
        assert first["clique"]["reason"] == "RegistrationInProgress"
        FakeGpuNode().write(node_file)
        deadline = time.monotonic() + RUN_TIMEOUT
        reasons = [first["clique"]["reason"]]
        while reasons[-1] != "CliqueFound":
            reasons.append(reports.get(timeout=max(0.0, deadline - time.monotonic()))["clique"]["reason"])
        assert set(reasons) == {"RegistrationInProgress", "CliqueFound"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=RUN_TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
