"""Controller settings, read from environment variables when the controller starts.

Variable names follow NVIDIA's compute-domain-controller where it has one, so a deployment written for
it keeps working.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from typing import ClassVar, Literal, Self

from pydantic import Field, field_validator, model_validator

from computedomain.api import names
from computedomain.envsettings import CommaList, EnvBool, EnvSettings, JsonLogs, LogLevel, SettingsError
from computedomain.logs import JSON, TEXT
from computedomain.objects import is_dns_label, is_dns_subdomain
from computedomain.quantity import canonical_quantity, quantity_value

_GATE = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")

# Gates this controller cannot run without: it always shards peers into ComputeDomainCliques, which
# the daemons only read when both are on.
REQUIRED_GATES = ("ComputeDomainCliques", "IMEXDaemonsWithDNSNames")

__all__ = ["ENV_NAMES", "REQUIRED_GATES", "Settings", "SettingsError", "parse_feature_gates"]


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

    title: ClassVar[str] = "controller settings"

    namespace: str = Field(
        validation_alias="NAMESPACE",
        default="computedomain-system",
        description="Namespace of the controller; per-domain DaemonSets and cliques are created here.",
    )
    image: str = Field(
        validation_alias="IMAGE_NAME", min_length=1, description="Image of the IMEX daemon pods."
    )
    image_pull_secrets: CommaList = Field(
        validation_alias="CD_DAEMON_IMAGE_PULL_SECRET_NAMES",
        default=(),
        description="Pull secrets for the daemon image.",
    )
    daemon_log_verbosity: int = Field(
        validation_alias="LOG_VERBOSITY_CD_DAEMON",
        default=4,
        ge=0,
        le=10,
        description="Log verbosity of the IMEX daemons.",
    )
    max_nodes_per_clique: int = Field(
        validation_alias="MAX_NODES_PER_IMEX_DOMAIN",
        default=names.DEFAULT_MAX_NODES_PER_CLIQUE,
        ge=1,
        le=9999,  # IMEX peer names carry a four-digit index
        description="Most IMEX daemons in one clique of a domain; further nodes wait for a free slot.",
    )
    feature_gates: str = Field(
        validation_alias="FEATURE_GATES",
        default="ComputeDomainCliques=true,IMEXDaemonsWithDNSNames=true",
        description="Feature gates passed on to the IMEX daemons.",
    )
    daemon_priority_class: str = Field(
        validation_alias="DAEMON_PRIORITY_CLASS",
        default="",
        description="PriorityClass of the daemon pods; empty for none.",
    )
    daemon_pod_annotations: dict[str, str] = Field(
        validation_alias="DAEMON_POD_ANNOTATIONS",
        default_factory=dict,
        description=(
            "Annotations of the daemon pods, as a JSON object (e.g. a service mesh's opt-out); the "
            "scrape annotations the controller sets win over them."
        ),
    )
    daemon_cpu_request: str = Field(
        validation_alias="DAEMON_CPU_REQUEST", default="10m", description="CPU request of each IMEX daemon."
    )
    daemon_memory_request: str = Field(
        validation_alias="DAEMON_MEMORY_REQUEST",
        default="64Mi",
        description="Memory request of each IMEX daemon.",
    )
    daemon_memory_limit: str = Field(
        validation_alias="DAEMON_MEMORY_LIMIT",
        default="256Mi",
        description="Memory limit of each IMEX daemon.",
    )
    http_port: int = Field(
        validation_alias="HTTP_PORT",
        default=8080,
        ge=1,
        le=65535,
        description="Port of the metrics and health endpoints.",
    )
    daemon_http_port: int = Field(
        validation_alias="DAEMON_HTTP_PORT",
        default=0,
        ge=0,
        le=65535,
        description=(
            "Port of the IMEX daemons' metrics and health endpoints; 0 for none. Each daemon pod has a "
            "network namespace of its own, so one port serves every domain's daemon on a node; the chart "
            "sets 8080."
        ),
    )
    json_logs: JsonLogs = Field(
        validation_alias="LOG_FORMAT", default=False, description="Log JSON lines instead of text."
    )
    leader_election: EnvBool = Field(
        validation_alias="LEADER_ELECTION",
        default=True,
        description="Run only while holding the leader lease.",
    )
    lease_name: str = Field(
        validation_alias="LEASE_NAME",
        default="computedomain-controller",
        description="Name of the leader-election Lease.",
    )
    lease_duration: float = Field(
        validation_alias="LEASE_DURATION_SECONDS",
        default=15.0,
        gt=0,
        description="Seconds a lease stays valid without renewal.",
    )
    renew_deadline: float = Field(
        validation_alias="RENEW_DEADLINE_SECONDS",
        default=10.0,
        gt=0,
        description="Seconds the leader may take to renew.",
    )
    retry_period: float = Field(
        validation_alias="RETRY_PERIOD_SECONDS",
        default=2.0,
        gt=0,
        description="Seconds between attempts to acquire or renew.",
    )
    pod_name: str = Field(
        validation_alias="POD_NAME",
        default_factory=socket.gethostname,
        min_length=1,
        description=(
            "Name of this controller pod: the lease identity, unique per replica, kept across"
            " container restarts (default: the host name)."
        ),
    )
    sweep_interval: float = Field(
        validation_alias="SWEEP_INTERVAL_SECONDS",
        default=600.0,
        gt=0,
        description="Seconds between sweeps for orphaned objects.",
    )
    status_batch_window: float = Field(
        validation_alias="STATUS_BATCH_SECONDS",
        default=0.2,
        ge=0,
        description="Seconds to gather changes of one domain before reconciling it.",
    )
    api_connections: int = Field(
        validation_alias="API_CONNECTIONS",
        default=32,
        ge=1,
        le=256,
        description=(
            "Connections to the API server the reconciles share. Each TLS connection holds a 256 KiB "
            "read buffer; more than the API server works on at once only costs memory."
        ),
    )

    imex_mode: Literal["domain", "clique"] = Field(
        validation_alias="IMEX_MODE",
        default="domain",
        description=(
            "domain: an IMEX daemon set per ComputeDomain (NVIDIA's behaviour). clique: long-running IMEX "
            "daemons per NVLink clique, and each domain gets an IMEX channel of its own in each clique."
        ),
    )
    imex_channels: int = Field(
        validation_alias="IMEX_CHANNELS",
        default=names.DEFAULT_IMEX_CHANNELS,
        ge=2,
        le=names.DEFAULT_IMEX_CHANNELS,
        description=(
            "IMEX channels per clique in clique mode (the driver's count; smaller to test exhaustion). "
            "Channel 0 is never given to a domain, so domains get channels 1 to IMEX_CHANNELS-1."
        ),
    )

    log_level: LogLevel = Field(
        default="INFO", validation_alias="LOG_LEVEL", description="A level name of the logging module."
    )

    @field_validator("namespace")
    @classmethod
    def _namespace_is_a_dns_label(cls, value: str) -> str:
        if not is_dns_label(value):
            raise ValueError("must be a DNS label (lower case letters, digits and '-', at most 63)")
        return value

    @field_validator("image_pull_secrets", "daemon_priority_class", "lease_name")
    @classmethod
    def _object_names(cls, value: str | tuple[str, ...]) -> str | tuple[str, ...]:
        for name in (value,) if isinstance(value, str) else value:
            if name and not is_dns_subdomain(name):
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

    @property
    def log_format(self) -> str:
        """`json` or `text`, as LOG_FORMAT gave it."""
        return JSON if self.json_logs else TEXT


# Field name -> environment variable.
ENV_NAMES: Mapping[str, str] = Settings.env_names
