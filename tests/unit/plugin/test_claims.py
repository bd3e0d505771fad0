"""Which config applies to which allocated device of a claim, as NVIDIA's plugin decides."""

from __future__ import annotations

import re
from typing import Any

import pytest

from computedomain.api import names
from computedomain.plugin.claims import ClaimError, allocated_devices, reserved_pods
from support.pluginview import allocated_claim, channel_config, daemon_config


def _config(
    source: str, requests: list[str], parameters: dict[str, Any], driver: str = names.DRIVER
) -> dict[str, Any]:
    return {"source": source, "requests": requests, "opaque": {"driver": driver, "parameters": parameters}}


def test_claim_config_beats_class_config_and_later_beats_earlier() -> None:
    claim = allocated_claim("ns", "c", "channel-0", None)
    claim["status"]["allocation"]["devices"]["config"] = [
        _config("FromClaim", [], channel_config("from-claim-first")),
        _config("FromClaim", [], channel_config("from-claim-last", "All")),
        _config("FromClass", ["channel"], channel_config("from-class")),
    ]
    [device] = allocated_devices(claim)
    assert device.device.domain_id == "from-claim-last"
    assert device.config.allocation_mode == "All"  # type: ignore[union-attr]


def test_config_naming_the_request_beats_a_general_one_regardless_of_order() -> None:
    claim = allocated_claim("ns", "c", "channel-0", None)
    claim["status"]["allocation"]["devices"]["config"] = [
        _config("FromClaim", ["channel"], channel_config("named")),
        _config("FromClaim", ["other"], channel_config("for-another-request")),
    ]
    assert allocated_devices(claim)[0].device.domain_id == "named"


@pytest.mark.parametrize("channel_first", [True, False])
def test_general_configs_apply_to_the_devices_of_their_kind_in_either_order(channel_first: bool) -> None:
    claim = allocated_claim("ns", "c", "channel-0", None)
    devices = claim["status"]["allocation"]["devices"]
    devices["results"].append(
        {"request": "daemon", "driver": names.DRIVER, "pool": "n", "device": "daemon-0"}
    )
    general = [_config("FromClaim", [], channel_config("d")), _config("FromClaim", [], daemon_config("d"))]
    devices["config"] = general if channel_first else general[::-1]
    kinds = {d.device.request: d.config.kind for d in allocated_devices(claim)}
    assert kinds == {"channel": names.CHANNEL_CONFIG_KIND, "daemon": names.DAEMON_CONFIG_KIND}


def test_a_general_config_of_the_other_kind_does_not_hide_one_that_fits() -> None:
    claim = allocated_claim("ns", "c", "channel-0", None)
    claim["status"]["allocation"]["devices"]["config"] = [
        _config("FromClaim", [], channel_config("fits")),
        _config("FromClaim", [], daemon_config("fits-a-daemon")),
    ]
    assert allocated_devices(claim)[0].device.domain_id == "fits"


def test_other_drivers_and_their_devices_are_skipped() -> None:
    claim = allocated_claim("ns", "c", "channel-0", channel_config("d"))
    devices = claim["status"]["allocation"]["devices"]
    devices["results"].append({"request": "gpu", "driver": "gpu.nvidia.com", "pool": "n", "device": "gpu-0"})
    devices["config"].append(_config("FromClaim", [], {"kind": "GpuConfig"}, driver="gpu.nvidia.com"))
    assert [d.device.device for d in allocated_devices(claim)] == ["channel-0"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["status"].pop("allocation"), "the claim is not allocated"),
        (
            lambda c: c["status"]["allocation"]["devices"]["results"][0].update(device="gpu-3"),
            "device 'gpu-3' is not one that driver compute-domain.nvidia.com publishes",
        ),
        (
            lambda c: c["status"]["allocation"]["devices"]["config"][0]["opaque"].update(
                parameters=daemon_config("d")
            ),
            "cannot apply ComputeDomainDaemonConfig to request 'channel' of a channel device",
        ),
        (
            lambda c: c["status"]["allocation"]["devices"]["config"][0].update(source="Elsewhere"),
            "config[0] (Elsewhere): unknown source",
        ),
        (
            lambda c: c["status"]["allocation"]["devices"]["config"][0]["opaque"]["parameters"].update(
                apiVersion="resource.nvidia.com/v1"
            ),
            "apiVersion must be resource.nvidia.com/v1beta1",
        ),
    ],
)
def test_refusals_name_the_problem(change: Any, message: str) -> None:
    claim = allocated_claim("ns", "c", "channel-0", channel_config("d"))
    change(claim)
    with pytest.raises(ClaimError, match=re.escape(message)):
        allocated_devices(claim)


def test_reserved_pods() -> None:
    claim = allocated_claim("ns", "c", "channel-0", None, pods=(("a", "ua"), ("b", "ub")))
    claim["status"]["reservedFor"].append(
        {"apiGroup": "example.com", "resource": "pods", "name": "x", "uid": "x"}
    )
    assert reserved_pods(claim) == [("ns", "a", "ua"), ("ns", "b", "ub")]
