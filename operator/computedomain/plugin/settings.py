"""Kubelet plugin settings, read from environment variables when the plugin starts.

A plain dataclass read with `computedomain.envvalues`, not a pydantic-settings model like the other
programs' settings: pydantic, its core and pydantic-settings would add about 14 MiB to a process that
runs on every GPU node. The variables, their spellings and the problems named are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from computedomain.api import names
from computedomain.envvalues import (
    EnvReader,
    SettingsError,
    integer,
    number,
    parse_json_logs,
    parse_log_level,
)
from computedomain.logs import JSON, TEXT
from computedomain.objects import is_dns_label, is_dns_subdomain
from computedomain.plugin.kubelet.driver import KUBELET_CALL_SECONDS

HEALTH_SOURCES = ("nvml", "static")
IMEX_MODES = (names.IMEX_MODE_DOMAIN, names.IMEX_MODE_CLIQUE)


def _node_name(text: str) -> str:
    if not is_dns_subdomain(text):
        raise ValueError("must be a node name (DNS subdomain)")
    return text


def _namespace(text: str) -> str:
    if not is_dns_label(text):
        raise ValueError("must be a DNS label (lower case letters, digits and '-', at most 63)")
    return text


def _absolute(text: str) -> Path:
    path = Path(text)
    if not path.is_absolute():
        raise ValueError("must be an absolute path")
    return path


def _health_source(text: str) -> str:
    if text not in HEALTH_SOURCES:
        raise ValueError("must be nvml or static")
    return text


def _imex_mode(text: str) -> str:
    if text not in IMEX_MODES:
        raise ValueError(f"must be {' or '.join(IMEX_MODES)}")
    return text


_PORT = integer(0, 65535)
_SECONDS = number(above=0)
_PREPARE_WAIT = number(above=0, below=KUBELET_CALL_SECONDS)


@dataclass(frozen=True)
class PluginSettings:
    """Everything the kubelet plugin is configured with. Build it with `PluginSettings.from_env`,
    which checks every value; the constructor takes them as they are."""

    title: ClassVar[str] = "kubelet plugin settings"
    # Field name -> environment variable.
    env_names: ClassVar[Mapping[str, str]] = {
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
        "log_level": "LOG_LEVEL",
        "imex_mode": "IMEX_MODE",
    }
    # Options that override a setting, where not named `--field-name`.
    option_names: ClassVar[Mapping[str, str]] = {}

    # Name of the node this plugin serves.
    node_name: str
    # Namespace of the operator, where the IMEX daemon pods run.
    namespace: str = "computedomain-system"
    # The kubelet's --root-dir (plugin sockets live below).
    kubelet_root: Path = Path("/var/lib/kubelet")
    # Directory of the CDI spec files.
    cdi_root: Path = Path("/var/run/cdi")
    # Root of the NVIDIA driver installation as the plugin sees it.
    driver_root: Path = Path("/")
    # The same root as the host sees it (CDI host paths); None: driver_root.
    host_driver_root: Path | None = None
    # The kernel's list of character device majors.
    proc_devices: Path = Path("/proc/devices")
    # The node's boot ID.
    boot_id_file: Path = Path("/proc/sys/kernel/random/boot_id")
    # Checkpoint and per-domain IMEX config directories; None: <kubelet root>/plugins/<driver>.
    state_dir: Path | None = None
    # Log JSON lines instead of text (LOG_FORMAT).
    json_logs: bool = False
    # Port of /healthz, /readyz and /metrics; 0 turns it off.
    http_port: int = 8080
    # Seconds a prepare call waits for the node's IMEX daemon before it gives up.
    prepare_wait: float = 40.0
    # Seconds between two waiting Events on the same pod.
    event_interval: float = 10.0
    # Seconds between sweeps for stale prepared claims.
    cleanup_interval: float = 600.0
    # Seconds after which the sweep reports an unfinished prepare whose claim still exists (it
    # releases only claims gone from the API server or replaced by a new UID).
    stale_after: float = 300.0
    # nvml (fabric state from NVML where present) or static (healthy).
    health_source: str = "nvml"
    # Seconds between two health checks.
    health_interval: float = 30.0
    # A level name of the logging module.
    log_level: str = "INFO"
    # domain (an IMEX daemon per domain, channel 0) or clique (the clique's long-running IMEX daemons,
    # a channel per domain given by the controller).
    imex_mode: str = names.IMEX_MODE_DOMAIN

    @classmethod
    def from_env(cls, env: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> PluginSettings:
        """Build the settings from environment variables, then `overrides` (field -> value, from
        command-line options), which win over the environment.

        Raises SettingsError naming each bad variable (or option).
        """
        reader = EnvReader(cls.title, env, overrides, cls.option_names)
        defaults = cls(node_name="")

        def read(field: str, parse: Callable[[str], Any]) -> Any:
            return reader.read(field, cls.env_names[field], parse, getattr(defaults, field))

        node_name = reader.require("node_name", cls.env_names["node_name"], _node_name)
        settings = cls(
            node_name=node_name or "",
            namespace=read("namespace", _namespace),
            kubelet_root=read("kubelet_root", _absolute),
            cdi_root=read("cdi_root", _absolute),
            driver_root=read("driver_root", _absolute),
            host_driver_root=read("host_driver_root", _absolute),
            proc_devices=read("proc_devices", _absolute),
            boot_id_file=read("boot_id_file", _absolute),
            state_dir=read("state_dir", _absolute),
            json_logs=read("json_logs", parse_json_logs),
            http_port=read("http_port", _PORT),
            prepare_wait=read("prepare_wait", _PREPARE_WAIT),
            event_interval=read("event_interval", _SECONDS),
            cleanup_interval=read("cleanup_interval", _SECONDS),
            stale_after=read("stale_after", _SECONDS),
            health_source=read("health_source", _health_source),
            health_interval=read("health_interval", _SECONDS),
            log_level=read("log_level", parse_log_level),
            imex_mode=read("imex_mode", _imex_mode),
        )
        reader.finish()
        return settings

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

    @property
    def clique_mode(self) -> bool:
        """True in clique mode (IMEX_MODE=clique)."""
        return self.imex_mode == names.IMEX_MODE_CLIQUE

    @property
    def log_format(self) -> str:
        """`json` or `text`, as LOG_FORMAT gave it."""
        return JSON if self.json_logs else TEXT


# Field name -> environment variable.
ENV_NAMES: Mapping[str, str] = PluginSettings.env_names

__all__ = ["ENV_NAMES", "KUBELET_CALL_SECONDS", "PluginSettings", "SettingsError"]
