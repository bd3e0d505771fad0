"""Controller settings, read from environment variables when the controller starts.

Variable names follow NVIDIA's compute-domain-controller where it has one, so a deployment written for
it keeps working.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from typing import ClassVar, Self

from pydantic import Field, field_validator, model_validator

from computedomain.api import names
from computedomain.envsettings import Converter, EnvSettings, SettingsError, parse_bool, parse_csv
from computedomain.logs import JSON, parse_log_format
from computedomain.quantity import canonical_quantity, quantity_value

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_GATE = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")

# Gates this controller cannot run without: it always shards peers into ComputeDomainCliques, which
# the daemons only read when both are on.
REQUIRED_GATES = ("ComputeDomainCliques", "IMEXDaemonsWithDNSNames")

# Field name -> environment variable.
ENV_NAMES: dict[str, str] = {
    "namespace": "NAMESPACE",
    "image": "IMAGE_NAME",
    "image_pull_secrets": "CD_DAEMON_IMAGE_PULL_SECRET_NAMES",
    "daemon_log_verbosity": "LOG_VERBOSITY_CD_DAEMON",
    "max_nodes_per_clique": "MAX_NODES_PER_IMEX_DOMAIN",
    "feature_gates": "FEATURE_GATES",
    "daemon_priority_class": "DAEMON_PRIORITY_CLASS",
    "daemon_cpu_request": "DAEMON_CPU_REQUEST",
    "daemon_memory_request": "DAEMON_MEMORY_REQUEST",
    "daemon_memory_limit": "DAEMON_MEMORY_LIMIT",
    "http_port": "HTTP_PORT",
    "json_logs": "LOG_FORMAT",
    "leader_election": "LEADER_ELECTION",
    "lease_name": "LEASE_NAME",
    "lease_duration": "LEASE_DURATION_SECONDS",
    "renew_deadline": "RENEW_DEADLINE_SECONDS",
    "retry_period": "RETRY_PERIOD_SECONDS",
    "pod_name": "POD_NAME",
    "sweep_interval": "SWEEP_INTERVAL_SECONDS",
    "status_batch_window": "STATUS_BATCH_SECONDS",
    "api_connections": "API_CONNECTIONS",
}


__all__ = ["ENV_NAMES", "REQUIRED_GATES", "Settings", "SettingsError", "parse_feature_gates"]


def _log_format_is_json(value: str) -> bool:
    return parse_log_format(value) == JSON


def parse_feature_gates(text: str) -> dict[str, bool]:
    """Parse `A=true,B=false,` (the reference's format; a trailing comma and spaces are fine)."""
    gates: dict[str, bool] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not _GATE.match(name) or value.lower() not in ("true", "false"):
            raise ValueError(f"{item!r} is not of the form Name=true or Name=false")
        gates[name] = value.lower() == "true"
    return gates


class Settings(EnvSettings):
    """Everything the controller is configured with. Build it with `Settings.from_env(os.environ)`;
    empty variables count as unset, and a `SettingsError` names each bad variable."""

    env_names: ClassVar[Mapping[str, str]] = ENV_NAMES
    converters: ClassVar[Mapping[str, Converter]] = {
        "image_pull_secrets": parse_csv,
        "json_logs": _log_format_is_json,
        "leader_election": parse_bool,
    }
    title: ClassVar[str] = "controller settings"

    namespace: str = Field(
        default="computedomain-system",
        description="Namespace of the controller; per-domain DaemonSets and cliques are created here.",
    )
    image: str = Field(min_length=1, description="Image of the IMEX daemon pods.")
    image_pull_secrets: tuple[str, ...] = Field(default=(), description="Pull secrets for the daemon image.")
    daemon_log_verbosity: int = Field(
        default=4, ge=0, le=10, description="Log verbosity of the IMEX daemons."
    )
    max_nodes_per_clique: int = Field(
        default=names.DEFAULT_MAX_NODES_PER_CLIQUE,
        ge=1,
        le=9999,  # IMEX peer names carry a four-digit index
        description="Most IMEX daemons in one clique of a domain; further nodes wait for a free slot.",
    )
    feature_gates: str = Field(
        default="ComputeDomainCliques=true,IMEXDaemonsWithDNSNames=true",
        description="Feature gates passed on to the IMEX daemons.",
    )
    daemon_priority_class: str = Field(
        default="", description="PriorityClass of the daemon pods; empty for none."
    )
    daemon_cpu_request: str = Field(default="10m", description="CPU request of each IMEX daemon.")
    daemon_memory_request: str = Field(default="64Mi", description="Memory request of each IMEX daemon.")
    daemon_memory_limit: str = Field(default="256Mi", description="Memory limit of each IMEX daemon.")
    http_port: int = Field(
        default=8080, ge=1, le=65535, description="Port of the metrics and health endpoints."
    )
    json_logs: bool = Field(default=False, description="Log JSON lines instead of text.")
    leader_election: bool = Field(default=True, description="Run only while holding the leader lease.")
    lease_name: str = Field(
        default="computedomain-controller", description="Name of the leader-election Lease."
    )
    lease_duration: float = Field(
        default=15.0, gt=0, description="Seconds a lease stays valid without renewal."
    )
    renew_deadline: float = Field(default=10.0, gt=0, description="Seconds the leader may take to renew.")
    retry_period: float = Field(
        default=2.0, gt=0, description="Seconds between attempts to acquire or renew."
    )
    pod_name: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        description=(
            "Name of this controller pod: the lease identity, unique per replica, kept across"
            " container restarts (default: the host name)."
        ),
    )
    sweep_interval: float = Field(
        default=600.0, gt=0, description="Seconds between sweeps for orphaned objects."
    )
    status_batch_window: float = Field(
        default=0.2,
        ge=0,
        description="Seconds to gather changes of one domain before reconciling it.",
    )
    api_connections: int = Field(
        default=32,
        ge=1,
        le=256,
        description=(
            "Connections to the API server the reconciles share. Each TLS connection holds a 256 KiB "
            "read buffer; more than the API server works on at once only costs memory."
        ),
    )

    @field_validator("namespace")
    @classmethod
    def _namespace_is_a_dns_label(cls, value: str) -> str:
        if not _DNS_LABEL.match(value):
            raise ValueError("must be a DNS label (lower case letters, digits and '-', at most 63)")
        return value

    @field_validator("image_pull_secrets", "daemon_priority_class", "lease_name")
    @classmethod
    def _object_names(cls, value: str | tuple[str, ...]) -> str | tuple[str, ...]:
        for name in (value,) if isinstance(value, str) else value:
            if name and not _DNS_SUBDOMAIN.match(name):
                raise ValueError(f"{name!r} is not a valid object name")
        return value

    @field_validator("feature_gates")
    @classmethod
    def _feature_gates(cls, value: str) -> str:
        gates = parse_feature_gates(value)
        disabled = [gate for gate in REQUIRED_GATES if gates.get(gate) is False]
        if disabled:
            raise ValueError(f"this controller needs {' and '.join(disabled)} enabled")
        return value.strip()

    @field_validator("daemon_cpu_request", "daemon_memory_request", "daemon_memory_limit")
    @classmethod
    def _quantity(cls, value: str) -> str:
        canonical = canonical_quantity(value)
        if canonical.startswith("-"):
            raise ValueError("must not be negative")
        return canonical

    @model_validator(mode="after")
    def _memory_limit_covers_request(self) -> Self:
        if quantity_value(self.daemon_memory_limit) < quantity_value(self.daemon_memory_request):
            raise ValueError("DAEMON_MEMORY_LIMIT must not be below DAEMON_MEMORY_REQUEST")
        return self

    @model_validator(mode="after")
    def _lease_timing(self) -> Self:
        if not self.lease_duration > self.renew_deadline > self.retry_period:
            raise ValueError(
                "leader election needs LEASE_DURATION_SECONDS > RENEW_DEADLINE_SECONDS > RETRY_PERIOD_SECONDS"
            )
        return self

    @property
    def gates(self) -> dict[str, bool]:
        """The feature gates as a mapping."""
        return parse_feature_gates(self.feature_gates)
