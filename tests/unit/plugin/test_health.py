"""Device health from the NVLink fabric state that NVML reports."""

from __future__ import annotations

import pytest

from computedomain.nvml import reading as nvml
from computedomain.nvml.gpus import FabricInfo, FabricState, GpuInfo, NodeGpus, NvmlCallError, NvmlStatus
from computedomain.plugin.health import NvmlHealth
from computedomain.plugin.kubelet.health import Health, HealthMonitor

CLUSTER = "7d9c0f3e-1111-4222-8333-944455556666"


def _gpus(state: FabricState, status: int = 0) -> NodeGpus:
    fabric = FabricInfo(state=state, status=status, cluster_uuid=CLUSTER, clique_id=3)
    return NodeGpus(
        status=NvmlStatus.OK, gpus=tuple(GpuInfo(index=i, uuid=f"GPU-{i}", fabric=fabric) for i in range(4))
    )


@pytest.mark.parametrize(
    ("reading", "status"),
    [
        (_gpus(FabricState.COMPLETED), "HEALTHY"),
        (NodeGpus(status=NvmlStatus.OK), "HEALTHY"),  # no GPUs: nothing is broken
        (_gpus(FabricState.COMPLETED, status=999), "UNHEALTHY"),  # registration failed
        (_gpus(FabricState.IN_PROGRESS), "UNHEALTHY"),
        (NodeGpus(status=NvmlStatus.MISSING, error=NvmlCallError("nvmlInit", 12, "not found")), "UNKNOWN"),
    ],
)
def test_fabric_state_decides_health(monkeypatch: pytest.MonkeyPatch, reading: NodeGpus, status: str) -> None:
    monkeypatch.setattr(nvml.PynvmlSource, "read", lambda self: reading)
    health = NvmlHealth().check()
    assert health.status == status
    if status != "HEALTHY":
        assert health.message


async def test_monitor_notifies_only_on_change() -> None:
    readings = iter(
        [
            Health("HEALTHY"),
            Health("HEALTHY"),
            Health("UNHEALTHY", "fabric down"),
            Health("UNHEALTHY", "fabric down"),
        ]
    )

    class Source:
        def check(self) -> Health:
            return next(readings)

    monitor = HealthMonitor(Source(), interval=60)
    versions = []
    for _ in range(4):
        await monitor.check_once()
        versions.append(monitor.changes.version)
    assert versions == [1, 1, 2, 2]
    assert monitor.current.message == "fabric down"


async def test_a_failing_source_means_unknown() -> None:
    class Broken:
        def check(self) -> Health:
            raise RuntimeError("driver reloading")

    monitor = HealthMonitor(Broken(), interval=60)
    assert (await monitor.check_once()).status == "UNKNOWN"
    assert "driver reloading" in monitor.current.message
