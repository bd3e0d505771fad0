"""The daemon's inputs: the environment the per-domain DaemonSet and the kubelet plugin's CDI edits set."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from computedomain.api import names
from computedomain.envsettings import EnvSettings, KeepEmpty, LogFormat, LogLevel, SettingsError
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


class DaemonSettings(EnvSettings):
    """Everything the daemon knows about itself before it talks to the API server.

    Only malformed values fail when reading the environment; `require_domain` and
    `require_pod_identity` check presence, because the `check` probe needs neither the domain nor
    the pod identity.
    """

    option_names: ClassVar[Mapping[str, str]] = {"log_verbosity": "-v", "level": "--log-level"}
    title: ClassVar[str] = "daemon settings"

    # domain: the daemon of one ComputeDomain (its DaemonSet sets the domain); clique: the long-running
    # daemon of its node's NVLink clique, serving every domain there.
    imex_mode: Literal["domain", "clique"] = Field(default="domain", validation_alias="IMEX_MODE")
    node_name: str = Field(default="", validation_alias="NODE_NAME")
    pod_ip: str = Field(default="", validation_alias="POD_IP")
    pod_name: str = Field(default="", validation_alias="POD_NAME")
    pod_namespace: str = Field(default="", validation_alias="POD_NAMESPACE")
    pod_uid: str = Field(default="", validation_alias="POD_UID")
    domain_uid: str = Field(default="", validation_alias="COMPUTE_DOMAIN_UUID")
    domain_name: str = Field(default="", validation_alias="COMPUTE_DOMAIN_NAME")
    domain_namespace: str = Field(default="", validation_alias="COMPUTE_DOMAIN_NAMESPACE")
    # None: the CDI edits did not set CLIQUE_ID, so it comes from the node's label. Set but empty: no
    # NVLink fabric.
    clique_id: Annotated[str | None, KeepEmpty()] = Field(default=None, validation_alias="CLIQUE_ID")
    max_nodes: int = Field(
        default=names.DEFAULT_MAX_NODES_PER_CLIQUE, ge=1, validation_alias="MAX_NODES_PER_IMEX_DOMAIN"
    )
    log_verbosity: int = Field(
        default=0, ge=0, validation_alias="LOG_VERBOSITY", description="klog-style verbosity (`-v N`)."
    )
    log_format: LogFormat = Field(default=TEXT, validation_alias="LOG_FORMAT")
    level: LogLevel | None = Field(
        default=None,
        validation_alias="LOG_LEVEL",
        description="A level name of the logging module; without, the verbosity chooses.",
    )
    config_dir: Path = Field(default=Path(DEFAULT_CONFIG_DIR), validation_alias="IMEX_CONFIG_DIR")
    hosts_file: Path = Field(default=Path(DEFAULT_HOSTS_FILE), validation_alias="IMEX_HOSTS_FILE")
    imex_binary: str = Field(default=DEFAULT_IMEX_BINARY, validation_alias="IMEX_BINARY")
    imex_ctl_binary: str = Field(default=DEFAULT_IMEX_CTL_BINARY, validation_alias="IMEX_CTL_BINARY")

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


# Field name -> environment variable (set by the per-domain DaemonSet, the downward API and CDI).
ENV_NAMES: Mapping[str, str] = DaemonSettings.env_names
