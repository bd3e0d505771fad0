"""The ComputeDomain API as pydantic models: the single source of truth for our CRDs.

Field names are snake_case in Python and camelCase on the wire. Every field description is user-facing:
`computedomain.api.crd` turns these models into the CRD schemas that `kubectl explain` reads.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from computedomain import objects
from computedomain.api import names

ReadyState = Literal["Ready", "NotReady"]
AllocationMode = Literal["Single", "All"]
ConditionStatus = Literal["True", "False", "Unknown"]


def wire_name(field: str) -> str:
    """camelCase with Kubernetes' upper-case initialism: clique_id -> cliqueID, ip_address -> ipAddress."""
    camel = to_camel(field)
    return f"{camel[:-2]}ID" if camel.endswith("Id") else camel


def _list_map(*keys: str) -> dict[str, Any]:
    """Schema markers that make a list merge per key under server-side apply."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


# An object name as the API server accepts it (DNS-1123 subdomain), also checked by the CRD's CEL rule.
DNS_SUBDOMAIN = objects.DNS_SUBDOMAIN
DNS_MESSAGE = (
    "must be a valid object name (DNS-1123 subdomain): at most 253 lower case letters, digits, '-' "
    "and '.', starting and ending with a letter or digit"
)


class WireModel(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields ignored (objects evolve)."""

    model_config = ConfigDict(
        alias_generator=wire_name,
        populate_by_name=True,
        serialize_by_alias=True,
        extra="ignore",
    )


# --- ComputeDomain spec ---------------------------------------------------------------------------


class ChannelTemplateRef(WireModel):
    """Names the ResourceClaimTemplate that the operator creates for the workload's IMEX channel."""

    name: str = Field(
        min_length=1,
        max_length=253,
        description=(
            "Name of the ResourceClaimTemplate the operator creates in this ComputeDomain's namespace. "
            "Reference it from a pod's spec.resourceClaims[].resourceClaimTemplateName and list the "
            "claim in each container's resources.claims to give that container an IMEX channel."
        ),
        # Checked at the door: a name the API server would refuse for the template could otherwise
        # only show up later, as a failed write.
        json_schema_extra={
            "x-kubernetes-validations": [{"rule": f"self.matches('{DNS_SUBDOMAIN}')", "message": DNS_MESSAGE}]
        },
    )

    @field_validator("name")
    @classmethod
    def _dns_subdomain(cls, value: str) -> str:
        if not objects.is_dns_subdomain(value):
            raise ValueError(DNS_MESSAGE)
        return value


class ChannelSpec(WireModel):
    """How workload pods receive IMEX channels of this domain."""

    resource_claim_template: ChannelTemplateRef = Field(
        description="The ResourceClaimTemplate that workload pods use to request an IMEX channel.",
    )
    allocation_mode: AllocationMode = Field(
        default="Single",
        description=(
            "Which IMEX channels a workload container receives. Single: channel 0 only, which is what "
            "CUDA uses by default. All: every channel the node offers (0 to 2047)."
        ),
    )


class ComputeDomainSpec(WireModel):
    """Desired state of a ComputeDomain. The whole spec is immutable once created."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "A computeDomain.spec is immutable"},
            ],
        },
    )

    num_nodes: int = Field(
        default=0,
        ge=0,
        description=(
            "Deprecated: the operator adds nodes as workload pods land on them. Only affects "
            "status.status, which stays NotReady while fewer than numNodes nodes have joined. "
            "0 (the default) does not wait for any count."
        ),
    )
    channel: ChannelSpec = Field(
        description="The IMEX channel that workload pods of this domain request.",
    )


# --- ComputeDomain status -------------------------------------------------------------------------


class NodeEntry(WireModel):
    """One node of the domain and the state of its IMEX daemon."""

    name: str = Field(description="Name of the Kubernetes node.")
    ip_address: str = Field(description="IP address of the IMEX daemon pod on this node.")
    clique_id: str = Field(
        description=(
            "NVLink clique of the node, as <clusterUUID>.<cliqueId>; empty for a node without a "
            "multi-node NVLink fabric."
        ),
    )
    index: int | None = Field(
        default=None,
        description=(
            "Slot of the node's IMEX daemon in its clique (0 to the clique size minus 1), which fixes "
            "its IMEX peer name. -1 for a node without an NVLink fabric."
        ),
    )
    status: ReadyState = Field(default="NotReady", description="Readiness of the IMEX daemon on this node.")


class Condition(WireModel):
    """A standard Kubernetes condition (the shape of metav1.Condition)."""

    type: str = Field(min_length=1, max_length=316, description="Kind of condition, e.g. Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        description="CamelCase machine-readable reason for the last transition.",
    )
    message: str = Field(max_length=32768, description="Human-readable details about the condition.")
    last_transition_time: str = Field(
        json_schema_extra={"format": "date-time"},
        description="When the condition last changed status (RFC 3339).",
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation of the ComputeDomain this condition was computed from.",
    )


class ComputeDomainStatus(WireModel):
    """Observed state of a ComputeDomain, written by the operator."""

    model_config = ConfigDict(json_schema_extra={"required": ["status"]})

    status: ReadyState = Field(
        default="NotReady",
        description=(
            "Ready when at least spec.numNodes nodes have joined and every joined node's IMEX daemon is "
            "ready. For people and dashboards; workloads should not wait on it."
        ),
    )
    nodes: list[NodeEntry] = Field(
        default_factory=list,
        description="Nodes of the domain with their clique, IMEX slot and daemon readiness.",
        # Atomic, not a map keyed by name: the controller is the list's only writer, and a map makes
        # the API server track an owner per entry in managedFields, which nearly doubles the stored
        # object of a 5,000-node domain (past 1 MiB); readers see the same list either way.
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description=(
            "Ready explains why the domain is or is not ready; ChildrenReady reports whether the "
            "operator's DaemonSet and ResourceClaimTemplates are in place."
        ),
        json_schema_extra=_list_map("type"),
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation that this status describes.",
    )
    ready_nodes: int | None = Field(
        default=None, ge=0, description="Number of nodes whose IMEX daemon is ready."
    )
    joined_nodes: int | None = Field(default=None, ge=0, description="Number of nodes in status.nodes.")
    clique_count: int | None = Field(
        default=None, ge=0, description="Number of NVLink cliques the domain spans."
    )
    node_summary: str | None = Field(
        default=None,
        description="Ready nodes over expected nodes (spec.numNodes, or joined nodes if more), e.g. 3/4.",
    )


# --- Object metadata ------------------------------------------------------------------------------


class OwnerReference(WireModel):
    """An owner of an object, as in metav1.OwnerReference."""

    api_version: str = Field(description="API version of the owner.")
    kind: str = Field(description="Kind of the owner.")
    name: str = Field(description="Name of the owner.")
    uid: str = Field(description="UID of the owner.")
    controller: bool | None = Field(default=None, description="True if the owner is the managing controller.")
    block_owner_deletion: bool | None = Field(
        default=None,
        description="True if the owner cannot be deleted in the foreground before this object.",
    )


class ObjectMeta(WireModel):
    """The part of metav1.ObjectMeta the operator reads; other fields are ignored."""

    name: str = Field(default="", description="Name of the object.")
    namespace: str = Field(default="", description="Namespace of the object.")
    uid: str = Field(default="", description="UID the API server gave the object.")
    generation: int = Field(default=0, description="Generation of the desired state.")
    resource_version: str = Field(default="", description="Version of the object for optimistic concurrency.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels of the object.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations of the object.")
    deletion_timestamp: str | None = Field(default=None, description="Set once deletion of the object began.")
    finalizers: list[str] = Field(default_factory=list, description="Finalizers blocking deletion.")
    owner_references: list[OwnerReference] = Field(default_factory=list, description="Owners.")
    creation_timestamp: str | None = Field(default=None, description="When the object was created.")


# --- Top-level kinds ------------------------------------------------------------------------------


class ComputeDomain(WireModel):
    """A ComputeDomain lets the pods of one workload share GPU memory across nodes over multi-node NVLink.

    The operator creates the ResourceClaimTemplate named in spec.channel. Each node where a pod using that
    template is scheduled joins the domain: the operator starts an IMEX daemon there and links it with the
    daemons on the other nodes of the same NVLink clique. Containers that claim the template receive an
    IMEX channel device.
    """

    api_version: str = Field(default=names.API_VERSION, description="Always resource.nvidia.com/v1beta1.")
    kind: str = Field(default=names.DOMAIN_KIND, description="Always ComputeDomain.")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Standard object metadata.")
    spec: ComputeDomainSpec = Field(description="Desired state of the domain; immutable once created.")
    status: ComputeDomainStatus | None = Field(
        default=None, description="Observed state, written by the operator."
    )

    @property
    def uid(self) -> str:
        """The domain's metadata.uid, the value of every domain label."""
        return self.metadata.uid

    @property
    def name(self) -> str:
        """The domain's metadata.name."""
        return self.metadata.name

    @property
    def namespace(self) -> str:
        """The domain's metadata.namespace."""
        return self.metadata.namespace


class CliqueDaemon(WireModel):
    """The IMEX daemon of one node within one NVLink clique of a ComputeDomain."""

    node_name: str = Field(description="Name of the Kubernetes node the daemon runs on.")
    ip_address: str = Field(description="IP address of the daemon pod.")
    clique_id: str = Field(description="NVLink clique, as <clusterUUID>.<cliqueId>.")
    index: int | None = Field(
        default=None,
        description="Slot of the daemon in the clique; fixes its IMEX peer name. Unique per clique.",
    )
    status: ReadyState = Field(default="NotReady", description="Readiness of the daemon.")


class ComputeDomainClique(WireModel):
    """The IMEX daemons of one ComputeDomain within one NVLink clique, kept by the operator.

    Named <domain UID>.<clique ID> and labelled with both; IMEX daemons read it to find their peers.
    """

    api_version: str = Field(default=names.API_VERSION, description="Always resource.nvidia.com/v1beta1.")
    kind: str = Field(default=names.CLIQUE_KIND, description="Always ComputeDomainClique.")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Standard object metadata.")
    daemons: list[CliqueDaemon] = Field(
        default_factory=list,
        description="The daemons of the clique, one per node.",
        json_schema_extra=_list_map("nodeName"),
    )
    channel: int | None = Field(
        default=None,
        ge=1,
        le=names.DEFAULT_IMEX_CHANNELS - 1,
        description=(
            "Clique mode only: the IMEX channel the operator gave this domain in this clique, unique "
            "among the domains of the clique; absent while none is free. Channel 0 is never given."
        ),
    )
    queued_at: str | None = Field(
        default=None,
        json_schema_extra={"format": "date-time"},
        description=(
            "Clique mode only: when the operator saw the first claim of this domain allocated in this "
            "clique (RFC 3339, microseconds). Domains waiting for a channel are served in the order of "
            "their claims' allocation times, and within one second in this order."
        ),
    )
    nodes: list[str] | None = Field(
        default=None,
        json_schema_extra={"items": {"type": "string", "description": "A node name."}},
        description=(
            "Clique mode only: the nodes of this clique where claims of this domain are allocated, "
            "including nodes that left the clique since: the channel stays held until those claims go."
        ),
    )


# --- Opaque DRA configs (travel inside ResourceClaims; not CRDs) ----------------------------------


class _OpaqueConfig(WireModel):
    """Strict base of the opaque configs: unknown fields are an error, as for NVIDIA's decoder."""

    model_config = ConfigDict(extra="forbid")
    expected_kind: ClassVar[str]

    api_version: str = Field(default=names.API_VERSION, description="Always resource.nvidia.com/v1beta1.")
    kind: str = Field(description="Kind of the config.")
    domain_id: str = Field(default="", description="UID of the ComputeDomain.")

    @field_validator("api_version")
    @classmethod
    def _known_api_version(cls, value: str) -> str:
        if value != names.API_VERSION:
            raise ValueError(f"apiVersion must be {names.API_VERSION}, not {value!r}")
        return value

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value != cls.expected_kind:
            raise ValueError(f"kind must be {cls.expected_kind}, not {value!r}")
        return value

    # Shadows pydantic's deprecated v1 classmethod on purpose: the name mirrors NVIDIA's Validate().
    def validate(self) -> None:  # type: ignore[override]
        """Reject a config that names no domain, as the kubelet plugin does."""
        if not self.domain_id:
            raise ValueError("domainID cannot be empty")

    def to_parameters(self) -> dict[str, Any]:
        """The config as it goes into a claim's `opaque.parameters` (unset optional fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)


class ComputeDomainChannelConfig(_OpaqueConfig):
    """Opaque config of a workload channel claim."""

    expected_kind: ClassVar[str] = names.CHANNEL_CONFIG_KIND

    kind: str = Field(default=names.CHANNEL_CONFIG_KIND, description="Always ComputeDomainChannelConfig.")
    allocation_mode: str | None = Field(
        default=None,
        description="All gives every channel; anything else gives channel 0 only.",
    )


class ComputeDomainDaemonConfig(_OpaqueConfig):
    """Opaque config of an IMEX daemon claim."""

    expected_kind: ClassVar[str] = names.DAEMON_CONFIG_KIND

    kind: str = Field(default=names.DAEMON_CONFIG_KIND, description="Always ComputeDomainDaemonConfig.")
