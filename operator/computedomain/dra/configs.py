"""Decoding our driver's opaque configs from a ResourceClaim's allocation into typed values.

The allocation lists configs (`status.allocation.devices.config[]`) from the DeviceClass (`FromClass`)
and from the claim (`FromClaim`). As in every DRA driver, a config applies to the requests it names;
claim configs override class configs, and later entries override earlier ones. A config naming no
request applies to every request whose device takes a config of its kind, as in NVIDIA's plugin: a
claim for a channel and a daemon may carry one general config of each kind.

The configs are decoded by hand into dataclasses rather than through the pydantic models of
`computedomain.api.models` (which describe the same wire format and render it for the controller's
claim templates): the kubelet plugin decodes them and keeps pydantic out of its process. The checks
and their wording are the models' (tests/unit/dra/test_configs.py runs both on the same inputs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from computedomain.api import names
from computedomain.dra.allocation import allocation_of, device_results

FROM_CLASS = "FromClass"
FROM_CLAIM = "FromClaim"
_SOURCES = (FROM_CLASS, FROM_CLAIM)  # in increasing precedence


@dataclass(frozen=True)
class ChannelConfig:
    """Opaque config of a workload channel claim (`ComputeDomainChannelConfig`)."""

    domain_id: str
    # All gives every channel; anything else (or nothing) gives channel 0 only.
    allocation_mode: str | None = None
    api_version: str = names.API_VERSION
    kind: str = names.CHANNEL_CONFIG_KIND


@dataclass(frozen=True)
class DaemonConfig:
    """Opaque config of an IMEX daemon claim (`ComputeDomainDaemonConfig`)."""

    domain_id: str
    api_version: str = names.API_VERSION
    kind: str = names.DAEMON_CONFIG_KIND


DriverConfig = ChannelConfig | DaemonConfig

# Per kind, its fields on the wire (in the models' order) and whether each may be null.
_FIELDS: dict[str, dict[str, bool]] = {
    names.CHANNEL_CONFIG_KIND: {
        "apiVersion": False,
        "kind": False,
        "domainID": False,
        "allocationMode": True,
    },
    names.DAEMON_CONFIG_KIND: {"apiVersion": False, "kind": False, "domainID": False},
}


class ConfigError(ValueError):
    """A claim's configs for our driver cannot be used; the message names the entry and the problem."""


def decode_parameters(parameters: Any) -> DriverConfig:
    """The typed config in one `opaque.parameters` object; ConfigError if its kind or content is bad:
    an unknown field, a field that is not a string, another apiVersion, or no domainID."""
    if not isinstance(parameters, Mapping):
        raise ConfigError(f"parameters must be an object, not {type(parameters).__name__}")
    kind = parameters.get("kind")
    fields = _FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None:
        raise ConfigError(f"unknown config kind {kind!r}; expected one of {', '.join(sorted(_FIELDS))}")
    problems = _problems(parameters, fields)
    if problems:
        raise ConfigError(f"invalid {kind}: {'; '.join(problems)}")
    domain_id = parameters.get("domainID", "")
    if not domain_id:
        raise ConfigError(f"invalid {kind}: domainID cannot be empty")
    api_version = parameters.get("apiVersion", names.API_VERSION)
    if kind == names.CHANNEL_CONFIG_KIND:
        return ChannelConfig(domain_id, parameters.get("allocationMode"), api_version)
    return DaemonConfig(domain_id, api_version)


def _problems(parameters: Mapping[Any, Any], fields: Mapping[str, bool]) -> list[str]:
    for key in parameters:
        if not isinstance(key, str):
            return [f"{key}: Keys should be strings"]
    problems = []
    for name, nullable in fields.items():
        if name not in parameters:
            continue
        value = parameters[name]
        if not isinstance(value, str) and not (nullable and value is None):
            problems.append(f"{name}: Input should be a valid string")
        elif name == "apiVersion" and value != names.API_VERSION:
            problems.append(f"apiVersion: Value error, apiVersion must be {names.API_VERSION}, not {value!r}")
    problems.extend(f"{key}: Extra inputs are not permitted" for key in parameters if key not in fields)
    return problems


def request_configs(
    claim: Mapping[str, Any],
    driver: str = names.DRIVER,
    *,
    kind_of_device: Mapping[str, str] | None = None,
) -> dict[str, DriverConfig]:
    """For each request of the claim that `driver` serves, the config that applies to it.

    `kind_of_device` maps a device name to the config kind it takes; a config naming no request is
    then passed over for the requests of devices taking another kind (a device not in it takes any).
    A config naming a request applies to it whatever its kind: that it fits the device is for the
    caller to check. Every entry of `driver` is decoded, so a bad entry is reported even where a later
    one overrides it. An unallocated claim has no requests to configure. ConfigError names the entry
    or request at fault.
    """
    allocation = allocation_of(claim)
    if allocation is None:
        return {}
    entries = (allocation.get("devices") or {}).get("config") or []
    decoded: dict[str, list[tuple[Sequence[str], DriverConfig]]] = {source: [] for source in _SOURCES}
    for index, entry in enumerate(entries):
        opaque = entry.get("opaque") or {}
        if opaque.get("driver") != driver:
            continue
        source = entry.get("source")
        where = f"config[{index}] ({source})"
        if source not in decoded:
            raise ConfigError(f"{where}: unknown source; expected one of {', '.join(_SOURCES)}")
        try:
            config = decode_parameters(opaque.get("parameters"))
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from error
        decoded[source].append((entry.get("requests") or [], config))
    ordered = [item for source in _SOURCES for item in decoded[source]]
    configs: dict[str, DriverConfig] = {}
    for result in device_results(claim, driver):
        kind = (kind_of_device or {}).get(result.device)
        applying = [
            config for requests, config in ordered if _applies(requests, config, result.request, kind)
        ]
        if not applying:
            raise ConfigError(f"request {result.request!r}: no {driver} config applies to it")
        configs[result.request] = applying[-1]
    return configs


def _applies(requests: Sequence[str], config: DriverConfig, request: str, kind: str | None) -> bool:
    if not requests:
        return kind is None or config.kind == kind
    # A config naming a request also applies to its subrequests ("request/subrequest").
    return request in requests or request.partition("/")[0] in requests
