"""The two DeviceClasses of the ComputeDomain driver (the Helm chart renders the same)."""

from __future__ import annotations

from typing import Any

from computedomain.api import names
from computedomain.dra.versions import resource_api_version

_ATTR = f"device.attributes['{names.DRIVER}']"
DAEMON_SELECTOR = f"device.driver == '{names.DRIVER}' && {_ATTR}.type == 'daemon'"
CHANNEL_SELECTOR = f"device.driver == '{names.DRIVER}' && {_ATTR}.type == 'channel' && {_ATTR}.id == 0"


def device_class(name: str, expression: str, api_version: str) -> dict[str, Any]:
    """A DeviceClass selecting devices by one CEL expression."""
    return {
        "apiVersion": resource_api_version(api_version),
        "kind": "DeviceClass",
        "metadata": {"name": name},
        "spec": {"selectors": [{"cel": {"expression": expression}}]},
    }


def device_classes(api_version: str = "v1") -> list[dict[str, Any]]:
    """The daemon and default-channel DeviceClasses for `api_version`."""
    return [
        device_class(names.DAEMON_DEVICE_CLASS, DAEMON_SELECTOR, api_version),
        device_class(names.CHANNEL_DEVICE_CLASS, CHANNEL_SELECTOR, api_version),
    ]
