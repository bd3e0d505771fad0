"""The agent's report of one check, as JSON-ready data and as text for people (pure)."""

from __future__ import annotations

from typing import Any

from computedomain.nvml.clique import CliqueResult
from computedomain.nvml.gpus import FabricInfo, GpuInfo, NodeGpus, NvmlCallError


def _error(error: NvmlCallError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {"call": error.call, "code": error.code, "message": error.message}


def _fabric(fabric: FabricInfo | None) -> dict[str, Any] | None:
    if fabric is None:
        return None
    return {
        "state": fabric.state.label,
        "status": fabric.status,
        "clusterUuid": fabric.cluster_uuid,
        "cliqueId": fabric.clique_id,
        "healthMask": fabric.health_mask,
        "call": fabric.call,
    }


def _gpu(gpu: GpuInfo) -> dict[str, Any]:
    return {
        "index": gpu.index,
        "uuid": gpu.uuid,
        "name": gpu.name,
        "fabric": _fabric(gpu.fabric),
        "error": _error(gpu.error),
    }


def render_report(node: str, gpus: NodeGpus, result: CliqueResult) -> dict[str, Any]:
    """Everything one check found, in a stable JSON shape (camelCase keys)."""
    return {
        "node": node,
        "nvml": {
            "status": gpus.status.value,
            "driverVersion": gpus.driver_version,
            "error": _error(gpus.error),
        },
        "gpus": [_gpu(gpu) for gpu in gpus.gpus],
        "clique": {
            "id": result.clique_id,
            "reason": str(result.reason),
            "message": result.message,
            "problems": list(result.problems),
            "fabricGpus": result.fabric_gpus,
        },
    }


def _fabric_text(gpu: GpuInfo) -> str:
    if gpu.error is not None:
        return f"error {gpu.error.describe()}"
    fabric = gpu.fabric
    if fabric is None:
        return "fabric not supported"
    text = (
        f"fabric {fabric.state.label} status={fabric.status} clique={fabric.cluster_uuid}.{fabric.clique_id}"
    )
    return f"{text} ({fabric.call} call)"


def render_text(node: str, gpus: NodeGpus, result: CliqueResult) -> str:
    """The same report as a few lines for a terminal."""
    lines = [f"node: {node or '-'}", f"nvml: {gpus.status.value}"]
    if gpus.driver_version:
        lines.append(f"driver: {gpus.driver_version}")
    if gpus.error is not None:
        lines.append(f"nvml error: {gpus.error.describe()}")
    for gpu in gpus.gpus:
        lines.append(f"gpu {gpu.index}: {gpu.name or '?'} {gpu.uuid or '?'} {_fabric_text(gpu)}")
    lines.append(f"clique: {result.clique_id or '(none)'}")
    lines.append(f"reason: {result.reason}: {result.message}")
    lines.extend(f"problem: {problem}" for problem in result.problems)
    return "\n".join(lines)
