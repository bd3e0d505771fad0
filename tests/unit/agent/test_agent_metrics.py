"""The agent's metrics: what one check found, per GPU and for the node, as the next scrape shows it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from computedomain.agent.metrics import CheckCollector, families
from computedomain.nvml.clique import derive_clique
from computedomain.nvml.gpus import FabricInfo, FabricState, GpuInfo, NodeGpus, NvmlCallError, NvmlStatus

CLUSTER = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22"
CLIQUE = f"{CLUSTER}.32766"


def gpu(index: int, state: FabricState) -> GpuInfo:
    return GpuInfo(index, f"GPU-{index}", "NVIDIA GB200", FabricInfo(state, 0, CLUSTER, 32766))


def samples(collector: CheckCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """name and sorted labels -> value, as a scrape of `collector` alone reads them."""
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def families_samples(gpus: NodeGpus) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    return [
        (s.name, tuple(sorted(s.labels.items())))
        for family in families(gpus, derive_clique(gpus))
        for s in family.samples
    ]


def test_each_gpu_reports_its_fabric_state_and_completed_ones_their_clique() -> None:
    gpus = NodeGpus(
        NvmlStatus.OK,
        "580.82.07",
        (
            gpu(0, FabricState.COMPLETED),
            gpu(1, FabricState.IN_PROGRESS),
            GpuInfo(2, "GPU-2", "NVIDIA H100 PCIe", None),
            GpuInfo(3, error=NvmlCallError("nvmlDeviceGetUUID", 15, "GPU is lost")),
        ),
    )
    collector = CheckCollector()
    collector.record(gpus, derive_clique(gpus))

    found = samples(collector)

    state = {labels: value for (name, labels), value in found.items() if name.endswith("fabric_state")}
    assert state == {
        (("gpu", "0"), ("uuid", "GPU-0")): 3.0,
        (("gpu", "1"), ("uuid", "GPU-1")): 2.0,
        # No fabric at all (a PCIe GPU): NVML's "not supported". A GPU NVML failed on is left out.
        (("gpu", "2"), ("uuid", "GPU-2")): 0.0,
    }
    cliques = [labels for (name, labels), _ in found.items() if name == "computedomain_agent_gpu_clique_info"]
    assert cliques == [(("clique", CLIQUE), ("gpu", "0"), ("uuid", "GPU-0"))]
    # One GPU still registering and one lost: the node has no clique yet, and says why.
    [(node, value)] = [
        (labels, v) for (name, labels), v in found.items() if name.endswith("agent_clique_info")
    ]
    assert (dict(node)["clique"], value) == ("", 1.0)
    assert dict(node)["reason"] == str(derive_clique(gpus).reason)


def test_a_healthy_tray_reports_the_nodes_clique() -> None:
    gpus = NodeGpus(NvmlStatus.OK, "580.82.07", tuple(gpu(i, FabricState.COMPLETED) for i in range(4)))
    names = {(name, dict(labels).get("clique")) for name, labels in families_samples(gpus)}
    assert ("computedomain_agent_clique_info", CLIQUE) in names
    assert sum(1 for name, _ in names if name == "computedomain_agent_gpu_clique_info") == 1


def test_nothing_is_reported_before_the_first_check_and_a_gone_gpu_leaves_no_series() -> None:
    collector = CheckCollector()
    assert samples(collector) == {}

    four = NodeGpus(NvmlStatus.OK, "580.82.07", tuple(gpu(i, FabricState.COMPLETED) for i in range(4)))
    collector.record(four, derive_clique(four))
    assert sum(1 for name, _ in samples(collector) if name.endswith("fabric_state")) == 4

    three = NodeGpus(NvmlStatus.OK, "580.82.07", four.gpus[:3])
    collector.record(three, derive_clique(three))
    assert sum(1 for name, _ in samples(collector) if name.endswith("fabric_state")) == 3
