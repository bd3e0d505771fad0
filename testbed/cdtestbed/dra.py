"""Dynamic Resource Allocation set-up of the test bed, built on `computedomain.dra`.

With no kubelet here, `publish_slices` plays the ComputeDomain kubelet plugin's part (a test double,
named as such): it publishes the slices `computedomain.dra.slices` renders for each node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from computedomain.dra.deviceclasses import device_classes
from computedomain.dra.slices import resource_slices
from computedomain.dra.versions import RESOURCE_GROUP


async def _create(api: client.ApiClient, plural: str, body: dict[str, Any], version: str) -> None:
    custom = client.CustomObjectsApi(api)
    try:
        await custom.create_cluster_custom_object(RESOURCE_GROUP, version, plural, body)
    except ApiException as error:
        if error.status != 409:
            raise


async def install_device_classes(api: client.ApiClient, version: str = "v1") -> None:
    """Create the DeviceClasses (existing ones are kept)."""
    for device_class in device_classes(version):
        await _create(api, "deviceclasses", device_class, version)


async def publish_slices(api: client.ApiClient, nodes: Iterable[str], version: str = "v1") -> None:
    """Kubelet-plugin double: publish each node's ResourceSlices (existing ones are kept)."""
    await asyncio.gather(
        *(
            _create(api, "resourceslices", body, version)
            for node in nodes
            for body in resource_slices(node, version)
        )
    )
