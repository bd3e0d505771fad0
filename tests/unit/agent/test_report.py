"""The agent's report of one check."""

from __future__ import annotations

import json

from computedomain.agent.report import render_report, render_text
from computedomain.nvml.clique import derive_clique
from computedomain.nvml.gpus import FabricInfo, FabricState, GpuInfo, NodeGpus, NvmlCallError, NvmlStatus

CLUSTER = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22"
FABRIC = FabricInfo(FabricState.IN_PROGRESS, 0, CLUSTER, 32766, health_mask=0, call="v2")
GPUS = NodeGpus(
    NvmlStatus.OK,
    "580.82.07",
    (
        GpuInfo(0, "GPU-a", "NVIDIA GB200", FABRIC),
        GpuInfo(1, "GPU-b", "NVIDIA GB200", None),
        GpuInfo(2, "GPU-c", error=NvmlCallError("nvmlDeviceGetName", 15, "GPU is lost")),
    ),
)


def test_json_report_shape() -> None:
    result = derive_clique(GPUS)
    report = render_report("gb200-r1-n03", GPUS, result)
    assert json.loads(json.dumps(report)) == report
    assert report["node"] == "gb200-r1-n03"
    assert report["nvml"] == {"status": "ok", "driverVersion": "580.82.07", "error": None}
    assert report["gpus"][0]["fabric"] == {
        "state": "in_progress",
        "status": 0,
        "clusterUuid": CLUSTER,
        "cliqueId": 32766,
        "healthMask": 0,
        "call": "v2",
    }
    assert report["gpus"][1]["fabric"] is None
    assert report["gpus"][2]["error"] == {"call": "nvmlDeviceGetName", "code": 15, "message": "GPU is lost"}
    assert report["clique"]["id"] is None
    assert report["clique"]["reason"] == "NvmlCallFailed"
    assert report["clique"]["problems"] == result.problems


def test_text_report_lists_every_gpu_and_the_reason() -> None:
    text = render_text("gb200-r1-n03", GPUS, derive_clique(GPUS))
    assert "driver: 580.82.07" in text
    assert f"gpu 0: NVIDIA GB200 GPU-a fabric in_progress status=0 clique={CLUSTER}.32766 (v2 call)" in text
    assert "gpu 1: NVIDIA GB200 GPU-b fabric not supported" in text
    assert "gpu 2: ? GPU-c error nvmlDeviceGetName: GPU is lost (15)" in text
    assert "clique: (none)" in text
    assert "reason: NvmlCallFailed:" in text


def test_text_report_without_nvml() -> None:
    gpus = NodeGpus(NvmlStatus.MISSING, error=NvmlCallError("nvmlInit", 12, "NVML Shared Library Not Found"))
    text = render_text("", gpus, derive_clique(gpus))
    assert text.splitlines()[:3] == [
        "node: -",
        "nvml: missing",
        "nvml error: nvmlInit: NVML Shared Library Not Found (12)",
    ]
