"""derive_clique: which NVLink clique a node is in, from one NVML reading."""

from __future__ import annotations

import pytest

from computedomain.nvml.clique import CliqueResult, Reason, clique_of, derive_clique
from computedomain.nvml.gpus import FabricInfo, FabricState, GpuInfo, NodeGpus, NvmlCallError, NvmlStatus

CLUSTER = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22"
OTHER_CLUSTER = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
ZERO = "00000000-0000-0000-0000-000000000000"
CLIQUE = f"{CLUSTER}.32766"


def fabric(
    state: FabricState = FabricState.COMPLETED, status: int = 0, cluster: str = CLUSTER, clique: int = 32766
) -> FabricInfo:
    return FabricInfo(state=state, status=status, cluster_uuid=cluster, clique_id=clique)


def gpu(index: int, info: FabricInfo | None = None, error: NvmlCallError | None = None) -> GpuInfo:
    return GpuInfo(index=index, uuid=f"GPU-{index}", name="NVIDIA GB200", fabric=info, error=error)


def node(*gpus: GpuInfo) -> NodeGpus:
    return NodeGpus(status=NvmlStatus.OK, driver_version="580.82.07", gpus=gpus)


def tray(info: FabricInfo | None = None) -> list[GpuInfo]:
    """A GB200 compute tray: four GPUs with the same fabric info."""
    return [gpu(i, info or fabric()) for i in range(4)]


def test_healthy_gb200_tray_is_in_one_clique() -> None:
    result = derive_clique(node(*tray()))
    assert result.clique_id == CLIQUE
    assert result.reason is Reason.CLIQUE_FOUND
    assert result.fabric_gpus == 4
    assert result.problems == []
    assert not result.is_problem
    assert not result.is_transient
    assert CLIQUE in result.message


def test_clique_string_is_cluster_uuid_dot_decimal_clique_id() -> None:
    assert clique_of(CLUSTER, 7) == f"{CLUSTER}.7"
    assert derive_clique(node(gpu(0, fabric(clique=0)))).clique_id == f"{CLUSTER}.0"


def test_gpus_disagreeing_on_clique_id_give_no_clique() -> None:
    gpus = tray()
    gpus[2] = gpu(2, fabric(clique=7))
    result = derive_clique(node(*gpus))
    assert result.clique_id is None
    assert result.reason is Reason.CLIQUES_DISAGREE
    assert result.is_problem
    assert f"{CLUSTER}.7 (GPU 2)" in result.message
    assert f"{CLIQUE} (GPUs 0, 1, 3)" in result.message


def test_gpus_disagreeing_on_cluster_uuid_give_no_clique() -> None:
    result = derive_clique(node(gpu(0, fabric()), gpu(1, fabric(cluster=OTHER_CLUSTER))))
    assert result.reason is Reason.CLIQUES_DISAGREE
    assert OTHER_CLUSTER in result.message


@pytest.mark.parametrize("state", [FabricState.IN_PROGRESS, FabricState.NOT_STARTED])
def test_registration_not_finished_on_one_gpu_gives_no_clique_yet(state: FabricState) -> None:
    gpus = tray()
    gpus[1] = gpu(1, fabric(state=state, cluster=ZERO, clique=0))
    result = derive_clique(node(*gpus))
    assert result.clique_id is None
    assert result.reason is Reason.REGISTRATION_IN_PROGRESS
    assert result.is_transient
    assert not result.is_problem
    assert "GPU 1" in result.message
    assert state.label.replace("_", " ") in result.message


def test_registration_in_progress_on_every_gpu_is_not_mistaken_for_no_fabric() -> None:
    # Before registration completes NVML reports a zero cluster UUID; that must not read as "no fabric".
    result = derive_clique(node(*tray(fabric(state=FabricState.IN_PROGRESS, cluster=ZERO, clique=0))))
    assert result.reason is Reason.REGISTRATION_IN_PROGRESS


def test_registration_failed_reports_the_status() -> None:
    gpus = tray()
    gpus[3] = gpu(3, fabric(status=999))
    result = derive_clique(node(*gpus))
    assert result.clique_id is None
    assert result.reason is Reason.REGISTRATION_FAILED
    assert "status 999" in result.message
    assert "GPU 3" in result.message
    assert result.is_problem
    assert not result.is_transient


def test_failure_outranks_in_progress_and_all_are_listed() -> None:
    result = derive_clique(
        node(gpu(0, fabric(status=3)), gpu(1, fabric(state=FabricState.IN_PROGRESS)), gpu(2, fabric()))
    )
    assert result.reason is Reason.REGISTRATION_FAILED
    assert len(result.problems) == 2
    assert any("in progress" in p for p in result.problems)


def test_disagreement_outranks_in_progress() -> None:
    result = derive_clique(
        node(gpu(0, fabric()), gpu(1, fabric(clique=9)), gpu(2, fabric(state=FabricState.IN_PROGRESS)))
    )
    assert result.reason is Reason.CLIQUES_DISAGREE


def test_pcie_gpus_without_fabric_support_mean_no_fabric() -> None:
    result = derive_clique(node(gpu(0, None), gpu(1, None)))
    assert result.clique_id is None
    assert result.reason is Reason.NO_FABRIC
    assert not result.is_problem
    assert not result.is_transient
    assert result.problems == []


def test_state_not_supported_means_not_fabric_attached() -> None:
    result = derive_clique(node(gpu(0, fabric(state=FabricState.NOT_SUPPORTED, status=3, cluster=ZERO))))
    assert result.reason is Reason.NO_FABRIC


def test_zero_cluster_uuid_means_nvlink_but_not_multi_node() -> None:
    result = derive_clique(node(*tray(fabric(cluster=ZERO, clique=0))))
    assert result.reason is Reason.NO_FABRIC
    assert result.clique_id is None


def test_gpus_that_are_not_fabric_attached_do_not_block_the_others() -> None:
    result = derive_clique(
        node(gpu(0, fabric()), gpu(1, None), gpu(2, fabric(cluster=ZERO)), gpu(3, fabric()))
    )
    assert result.clique_id == CLIQUE
    assert result.fabric_gpus == 2
    assert "GPUs 0, 3" in result.message


def test_node_without_gpus() -> None:
    result = derive_clique(node())
    assert result.reason is Reason.NO_GPUS
    assert result.clique_id is None


def test_per_gpu_call_failure_gives_no_clique_and_a_quick_recheck() -> None:
    lost = NvmlCallError("nvmlDeviceGetGpuFabricInfoV", 15, "GPU is lost")
    gpus = tray()
    gpus[0] = gpu(0, error=lost)
    result = derive_clique(node(*gpus))
    assert result.clique_id is None
    assert result.reason is Reason.NVML_CALL_FAILED
    assert result.is_problem
    assert result.is_transient
    assert "GPU is lost (15)" in result.message


def test_node_wide_call_failure() -> None:
    error = NvmlCallError("nvmlDeviceGetCount", 999, "Unknown Error")
    result = derive_clique(NodeGpus(status=NvmlStatus.OK, error=error))
    assert result.reason is Reason.NVML_CALL_FAILED
    assert "nvmlDeviceGetCount" in result.message


@pytest.mark.parametrize(
    ("status", "code", "text"),
    [
        (NvmlStatus.MISSING, 12, "NVML Shared Library Not Found"),
        (NvmlStatus.INIT_FAILED, 9, "Driver Not Loaded"),
    ],
)
def test_nvml_unavailable(status: NvmlStatus, code: int, text: str) -> None:
    result = derive_clique(NodeGpus(status=status, error=NvmlCallError("nvmlInit", code, text)))
    assert result == CliqueResult(
        None, Reason.NVML_UNAVAILABLE, result.message, [f"nvmlInit: {text} ({code})"]
    )
    assert text in result.message
    # Steady state on a node without a driver: neither a fault nor worth a quick recheck.
    assert not result.is_problem
    assert not result.is_transient


def test_reasons_are_camel_case_words() -> None:
    for reason in Reason:
        assert reason.value[0].isupper()
        assert reason.value.isalnum()
