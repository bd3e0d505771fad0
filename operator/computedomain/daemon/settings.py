"""The daemon's inputs: the environment the per-domain DaemonSet and the kubelet plugin's CDI edits set."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from computedomain.api import names

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


class SettingsError(ValueError):
    """The environment does not describe a usable daemon."""


@dataclass(frozen=True)
class DaemonSettings:
    """Everything the daemon knows about itself before it talks to the API server."""

    node_name: str
    pod_ip: str
    pod_name: str
    pod_namespace: str
    pod_uid: str
    domain_uid: str
    domain_name: str
    domain_namespace: str
    # None: the CDI edits did not set CLIQUE_ID, so it comes from the node's label. "": no NVLink fabric.
    clique_id: str | None
    max_nodes: int
    log_verbosity: int
    config_dir: Path
    hosts_file: Path
    imex_binary: str
    imex_ctl_binary: str

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


def _int_setting(env: Mapping[str, str], key: str, default: int, minimum: int) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{key}={raw!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{key}={value} is below the minimum {minimum}")
    return value


def load_settings(env: Mapping[str, str] | None = None) -> DaemonSettings:
    """Read the daemon's settings from `env` (the process environment by default).

    Only malformed values fail here; `DaemonSettings.require_domain` and `require_pod_identity` check
    presence, because the `check` probe needs neither the domain nor the pod identity.
    """
    source = os.environ if env is None else env
    return DaemonSettings(
        node_name=source.get("NODE_NAME", ""),
        pod_ip=source.get("POD_IP", ""),
        pod_name=source.get("POD_NAME", ""),
        pod_namespace=source.get("POD_NAMESPACE", ""),
        pod_uid=source.get("POD_UID", ""),
        domain_uid=source.get("COMPUTE_DOMAIN_UUID", ""),
        domain_name=source.get("COMPUTE_DOMAIN_NAME", ""),
        domain_namespace=source.get("COMPUTE_DOMAIN_NAMESPACE", ""),
        clique_id=source.get("CLIQUE_ID"),
        max_nodes=_int_setting(source, "MAX_NODES_PER_IMEX_DOMAIN", names.DEFAULT_MAX_NODES_PER_CLIQUE, 1),
        log_verbosity=_int_setting(source, "LOG_VERBOSITY", 0, 0),
        config_dir=Path(source.get("IMEX_CONFIG_DIR") or DEFAULT_CONFIG_DIR),
        hosts_file=Path(source.get("IMEX_HOSTS_FILE") or DEFAULT_HOSTS_FILE),
        imex_binary=source.get("IMEX_BINARY") or DEFAULT_IMEX_BINARY,
        imex_ctl_binary=source.get("IMEX_CTL_BINARY") or DEFAULT_IMEX_CTL_BINARY,
    )
