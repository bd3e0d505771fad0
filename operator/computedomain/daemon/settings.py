"""The daemon's inputs: the environment the per-domain DaemonSet and the kubelet plugin's CDI edits set.

A plain dataclass read with `computedomain.envvalues`, as the kubelet plugin reads its own: the daemon
starts on the critical path of a domain's first pods, and importing pydantic and pydantic-settings
would cost every start (and every `check` probe) a few tenths of a CPU-second. The variables, their
spellings and the problems named are those of the other programs' settings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from computedomain.api import names
from computedomain.envvalues import EnvReader, SettingsError, integer, parse_log_format, parse_log_level
from computedomain.logs import TEXT

__all__ = ["ENV_NAMES", "MISSING_DOMAIN_MESSAGE", "DaemonSettings", "SettingsError", "load_settings"]

MISSING_DOMAIN_MESSAGE = (
    "COMPUTE_DOMAIN_UUID is not set: CDI container edits did not apply -- "
    "is CDI enabled in your container runtime?"
)

DEFAULT_CONFIG_DIR = "/imexd"
DEFAULT_HOSTS_FILE = "/etc/hosts"
DEFAULT_IMEX_BINARY = "nvidia-imex"
DEFAULT_IMEX_CTL_BINARY = "nvidia-imex-ctl"

CONFIG_FILE_NAME = "imexd.cfg"
TEMPLATE_FILE_NAME = "imexd.cfg.tmpl"
NODES_FILE_NAME = "nodes.cfg"
# Where `run` records the clique ID it resolved, for `check` when CLIQUE_ID is not in the environment.
CLIQUE_FILE_NAME = "clique-id"

# Verbosity at which debug logs appear (klog-style levels, as the DaemonSet passes LOG_VERBOSITY).
DEBUG_VERBOSITY = 4

IMEX_MODES = (names.IMEX_MODE_DOMAIN, names.IMEX_MODE_CLIQUE)


def _imex_mode(text: str) -> str:
    if text not in IMEX_MODES:
        raise ValueError(f"must be {' or '.join(IMEX_MODES)}")
    return text


def _text(text: str) -> str:
    return text


_AT_LEAST_ONE = integer(minimum=1)
_NOT_NEGATIVE = integer(minimum=0)
_PORT = integer(0, 65535)


@dataclass(frozen=True)
class DaemonSettings:
    """Everything the daemon knows about itself before it talks to the API server.

    Build it with `DaemonSettings.from_env`, which checks every value. Only malformed values fail
    there; `require_domain` and `require_pod_identity` check presence, because the `check` probe
    needs neither the domain nor the pod identity.
    """

    title: ClassVar[str] = "daemon settings"
    option_names: ClassVar[Mapping[str, str]] = {"log_verbosity": "-v", "level": "--log-level"}
    # Field name -> environment variable (set by the per-domain DaemonSet, the downward API and CDI).
    env_names: ClassVar[Mapping[str, str]] = {
        "imex_mode": "IMEX_MODE",
        "node_name": "NODE_NAME",
        "pod_ip": "POD_IP",
        "pod_name": "POD_NAME",
        "pod_namespace": "POD_NAMESPACE",
        "pod_uid": "POD_UID",
        "domain_uid": "COMPUTE_DOMAIN_UUID",
        "domain_name": "COMPUTE_DOMAIN_NAME",
        "domain_namespace": "COMPUTE_DOMAIN_NAMESPACE",
        "clique_id": "CLIQUE_ID",
        "max_nodes": "MAX_NODES_PER_IMEX_DOMAIN",
        "log_verbosity": "LOG_VERBOSITY",
        "log_format": "LOG_FORMAT",
        "level": "LOG_LEVEL",
        "config_dir": "IMEX_CONFIG_DIR",
        "hosts_file": "IMEX_HOSTS_FILE",
        "imex_binary": "IMEX_BINARY",
        "imex_ctl_binary": "IMEX_CTL_BINARY",
        "http_port": "HTTP_PORT",
    }

    # domain: the daemon of one ComputeDomain (its DaemonSet sets the domain); clique: the long-running
    # daemon of its node's NVLink clique, serving every domain there.
    imex_mode: str = names.IMEX_MODE_DOMAIN
    node_name: str = ""
    pod_ip: str = ""
    pod_name: str = ""
    pod_namespace: str = ""
    pod_uid: str = ""
    domain_uid: str = ""
    domain_name: str = ""
    domain_namespace: str = ""
    # None: the CDI edits did not set CLIQUE_ID, so it comes from the node's label. Set but empty: no
    # NVLink fabric.
    clique_id: str | None = None
    max_nodes: int = names.DEFAULT_MAX_NODES_PER_CLIQUE
    # klog-style verbosity (`-v N`).
    log_verbosity: int = 0
    # `text` or `json`.
    log_format: str = TEXT
    # A level name of the logging module; None: the verbosity chooses.
    level: str | None = None
    config_dir: Path = Path(DEFAULT_CONFIG_DIR)
    hosts_file: Path = Path(DEFAULT_HOSTS_FILE)
    imex_binary: str = DEFAULT_IMEX_BINARY
    imex_ctl_binary: str = DEFAULT_IMEX_CTL_BINARY
    # Port of `run`'s metrics and health endpoints; 0 for none. Off unless the pod says so: daemons
    # run outside a pod of their own (test beds) would all ask for one port.
    http_port: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> DaemonSettings:
        """Build the settings from environment variables, then `overrides` (field -> value, from
        command-line options), which win over the environment.

        Raises SettingsError naming each bad variable (or option).
        """
        reader = EnvReader(cls.title, env, overrides, cls.option_names)
        defaults = cls()

        def read(field: str, parse: Callable[[str], Any]) -> Any:
            return reader.read(field, cls.env_names[field], parse, getattr(defaults, field))

        clique_id = read("clique_id", _text)
        if clique_id is None and cls.env_names["clique_id"] in env and "clique_id" not in (overrides or {}):
            # Set but blank is the plugin's word for "no NVLink fabric", not "unset".
            clique_id = ""
        settings = cls(
            imex_mode=read("imex_mode", _imex_mode),
            node_name=read("node_name", _text),
            pod_ip=read("pod_ip", _text),
            pod_name=read("pod_name", _text),
            pod_namespace=read("pod_namespace", _text),
            pod_uid=read("pod_uid", _text),
            domain_uid=read("domain_uid", _text),
            domain_name=read("domain_name", _text),
            domain_namespace=read("domain_namespace", _text),
            clique_id=clique_id,
            max_nodes=read("max_nodes", _AT_LEAST_ONE),
            log_verbosity=read("log_verbosity", _NOT_NEGATIVE),
            log_format=read("log_format", parse_log_format),
            level=read("level", parse_log_level),
            config_dir=read("config_dir", Path),
            hosts_file=read("hosts_file", Path),
            imex_binary=read("imex_binary", _text),
            imex_ctl_binary=read("imex_ctl_binary", _text),
            http_port=read("http_port", _PORT),
        )
        reader.finish()
        return settings

    @property
    def log_level(self) -> str:
        """LOG_LEVEL (or `--log-level`) where given, else DEBUG from verbosity DEBUG_VERBOSITY on."""
        if self.level is not None:
            return self.level
        return "DEBUG" if self.log_verbosity >= DEBUG_VERBOSITY else "INFO"

    @property
    def config_file(self) -> Path:
        """The IMEX daemon config the daemon renders (`imexd.cfg`)."""
        return self.config_dir / CONFIG_FILE_NAME

    @property
    def template_file(self) -> Path:
        """The config template the kubelet plugin may have left in the config directory."""
        return self.config_dir / TEMPLATE_FILE_NAME

    @property
    def nodes_file(self) -> Path:
        """The static IMEX node list (`nodes.cfg`)."""
        return self.config_dir / NODES_FILE_NAME

    @property
    def clique_file(self) -> Path:
        """The file in which `run` records the clique ID it resolved."""
        return self.config_dir / CLIQUE_FILE_NAME

    @property
    def clique_mode(self) -> bool:
        """Whether this is a clique's long-running daemon rather than one domain's."""
        return self.imex_mode == names.IMEX_MODE_CLIQUE

    def peers_object(self, clique_id: str) -> str:
        """The name of the ComputeDomainClique that lists this daemon's peers in `clique_id`."""
        if self.clique_mode:
            return names.clique_peers_name(clique_id)
        return names.clique_name(self.domain_uid, clique_id)

    def require_domain(self) -> None:
        """Fail with the reference's explanation when the CDI edits (domain identity) are missing; a
        clique daemon serves no one domain and needs none."""
        if not self.domain_uid and not self.clique_mode:
            raise SettingsError(MISSING_DOMAIN_MESSAGE)

    def require_pod_identity(self) -> None:
        """Fail when the downward API did not provide what `run` needs to act on its own pod."""
        missing = [
            key
            for key, value in (
                ("NODE_NAME", self.node_name),
                ("POD_IP", self.pod_ip),
                ("POD_NAME", self.pod_name),
                ("POD_NAMESPACE", self.pod_namespace),
            )
            if not value
        ]
        if missing:
            raise SettingsError(f"missing environment variables from the downward API: {', '.join(missing)}")


def load_settings(
    env: Mapping[str, str] | None = None, overrides: Mapping[str, object] | None = None
) -> DaemonSettings:
    """Read the daemon's settings from `env` (the process environment by default), then `overrides`
    (field -> value, from command-line options).

    Raises SettingsError naming every malformed variable.
    """
    return DaemonSettings.from_env(os.environ if env is None else env, overrides)


ENV_NAMES: Mapping[str, str] = DaemonSettings.env_names
