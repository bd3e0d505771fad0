"""Fake GPU nodes shaped like GB200 NVL72 compute trays, run by KWOK.

Each rack is one NVLink clique of `nodes_per_rack` trays with 4 GPUs each. Nodes without an NVLink
fabric (H100 PCIe-like) carry GPUs but no clique label.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from computedomain.api import names

FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
NODES_PER_RACK = 18
GPUS_PER_TRAY = 4
CLIQUE_NUMBER = 32766
_UUID_NAMESPACE = uuid.UUID("8b5a2f9e-2a8c-4f55-9c1e-0c2d9e4b7a10")


@dataclass(frozen=True)
class FakeNode:
    """One fake node: its name, its clique ID ("" for no NVLink fabric) and its GPU product."""

    name: str
    clique_id: str
    product: str
    gpus: int = GPUS_PER_TRAY
    extra_labels: dict[str, str] = field(default_factory=dict)


def rack_clique_id(rack: int) -> str:
    """The clique ID `<clusterUUID>.<cliqueId>` of rack `rack`, stable across runs."""
    return f"{uuid.uuid5(_UUID_NAMESPACE, f'rack-{rack}')}.{CLIQUE_NUMBER}"


def nvl72_racks(racks: int, nodes_per_rack: int = NODES_PER_RACK, prefix: str = "gb200") -> list[FakeNode]:
    """`racks` racks of GB200 trays, named `<prefix>-r<rack>-n<slot>`."""
    return [
        FakeNode(f"{prefix}-r{rack}-n{slot:02d}", rack_clique_id(rack), "NVIDIA-GB200")
        for rack in range(racks)
        for slot in range(nodes_per_rack)
    ]


def plain_gpu_nodes(count: int, prefix: str = "h100") -> list[FakeNode]:
    """GPU nodes without a multi-node NVLink fabric."""
    return [FakeNode(f"{prefix}-n{i:02d}", "", "NVIDIA-H100-PCIe", gpus=8) for i in range(count)]


def node_manifest(node: FakeNode) -> dict[str, Any]:
    """The Node object KWOK manages for `node` (status is accepted on create for Nodes)."""
    labels = {
        "kubernetes.io/arch": "arm64" if "GB200" in node.product else "amd64",
        "kubernetes.io/os": "linux",
        "kubernetes.io/hostname": node.name,
        "type": "kwok",
        names.GPU_PRESENT_LABEL: "true",
        names.GPU_PRODUCT_LABEL: node.product,
        names.GPU_COUNT_LABEL: str(node.gpus),
        **node.extra_labels,
    }
    if node.clique_id:
        labels[names.GPU_CLIQUE_LABEL] = node.clique_id
    resources = {
        "cpu": "144",
        "memory": "880Gi",
        "pods": "110",
        "ephemeral-storage": "1Ti",
        "nvidia.com/gpu": str(node.gpus),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": labels,
            "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "status": {"allocatable": resources, "capacity": resources},
    }
