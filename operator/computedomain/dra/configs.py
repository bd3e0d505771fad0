"""Decoding our driver's opaque configs from a ResourceClaim's allocation into typed values.

The allocation lists configs (`status.allocation.devices.config[]`) from the DeviceClass (`FromClass`)
and from the claim (`FromClaim`). As in every DRA driver, a config applies to the requests it names;
claim configs override class configs, and later entries override earlier ones. A config naming no
request applies to every request whose device takes a config of its kind, as in NVIDIA's plugin: a
claim for a channel and a daemon may carry one general config of each kind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from computedomain.api import names
from computedomain.api.models import ComputeDomainChannelConfig, ComputeDomainDaemonConfig
from computedomain.dra.allocation import allocation_of, device_results

DriverConfig = ComputeDomainChannelConfig | ComputeDomainDaemonConfig

FROM_CLASS = "FromClass"
FROM_CLAIM = "FromClaim"
_SOURCES = (FROM_CLASS, FROM_CLAIM)  # in increasing precedence
_MODELS: dict[str, type[DriverConfig]] = {
    names.CHANNEL_CONFIG_KIND: ComputeDomainChannelConfig,
    names.DAEMON_CONFIG_KIND: ComputeDomainDaemonConfig,
}


class ConfigError(ValueError):
    """A claim's configs for our driver cannot be used; the message names the entry and the problem."""


def decode_parameters(parameters: Any) -> DriverConfig:
    """The typed config in one `opaque.parameters` object; ConfigError if its kind or content is bad."""
    if not isinstance(parameters, Mapping):
        raise ConfigError(f"parameters must be an object, not {type(parameters).__name__}")
    kind = parameters.get("kind")
    model = _MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ConfigError(f"unknown config kind {kind!r}; expected one of {', '.join(sorted(_MODELS))}")
    try:
        config = model.model_validate(parameters, by_alias=True, by_name=False)
        config.validate()
    except ValidationError as error:
        raise ConfigError(f"invalid {kind}: {_describe(error)}") from error
    except ValueError as error:
        raise ConfigError(f"invalid {kind}: {error}") from error
    return config


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


def _describe(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or '(object)'}: {item['msg']}"
        for item in error.errors()
    )
