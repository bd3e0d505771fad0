"""The daemon's inputs: the environment the per-domain DaemonSet and the kubelet plugin's CDI edits set."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from computedomain.api import names
from computedomain.envsettings import Converter, EnvSettings, SettingsError
from computedomain.logs import TEXT, parse_log_format

__all__ = ["MISSING_DOMAIN_MESSAGE", "DaemonSettings", "SettingsError", "load_settings"]

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

# Field name -> environment variable (set by the per-domain DaemonSet, the downward API and CDI).
ENV_NAMES: dict[str, str] = {
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
    "config_dir": "IMEX_CONFIG_DIR",
    "hosts_file": "IMEX_HOSTS_FILE",
    "imex_binary": "IMEX_BINARY",
    "imex_ctl_binary": "IMEX_CTL_BINARY",
}


class DaemonSettings(EnvSettings):
    """Everything the daemon knows about itself before it talks to the API server.

    Only malformed values fail when reading the environment; `require_domain` and
    `require_pod_identity` check presence, because the `check` probe needs neither the domain nor
    the pod identity.
    """

    env_names: ClassVar[Mapping[str, str]] = ENV_NAMES
    converters: ClassVar[Mapping[str, Converter]] = {"log_format": parse_log_format}
    # Set but empty, CLIQUE_ID says "no NVLink fabric"; unset, it says "ask the node's label".
    keep_empty: ClassVar[frozenset[str]] = frozenset({"clique_id"})
    title: ClassVar[str] = "daemon settings"

    node_name: str = ""
    pod_ip: str = ""
    pod_name: str = ""
    pod_namespace: str = ""
    pod_uid: str = ""
    domain_uid: str = ""
    domain_name: str = ""
    domain_namespace: str = ""
    # None: the CDI edits did not set CLIQUE_ID, so it comes from the node's label. "": no NVLink fabric.
    clique_id: str | None = None
    max_nodes: int = Field(default=names.DEFAULT_MAX_NODES_PER_CLIQUE, ge=1)
    log_verbosity: int = Field(default=0, ge=0)
    log_format: str = TEXT
    config_dir: Path = Path(DEFAULT_CONFIG_DIR)
    hosts_file: Path = Path(DEFAULT_HOSTS_FILE)
    imex_binary: str = DEFAULT_IMEX_BINARY
    imex_ctl_binary: str = DEFAULT_IMEX_CTL_BINARY

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

    def require_domain(self) -> None:
        """Fail with the reference's explanation when the CDI edits (domain identity) are missing."""
        if not self.domain_uid:
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


def load_settings(env: Mapping[str, str] | None = None) -> DaemonSettings:
    """Read the daemon's settings from `env` (the process environment by default).

    Raises SettingsError naming every malformed variable.
    """
    return DaemonSettings.from_env(os.environ if env is None else env)
