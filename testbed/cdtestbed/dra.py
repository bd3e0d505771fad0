"""Dynamic Resource Allocation pieces of the test bed.

`device_classes` are the two DeviceClasses the Helm chart installs (a unit test keeps them equal to
the chart's). `resource_slice` is what the ComputeDomain kubelet plugin publishes for its node; with
no kubelet here, `publish_slices` plays that plugin's part (a test double, named as such).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from computedomain.api import names

_ATTR = f"device.attributes['{names.DRIVER}']"
DAEMON_SELECTOR = f"device.driver == '{names.DRIVER}' && {_ATTR}.type == 'daemon'"
CHANNEL_SELECTOR = f"device.driver == '{names.DRIVER}' && {_ATTR}.type == 'channel' && {_ATTR}.id == 0"


def device_classes(version: str = "v1") -> list[dict[str, Any]]:
    """The daemon and default-channel DeviceClasses, as the chart renders them for `version`."""
    return [
        {
            "apiVersion": f"resource.k8s.io/{version}",
            "kind": "DeviceClass",
            "metadata": {"name": name},
            "spec": {"selectors": [{"cel": {"expression": expression}}]},
        }
        for name, expression in (
            (names.DAEMON_DEVICE_CLASS, DAEMON_SELECTOR),
            (names.CHANNEL_DEVICE_CLASS, CHANNEL_SELECTOR),
        )
    ]


def _device(name: str, kind: str, version: str) -> dict[str, Any]:
    attributes = {"type": {"string": kind}, "id": {"int": 0}}
    # v1beta1 wraps a device's attributes in `basic`; v1beta2 and v1 do not.
    return (
        {"name": name, "basic": {"attributes": attributes}}
        if version == "v1beta1"
        else {
            "name": name,
            "attributes": attributes,
        }
    )


def resource_slice(node: str, version: str = "v1") -> dict[str, Any]:
    """The ResourceSlice the kubelet plugin publishes for `node`: one channel and one daemon device."""
    return {
        "apiVersion": f"resource.k8s.io/{version}",
        "kind": "ResourceSlice",
        "metadata": {"name": f"{names.DRIVER}-{node}"},
        "spec": {
            "driver": names.DRIVER,
            "nodeName": node,
            "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
            "devices": [_device("channel-0", "channel", version), _device("daemon-0", "daemon", version)],
        },
    }


async def _create(api: client.ApiClient, plural: str, body: dict[str, Any], version: str) -> None:
    custom = client.CustomObjectsApi(api)
    try:
        await custom.create_cluster_custom_object("resource.k8s.io", version, plural, body)
    except ApiException as error:
        if error.status != 409:
            raise


async def install_device_classes(api: client.ApiClient, version: str = "v1") -> None:
    """Create the DeviceClasses (existing ones are kept)."""
    for device_class in device_classes(version):
        await _create(api, "deviceclasses", device_class, version)


async def publish_slices(api: client.ApiClient, nodes: Iterable[str], version: str = "v1") -> None:
    """Kubelet-plugin double: publish each node's ResourceSlice (existing ones are kept)."""
    await asyncio.gather(
        *(_create(api, "resourceslices", resource_slice(n, version), version) for n in nodes)
    )
