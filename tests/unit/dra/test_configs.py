"""Our driver's opaque configs decode into typed values; the one that applies wins, bad ones are named;
the decoder decides as the API models do."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from pydantic import ValidationError

from computedomain.api import names
from computedomain.api.models import ComputeDomainChannelConfig, ComputeDomainDaemonConfig
from computedomain.dra.configs import (
    ChannelConfig,
    ConfigError,
    DaemonConfig,
    decode_parameters,
    request_configs,
)

DOMAIN = "0c9d7c4e-7b1a-4a63-9a55-1f1f0d6f2a10"
OTHER = "9f0e2d1c-0000-4000-8000-000000000001"


def channel(domain: str = DOMAIN, mode: str | None = None) -> dict[str, Any]:
    return ComputeDomainChannelConfig(domain_id=domain, allocation_mode=mode).to_parameters()


def daemon(domain: str = DOMAIN) -> dict[str, Any]:
    return ComputeDomainDaemonConfig(domain_id=domain).to_parameters()


def entry(
    parameters: Any, source: str = "FromClaim", requests: list[str] | None = None, driver: str = names.DRIVER
) -> dict[str, Any]:
    body: dict[str, Any] = {"source": source, "opaque": {"driver": driver, "parameters": parameters}}
    if requests is not None:
        body["requests"] = requests
    return body


def claim(configs: list[dict[str, Any]], requests: tuple[str, ...] = ("channel",)) -> dict[str, Any]:
    results = [{"driver": names.DRIVER, "request": r, "pool": "n1", "device": "channel-0"} for r in requests]
    return {"status": {"allocation": {"devices": {"results": results, "config": configs}}}}


def test_decode_channel_and_daemon_configs() -> None:
    assert decode_parameters(channel(mode="All")) == ChannelConfig(domain_id=DOMAIN, allocation_mode="All")
    assert decode_parameters(daemon()) == DaemonConfig(domain_id=DOMAIN)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"kind": "GpuConfig", "domainID": DOMAIN}, "unknown config kind 'GpuConfig'"),
        ({"domainID": DOMAIN}, "unknown config kind None"),
        ("not an object", "parameters must be an object, not str"),
        ({**channel(), "domainID": ""}, "invalid ComputeDomainChannelConfig: domainID cannot be empty"),
        (
            {**daemon(), "apiVersion": "resource.nvidia.com/v1"},
            "apiVersion must be resource.nvidia.com/v1beta1",
        ),
        ({**channel(), "bogus": 1}, "bogus: Extra inputs are not permitted"),
        (
            {"kind": names.CHANNEL_CONFIG_KIND, "domain_id": DOMAIN},
            "domain_id: Extra inputs are not permitted",
        ),
        ({**channel(), "allocationMode": 3}, "allocationMode: Input should be a valid string"),
        (
            {**channel(), "apiVersion": None, "zz": 1},
            "apiVersion: Input should be a valid string; zz: Extra inputs are not permitted",
        ),
    ],
)
def test_bad_parameters_are_named(parameters: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        decode_parameters(parameters)


def test_a_config_naming_no_request_applies_to_all() -> None:
    configs = request_configs(claim([entry(channel())], requests=("channel", "extra")))
    assert configs == {"channel": decode_parameters(channel()), "extra": decode_parameters(channel())}


def test_claim_configs_override_class_configs_whatever_their_order() -> None:
    body = claim([entry(channel(OTHER), "FromClaim"), entry(channel(mode="All"), "FromClass")])
    assert request_configs(body)["channel"].domain_id == OTHER


def test_later_entries_override_earlier_ones() -> None:
    body = claim([entry(channel(OTHER)), entry(channel(DOMAIN, "All"))])
    assert request_configs(body) == {"channel": ChannelConfig(domain_id=DOMAIN, allocation_mode="All")}


def test_configs_apply_only_to_the_requests_they_name() -> None:
    body = claim(
        [entry(channel(), requests=["channel"]), entry(daemon(), requests=["daemon"])],
        requests=("channel", "daemon"),
    )
    configs = request_configs(body)
    assert isinstance(configs["channel"], ChannelConfig)
    assert isinstance(configs["daemon"], DaemonConfig)


@pytest.mark.parametrize("channel_first", [True, False])
def test_a_config_naming_no_request_applies_only_to_devices_of_its_kind(channel_first: bool) -> None:
    general = [entry(channel(OTHER)), entry(daemon())]
    body = claim(general if channel_first else general[::-1], requests=("channel", "daemon"))
    body["status"]["allocation"]["devices"]["results"][1]["device"] = "daemon-0"
    kinds = {"channel-0": names.CHANNEL_CONFIG_KIND, "daemon-0": names.DAEMON_CONFIG_KIND}
    assert request_configs(body, kind_of_device=kinds) == {
        "channel": decode_parameters(channel(OTHER)),
        "daemon": decode_parameters(daemon()),
    }


def test_a_config_naming_its_request_applies_whatever_the_kind_of_the_device() -> None:
    body = claim([entry(channel()), entry(daemon(), requests=["channel"])])
    kinds = {"channel-0": names.CHANNEL_CONFIG_KIND}
    assert request_configs(body, kind_of_device=kinds) == {"channel": decode_parameters(daemon())}


def test_a_config_for_a_request_applies_to_its_subrequests() -> None:
    assert (
        request_configs(claim([entry(daemon(), requests=["d"])], requests=("d/any",)))["d/any"].domain_id
        == DOMAIN
    )


def test_other_drivers_entries_are_ignored() -> None:
    foreign = entry({"kind": "GpuConfig"}, driver="gpu.nvidia.com")
    assert request_configs(claim([entry(channel()), foreign]))["channel"].domain_id == DOMAIN


def test_a_request_without_config_is_an_error() -> None:
    body = claim([entry(channel(), requests=["other"])])
    message = r"request 'channel': no compute-domain\.nvidia\.com config applies"
    with pytest.raises(ConfigError, match=message):
        request_configs(body)


def test_a_bad_entry_is_reported_even_when_overridden() -> None:
    body = claim([entry({"kind": "Nope"}, "FromClass"), entry(channel())])
    with pytest.raises(ConfigError, match=r"config\[0\] \(FromClass\): unknown config kind 'Nope'"):
        request_configs(body)


def test_an_unknown_source_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"config\[0\] \(FromNowhere\): unknown source"):
        request_configs(claim([entry(channel(), "FromNowhere")]))


def test_an_unallocated_claim_has_nothing_to_configure() -> None:
    assert request_configs({"metadata": {"name": "c"}}) == {}


_MODELS: dict[str, type[ComputeDomainChannelConfig | ComputeDomainDaemonConfig]] = {
    names.CHANNEL_CONFIG_KIND: ComputeDomainChannelConfig,
    names.DAEMON_CONFIG_KIND: ComputeDomainDaemonConfig,
}
_CHANNEL_KIND = {"kind": names.CHANNEL_CONFIG_KIND}
_DAEMON_KIND = {"kind": names.DAEMON_CONFIG_KIND}


def _by_the_models(parameters: dict[Any, Any]) -> dict[str, Any] | list[str]:
    """The API model's values, or the problems it names (as the decoder words them)."""
    model = _MODELS[parameters["kind"]]
    try:
        config = model.model_validate(parameters, by_alias=True, by_name=False)
    except ValidationError as error:
        return [f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors()]
    try:
        config.validate()
    except ValueError as error:
        return [str(error)]
    return config.model_dump(by_alias=False)


@pytest.mark.parametrize(
    "parameters",
    [
        channel(),
        channel(mode="All"),
        channel(mode="Single"),
        channel(mode="Everything"),  # any other mode means channel 0, for the models too
        daemon(),
        {**_CHANNEL_KIND, "domainID": DOMAIN},  # apiVersion may be left out
        {**_CHANNEL_KIND, "domainID": DOMAIN, "allocationMode": None},
        {**_DAEMON_KIND, "domainID": DOMAIN, "apiVersion": names.API_VERSION},
        {**_CHANNEL_KIND},
        {**_CHANNEL_KIND, "domainID": ""},
        {**_CHANNEL_KIND, "domainID": None},
        {**_CHANNEL_KIND, "domainID": 7},
        {**_CHANNEL_KIND, "domainID": [DOMAIN]},
        {**_CHANNEL_KIND, "domainID": True},
        {**_CHANNEL_KIND, "domainID": DOMAIN, "allocationMode": 3},
        {**_CHANNEL_KIND, "domainID": DOMAIN, "allocationMode": True},
        {**_CHANNEL_KIND, "domainID": DOMAIN, "allocationMode": {"mode": "All"}},
        {**_DAEMON_KIND, "domainID": DOMAIN, "allocationMode": "All"},  # not a daemon's field
        {**_DAEMON_KIND, "domainID": DOMAIN, "apiVersion": "resource.nvidia.com/v1"},
        {**_DAEMON_KIND, "domainID": DOMAIN, "apiVersion": None},
        {**_DAEMON_KIND, "domainID": DOMAIN, "apiVersion": 1},
        {**_CHANNEL_KIND, "domainID": DOMAIN, "bogus": 1},
        {**_CHANNEL_KIND, "domain_id": DOMAIN},  # only the wire names
        {**_CHANNEL_KIND, "domainID": DOMAIN, "allocation_mode": "All"},
        {**_CHANNEL_KIND, "domainId": DOMAIN},
        {**_CHANNEL_KIND, "DomainID": DOMAIN},
        {**_CHANNEL_KIND, "apiVersion": 5, "domainID": 3, "allocationMode": [1], "zz": 1, "aa": 2},
        {1: "x", **_DAEMON_KIND, "domainID": DOMAIN},
    ],
)
def test_the_decoder_decides_as_the_api_models(parameters: dict[Any, Any]) -> None:
    expected = _by_the_models(parameters)
    if isinstance(expected, dict):
        assert dataclasses.asdict(decode_parameters(parameters)) == expected
        return
    with pytest.raises(ConfigError) as caught:
        decode_parameters(parameters)
    # The same problems, in the same words and order.
    assert str(caught.value) == f"invalid {parameters['kind']}: {'; '.join(expected)}"
