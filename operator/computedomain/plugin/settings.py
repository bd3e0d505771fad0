"""Kubelet plugin settings, read from environment variables when the plugin starts."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from computedomain.api import names

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
# The kubelet gives each NodePrepareResources call 45 s; an answer must be on its way before then.
KUBELET_CALL_SECONDS = 45.0

# Field name -> environment variable.
ENV_NAMES: dict[str, str] = {
    "node_name": "NODE_NAME",
    "namespace": "NAMESPACE",
    "kubelet_root": "KUBELET_ROOT_DIR",
    "cdi_root": "CDI_ROOT",
    "driver_root": "DRIVER_ROOT",
    "host_driver_root": "HOST_DRIVER_ROOT",
    "proc_devices": "PROC_DEVICES",
    "boot_id_file": "BOOT_ID_FILE",
    "state_dir": "STATE_DIR",
    "json_logs": "LOG_FORMAT",
    "http_port": "HTTP_PORT",
    "prepare_wait": "PREPARE_WAIT_SECONDS",
    "event_interval": "EVENT_INTERVAL_SECONDS",
    "cleanup_interval": "CLEANUP_INTERVAL_SECONDS",
    "stale_after": "STALE_PREPARE_SECONDS",
    "health_source": "HEALTH_SOURCE",
    "health_interval": "HEALTH_INTERVAL_SECONDS",
}


class SettingsError(ValueError):
    """The environment does not describe a usable plugin; the message lists every problem."""


class PluginSettings(BaseModel):
    """Everything the kubelet plugin is configured with. Build it with `PluginSettings.from_env`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node_name: str = Field(min_length=1, description="Name of the node this plugin serves.")
    namespace: str = Field(
        default="computedomain-system",
        description="Namespace of the operator, where the IMEX daemon pods run.",
    )
    kubelet_root: Path = Field(
        default=Path("/var/lib/kubelet"), description="The kubelet's --root-dir (plugin sockets live below)."
    )
    cdi_root: Path = Field(default=Path("/var/run/cdi"), description="Directory of the CDI spec files.")
    driver_root: Path = Field(
        default=Path("/"), description="Root of the NVIDIA driver installation as the plugin sees it."
    )
    host_driver_root: Path | None = Field(
        default=None,
        description="The same root as the host sees it (CDI host paths); defaults to driver_root.",
    )
    proc_devices: Path = Field(
        default=Path("/proc/devices"), description="The kernel's list of character device majors."
    )
    boot_id_file: Path = Field(
        default=Path("/proc/sys/kernel/random/boot_id"), description="The node's boot ID."
    )
    state_dir: Path | None = Field(
        default=None,
        description="Checkpoint and per-domain IMEX config directories; <kubelet root>/plugins/<driver>.",
    )
    json_logs: bool = Field(default=False, description="Log JSON lines instead of text.")
    http_port: int = Field(
        default=8080, ge=0, le=65535, description="Port of /healthz, /readyz and /metrics; 0 turns it off."
    )
    prepare_wait: float = Field(
        default=40.0,
        gt=0,
        lt=KUBELET_CALL_SECONDS,
        description="Seconds a prepare call waits for the node's IMEX daemon before it gives up.",
    )
    event_interval: float = Field(
        default=10.0, gt=0, description="Seconds between two waiting Events on the same pod."
    )
    cleanup_interval: float = Field(
        default=600.0, gt=0, description="Seconds between sweeps for stale prepared claims."
    )
    stale_after: float = Field(
        default=300.0,
        gt=0,
        description="Seconds after which an unfinished prepare of a claim counts as abandoned.",
    )
    health_source: str = Field(
        default="nvml", description="nvml (fabric state from NVML where present) or static (healthy)."
    )
    health_interval: float = Field(default=30.0, gt=0, description="Seconds between two health checks.")

    @field_validator("node_name")
    @classmethod
    def _node_name(cls, value: str) -> str:
        if not _DNS_SUBDOMAIN.match(value):
            raise ValueError("must be a node name (DNS subdomain)")
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not _DNS_LABEL.match(value):
            raise ValueError("must be a DNS label (lower case letters, digits and '-', at most 63)")
        return value

    @field_validator(
        "kubelet_root",
        "cdi_root",
        "driver_root",
        "host_driver_root",
        "proc_devices",
        "boot_id_file",
        "state_dir",
    )
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError("must be an absolute path")
        return value

    @field_validator("health_source")
    @classmethod
    def _health_source(cls, value: str) -> str:
        if value not in ("nvml", "static"):
            raise ValueError("must be nvml or static")
        return value

    @property
    def plugin_dir(self) -> Path:
        """`<kubelet root>/plugins/<driver>`, home of the DRA socket."""
        return self.kubelet_root / "plugins" / names.DRIVER

    @property
    def registration_socket(self) -> Path:
        """The socket the kubelet's plugin watcher finds."""
        return self.kubelet_root / "plugins_registry" / f"{names.DRIVER}-reg.sock"

    @property
    def dra_socket(self) -> Path:
        """The socket of the DRA and health services."""
        return self.plugin_dir / "dra.sock"

    @property
    def state(self) -> Path:
        """Where the checkpoint and the per-domain IMEX config directories live."""
        return self.state_dir or self.plugin_dir

    @property
    def host_root(self) -> Path:
        """The driver root as the container runtime on the host sees it."""
        return self.host_driver_root or self.driver_root

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PluginSettings:
        """Build the settings from environment variables; empty variables count as unset.

        Raises SettingsError naming each bad variable.
        """
        raw: dict[str, Any] = {}
        problems: list[str] = []
        for field, variable in ENV_NAMES.items():
            value = env.get(variable, "").strip()
            if not value:
                continue
            convert = _CONVERTERS.get(field)
            try:
                raw[field] = convert(value) if convert else value
            except ValueError as error:
                problems.append(f"  {variable}={value!r}: {error}")
        try:
            settings = cls.model_validate(raw)
        except ValidationError as error:
            problems.extend(_explain(error, env))
            raise SettingsError(_report(problems)) from None
        if problems:
            raise SettingsError(_report(problems))
        return settings


def _report(problems: list[str]) -> str:
    return "\n".join(["invalid kubelet plugin settings:", *problems])


def _log_format_is_json(value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("json", "text"):
        raise ValueError("must be json or text")
    return lowered == "json"


_CONVERTERS: dict[str, Callable[[str], Any]] = {"json_logs": _log_format_is_json}


def _explain(error: ValidationError, env: Mapping[str, str]) -> list[str]:
    lines = []
    for problem in error.errors():
        field = str(problem["loc"][0]) if problem["loc"] else ""
        variable = ENV_NAMES.get(field)
        message = str(problem["msg"]).removeprefix("Value error, ")
        if variable is None:
            lines.append(f"  {message}")
        elif problem["type"] == "missing":
            lines.append(f"  {variable} is required")
        else:
            lines.append(f"  {variable}={env.get(variable, '').strip()!r}: {message}")
    return lines
