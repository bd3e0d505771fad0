"""Kubelet plugin settings, read from environment variables when the plugin starts."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from computedomain.api import names
from computedomain.envsettings import Converter, EnvSettings, SettingsError
from computedomain.logs import JSON, parse_log_format

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


def _log_format_is_json(value: str) -> bool:
    return parse_log_format(value) == JSON


class PluginSettings(EnvSettings):
    """Everything the kubelet plugin is configured with. Build it with `PluginSettings.from_env`."""

    env_names: ClassVar[Mapping[str, str]] = ENV_NAMES
    converters: ClassVar[Mapping[str, Converter]] = {"json_logs": _log_format_is_json}
    title: ClassVar[str] = "kubelet plugin settings"

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
        description=(
            "Seconds after which the sweep reports an unfinished prepare whose claim still exists "
            "(it releases only claims gone from the API server or replaced by a new UID)."
        ),
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


__all__ = ["ENV_NAMES", "PluginSettings", "SettingsError"]
