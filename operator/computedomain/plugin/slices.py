"""This node's ResourceSlice (pure): the devices the scheduler may allocate from this node.

As NVIDIA's plugin does, the node publishes one IMEX channel (`channel-0`) and one daemon slot
(`daemon-0`), each with attributes `type` and `id`, in a pool named after the node and owned by the
Node, so the slice goes away with it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from computedomain.api import names
from computedomain.kube.contains import contains

RESOURCE_GROUP = "resource.k8s.io"
# Preference order: v1 (Kubernetes 1.34+), v1beta2 (1.33), v1beta1 (1.32).
RESOURCE_VERSIONS = ("v1", "v1beta2", "v1beta1")
DEVICES = (("channel-0", "channel"), ("daemon-0", "daemon"))


def pick_resource_version(served: Iterable[str]) -> str | None:
    """The most preferred `resource.k8s.io` version among those served, or None."""
    available = {version.rpartition("/")[2] for version in served}
    return next((version for version in RESOURCE_VERSIONS if version in available), None)


def slice_name(node: str) -> str:
    """The name of the node's slice of our driver."""
    return f"{names.DRIVER}-{node}"


def _device(name: str, kind: str, version: str) -> dict[str, Any]:
    attributes = {"type": {"string": kind}, "id": {"int": 0}}
    # v1beta1 wraps a device's attributes in `basic`; v1beta2 and v1 do not.
    if version == "v1beta1":
        return {"name": name, "basic": {"attributes": attributes}}
    return {"name": name, "attributes": attributes}


def render_slice(node: str, node_uid: str, version: str, generation: int = 1) -> dict[str, Any]:
    """The complete ResourceSlice of `node` in `resource.k8s.io/<version>`."""
    return {
        "apiVersion": f"{RESOURCE_GROUP}/{version}",
        "kind": "ResourceSlice",
        "metadata": {
            "name": slice_name(node),
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}],
        },
        "spec": {
            "driver": names.DRIVER,
            "nodeName": node,
            "pool": {"name": node, "generation": generation, "resourceSliceCount": 1},
            "devices": [_device(name, kind, version) for name, kind in DEVICES],
        },
    }


def matches(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """True when the published slice holds everything we would publish (pool generation aside)."""
    if current is None or current.get("metadata", {}).get("deletionTimestamp"):
        return False
    wanted = copy.deepcopy(dict(desired))
    wanted["spec"]["pool"].pop("generation", None)
    return contains(current, wanted)
