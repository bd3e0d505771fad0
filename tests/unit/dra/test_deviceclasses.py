"""The two DeviceClasses select our driver's daemon device and channel 0 (the chart test compares YAML)."""

from __future__ import annotations

import pytest

from computedomain.api import names
from computedomain.dra.deviceclasses import CHANNEL_SELECTOR, DAEMON_SELECTOR, device_classes

VERSIONS = ["v1", "v1beta2", "v1beta1"]


@pytest.mark.parametrize("version", VERSIONS)
def test_both_classes_in_the_version_asked(version: str) -> None:
    classes = device_classes(version)
    assert [c["metadata"]["name"] for c in classes] == [names.DAEMON_DEVICE_CLASS, names.CHANNEL_DEVICE_CLASS]
    assert {c["apiVersion"] for c in classes} == {f"resource.k8s.io/{version}"}
    assert {c["kind"] for c in classes} == {"DeviceClass"}


def test_selectors() -> None:
    daemon, channel = device_classes()
    assert daemon["spec"] == {"selectors": [{"cel": {"expression": DAEMON_SELECTOR}}]}
    assert channel["spec"] == {"selectors": [{"cel": {"expression": CHANNEL_SELECTOR}}]}
    attr = "device.attributes['compute-domain.nvidia.com']"
    assert f"device.driver == 'compute-domain.nvidia.com' && {attr}.type == 'daemon'" == DAEMON_SELECTOR
    assert (
        f"device.driver == 'compute-domain.nvidia.com' && {attr}.type == 'channel' && {attr}.id == 0"
    ) == CHANNEL_SELECTOR


def test_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported resource API version"):
        device_classes("v1alpha3")
