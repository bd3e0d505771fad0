"""Converting pynvml's fabric-info structs (no NVML library needed for these)."""

from __future__ import annotations

import ctypes
import uuid
from typing import Any

import pynvml
import pytest

from computedomain.nvml.gpus import FabricState
from computedomain.nvml.reading import cluster_uuid_string, fabric_info_from_struct

RAW = bytes.fromhex("7d3b0f5e2c414e8eb8a75a3c1e9d0b22")


def fill(info: Any, state: int, status: int = 0, clique: int = 32766) -> Any:
    """Fill a pynvml fabric-info struct as the library would."""
    info.clusterUuid[:] = list(RAW)
    info.state = state
    info.status = status
    info.cliqueId = clique
    return info


def test_cluster_uuid_is_canonical_big_endian_text() -> None:
    assert cluster_uuid_string(RAW) == "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22"
    assert cluster_uuid_string(bytes(16)) == str(uuid.UUID(int=0))


@pytest.mark.parametrize(
    ("struct_name", "call", "has_health"),
    [
        ("c_nvmlGpuFabricInfo_v3_t", "v3", True),
        ("c_nvmlGpuFabricInfo_v2_t", "v2", True),
        ("c_nvmlGpuFabricInfo_t", "legacy", False),
    ],
)
def test_every_struct_layout_converts(struct_name: str, call: str, has_health: bool) -> None:
    info = fill(getattr(pynvml, struct_name)(), pynvml.NVML_GPU_FABRIC_STATE_COMPLETED, 0, 32766)
    fabric = fabric_info_from_struct(info, call)
    assert fabric.state is FabricState.COMPLETED
    assert fabric.cluster_uuid == "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22"
    assert (fabric.clique_id, fabric.status, fabric.call) == (32766, 0, call)
    assert (fabric.health_mask is not None) is has_health
    assert not fabric.cluster_uuid_is_zero


def test_versioned_structs_carry_their_version() -> None:
    # The library checks this field; a wrong value would be rejected as a version mismatch.
    assert pynvml.c_nvmlGpuFabricInfo_v2_t().version == 0x02000024
    assert pynvml.c_nvmlGpuFabricInfo_v3_t().version == 0x03000028
    assert ctypes.sizeof(pynvml.c_nvmlGpuFabricInfo_v3_t) == 0x28
    assert ctypes.sizeof(pynvml.c_nvmlGpuFabricInfo_t) == 28


def test_state_values_match_nvml() -> None:
    assert [s.value for s in FabricState] == [
        pynvml.NVML_GPU_FABRIC_STATE_NOT_SUPPORTED,
        pynvml.NVML_GPU_FABRIC_STATE_NOT_STARTED,
        pynvml.NVML_GPU_FABRIC_STATE_IN_PROGRESS,
        pynvml.NVML_GPU_FABRIC_STATE_COMPLETED,
    ]


def test_unknown_future_state_is_treated_as_not_completed() -> None:
    fabric = fabric_info_from_struct(fill(pynvml.c_nvmlGpuFabricInfo_v3_t(), 42), "v3")
    assert fabric.state is FabricState.IN_PROGRESS


def test_zero_cluster_uuid_is_recognised() -> None:
    info = pynvml.c_nvmlGpuFabricInfo_v3_t()
    info.state = pynvml.NVML_GPU_FABRIC_STATE_COMPLETED
    assert fabric_info_from_struct(info, "v3").cluster_uuid_is_zero
