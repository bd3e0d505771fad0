"""Prometheus metrics of the node agent (served on /metrics by `computedomain.endpoints`).

What the last check found (each GPU's fabric state and clique, the node's clique) is read at scrape
time from that check, so that a GPU or a clique that went away leaves no series behind.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import REGISTRY, Counter, Metric
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from computedomain.nvml.clique import CliqueResult, clique_of
from computedomain.nvml.gpus import FabricState, NodeGpus

CHECKS = Counter("computedomain_agent_checks_total", "NVML checks of this node's GPUs.")
LABEL_WRITES = Counter(
    "computedomain_agent_label_writes_total",
    "Writes of the Node's nvidia.com/gpu.clique label, by result (ok, error).",
    ["result"],
)


def families(gpus: NodeGpus, result: CliqueResult) -> list[Metric]:
    """The gauges of one check: per GPU its fabric state and clique, and the node's clique."""
    state = GaugeMetricFamily(
        "computedomain_agent_gpu_fabric_state",
        "NVLink fabric registration state of each GPU, as NVML numbers it: 0 not supported, 1 not "
        "started, 2 in progress, 3 completed. GPUs whose NVML calls failed are left out.",
        labels=["gpu", "uuid"],
    )
    gpu_clique = GaugeMetricFamily(
        "computedomain_agent_gpu_clique_info",
        "1 for each GPU whose fabric registration completed, labelled with the clique it reports "
        "(<clusterUUID>.<cliqueId>).",
        labels=["gpu", "uuid", "clique"],
    )
    node_clique = GaugeMetricFamily(
        "computedomain_agent_clique_info",
        "1, labelled with the clique the agent derived for this node ('' when none) and why.",
        labels=["clique", "reason"],
    )
    for gpu in gpus.gpus:
        if gpu.error is not None:
            continue
        labels = [str(gpu.index), gpu.uuid]
        fabric = gpu.fabric
        state.add_metric(labels, float(fabric.state if fabric is not None else FabricState.NOT_SUPPORTED))
        if fabric is not None and fabric.state is FabricState.COMPLETED:
            gpu_clique.add_metric([*labels, clique_of(fabric.cluster_uuid, fabric.clique_id)], 1.0)
    node_clique.add_metric([result.clique_id or "", str(result.reason)], 1.0)
    return [state, gpu_clique, node_clique]


class CheckCollector(Collector):
    """The gauges of `families`, from the last check recorded; none before the first."""

    def __init__(self) -> None:
        self.last: tuple[NodeGpus, CliqueResult] | None = None

    def record(self, gpus: NodeGpus, result: CliqueResult) -> None:
        """One check's findings, which the next scrape reports."""
        CHECKS.inc()
        self.last = (gpus, result)

    def collect(self) -> Iterable[Metric]:
        """The families of the last check."""
        return families(*self.last) if self.last is not None else []


LAST_CHECK = CheckCollector()
REGISTRY.register(LAST_CHECK)
