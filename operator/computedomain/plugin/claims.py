"""What a ResourceClaim asks of this driver: its allocated devices and the config that applies to each.

Pure functions over the claim as the API server returns it. Config precedence follows NVIDIA's plugin:
class configs, then claim configs, later beating earlier; a config naming the device's request beats
one naming no request; a default config of each kind (with no domain) sits below all of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from computedomain.api import names
from computedomain.api.models import ComputeDomainChannelConfig, ComputeDomainDaemonConfig

DeviceType = Literal["channel", "daemon"]
Config = ComputeDomainChannelConfig | ComputeDomainDaemonConfig

CHANNEL_DEVICE = "channel-0"
DAEMON_DEVICE = "daemon-0"
DEVICE_TYPES: dict[str, DeviceType] = {CHANNEL_DEVICE: "channel", DAEMON_DEVICE: "daemon"}
_CONFIG_TYPES: dict[str, type[Config]] = {
    names.CHANNEL_CONFIG_KIND: ComputeDomainChannelConfig,
    names.DAEMON_CONFIG_KIND: ComputeDomainDaemonConfig,
}
_KIND_OF_TYPE: dict[DeviceType, str] = {
    "channel": names.CHANNEL_CONFIG_KIND,
    "daemon": names.DAEMON_CONFIG_KIND,
}


class ClaimError(ValueError):
    """The claim cannot be prepared as it stands; the message says why, for the pod's events."""


@dataclass(frozen=True)
class AllocatedDevice:
    """One device allocated to the claim from this driver, with the config that applies to it."""

    request: str
    pool: str
    device: str
    type: DeviceType
    config: Config

    @property
    def domain_id(self) -> str:
        """UID of the ComputeDomain the config names."""
        return self.config.domain_id


@dataclass(frozen=True)
class _Candidate:
    requests: tuple[str, ...]
    config: Config


def decode_config(parameters: Any) -> Config:
    """Decode one opaque config strictly (unknown fields are an error, as in NVIDIA's decoder)."""
    if not isinstance(parameters, Mapping):
        raise ClaimError("opaque config parameters are not an object")
    kind = parameters.get("kind")
    model = _CONFIG_TYPES.get(str(kind))
    if model is None:
        known = " or ".join(_CONFIG_TYPES)
        raise ClaimError(f"unknown config kind {kind!r} for driver {names.DRIVER}: expected {known}")
    try:
        return model.model_validate(parameters)
    except ValidationError as error:
        raise ClaimError(f"error decoding {kind}: {_describe(error)}") from None


def _describe(error: ValidationError) -> str:
    problems = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"])
        if problem["type"] == "extra_forbidden":
            problems.append(f'strict decoding error: unknown field "{where}"')
        else:
            message = str(problem["msg"]).removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


def _candidates(configs: Sequence[Mapping[str, Any]]) -> list[_Candidate]:
    """Our driver's configs, lowest precedence first, behind a default of each kind."""
    by_source: dict[str, list[Mapping[str, Any]]] = {"FromClass": [], "FromClaim": []}
    for entry in configs:
        source = str(entry.get("source", ""))
        if source not in by_source:
            raise ClaimError(f"invalid config source {source!r}")
        by_source[source].append(entry)
    candidates = [
        _Candidate((), ComputeDomainDaemonConfig()),
        _Candidate((), ComputeDomainChannelConfig()),
    ]
    for entry in by_source["FromClass"] + by_source["FromClaim"]:
        opaque = entry.get("opaque")
        if not isinstance(opaque, Mapping):
            raise ClaimError("only opaque configs are supported by this driver")
        if opaque.get("driver") != names.DRIVER:
            continue
        requests = tuple(str(r) for r in entry.get("requests") or ())
        candidates.append(_Candidate(requests, decode_config(opaque.get("parameters"))))
    return candidates


def _pick(candidates: list[_Candidate], request: str, device_type: DeviceType) -> Config:
    wanted = _KIND_OF_TYPE[device_type]
    for candidate in reversed(candidates):
        kind = candidate.config.kind
        if request in candidate.requests:
            if kind != wanted:
                raise ClaimError(f"cannot apply {kind} to request {request!r} of a {device_type} device")
            return candidate.config
        if not candidate.requests and kind == wanted:
            return candidate.config
    raise AssertionError("the default configs always match")  # pragma: no cover


def allocated_devices(claim: Mapping[str, Any]) -> list[AllocatedDevice]:
    """This driver's devices of an allocated claim, each with its validated config.

    Raises ClaimError naming the problem: no allocation, a device this driver does not publish, an
    unknown or malformed config, a config of the wrong kind, or a config without a domain.
    """
    allocation = (claim.get("status") or {}).get("allocation")
    if not allocation:
        raise ClaimError("the claim is not allocated")
    devices = allocation.get("devices") or {}
    candidates = _candidates(devices.get("config") or [])
    result = []
    for entry in devices.get("results") or []:
        if entry.get("driver") != names.DRIVER:
            continue
        device = str(entry.get("device", ""))
        device_type = DEVICE_TYPES.get(device)
        if device_type is None:
            raise ClaimError(f"device {device!r} is not one that driver {names.DRIVER} publishes")
        request = str(entry.get("request", ""))
        config = _pick(candidates, request, device_type)
        try:
            config.validate()
        except ValueError as error:
            raise ClaimError(f"{config.kind} of request {request!r}: {error}") from None
        result.append(AllocatedDevice(request, str(entry.get("pool", "")), device, device_type, config))
    return result


def reserved_pods(claim: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(namespace, name, uid) of the pods the claim is reserved for (they consume it)."""
    namespace = str((claim.get("metadata") or {}).get("namespace", ""))
    return [
        (namespace, str(ref.get("name", "")), str(ref.get("uid", "")))
        for ref in (claim.get("status") or {}).get("reservedFor") or []
        if ref.get("resource") == "pods" and not ref.get("apiGroup")
    ]
