"""The API models parse what the API server returns and write the wire names NVIDIA's components read."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from computedomain.api import names
from computedomain.api.models import (
    ChannelTemplateRef,
    ComputeDomain,
    ComputeDomainChannelConfig,
    ComputeDomainClique,
    ComputeDomainDaemonConfig,
    ComputeDomainSpec,
    NodeEntry,
    wire_name,
)

UID = "0c9d7c4e-7b1a-4a63-9a55-1f1f0d6f2a10"
CLIQUE = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22.32766"


def served_domain() -> dict[str, Any]:
    """A ComputeDomain as the API server returns it, with fields the models do not know."""
    return {
        "apiVersion": "resource.nvidia.com/v1beta1",
        "kind": "ComputeDomain",
        "metadata": {
            "name": "train-cd",
            "namespace": "default",
            "uid": UID,
            "generation": 1,
            "resourceVersion": "4711",
            "creationTimestamp": "2026-05-15T10:00:00Z",
            "finalizers": ["resource.nvidia.com/computeDomain"],
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
        },
        "spec": {
            "numNodes": 2,
            "channel": {"resourceClaimTemplate": {"name": "train-cd-channel"}, "allocationMode": "All"},
            "futureField": True,
        },
        "status": {
            "status": "NotReady",
            "nodes": [
                {
                    "name": "gb200-n01",
                    "ipAddress": "10.244.3.17",
                    "cliqueID": CLIQUE,
                    "index": 0,
                    "status": "Ready",
                },
                {"name": "h100-n07", "ipAddress": "10.244.9.4", "cliqueID": "", "index": -1},
            ],
        },
    }


def test_parses_a_served_domain() -> None:
    domain = ComputeDomain.model_validate(served_domain())

    assert (domain.uid, domain.name, domain.namespace) == (UID, "train-cd", "default")
    assert domain.metadata.generation == 1
    assert domain.metadata.finalizers == [names.FINALIZER]
    assert domain.spec.num_nodes == 2
    assert domain.spec.channel.resource_claim_template.name == "train-cd-channel"
    assert domain.spec.channel.allocation_mode == "All"
    assert domain.status is not None
    assert [n.clique_id for n in domain.status.nodes] == [CLIQUE, ""]
    assert domain.status.nodes[1].status == "NotReady"  # the schema default


def test_spec_defaults_match_the_reference() -> None:
    spec = ComputeDomainSpec.model_validate({"channel": {"resourceClaimTemplate": {"name": "x"}}})

    assert spec.num_nodes == 0
    assert spec.channel.allocation_mode == "Single"


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"channel": {"resourceClaimTemplate": {"name": ""}}},
        {"channel": {"resourceClaimTemplate": {"name": "x"}, "allocationMode": "Some"}},
        {"channel": {"resourceClaimTemplate": {"name": "x"}}, "numNodes": -1},
    ],
)
def test_rejects_invalid_specs(spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ComputeDomainSpec.model_validate(spec)


def test_dumps_wire_names() -> None:
    entry = NodeEntry(name="n", ip_address="10.0.0.1", clique_id=CLIQUE, index=3, status="Ready")

    assert entry.model_dump() == {
        "name": "n",
        "ipAddress": "10.0.0.1",
        "cliqueID": CLIQUE,
        "index": 3,
        "status": "Ready",
    }


@pytest.mark.parametrize(
    ("field", "wire"),
    [("clique_id", "cliqueID"), ("domain_id", "domainID"), ("ip_address", "ipAddress"), ("uid", "uid")],
)
def test_wire_names_use_upper_case_initialisms(field: str, wire: str) -> None:
    assert wire_name(field) == wire


def test_parses_a_clique_as_nvidia_daemons_write_it() -> None:
    clique = ComputeDomainClique.model_validate(
        {
            "apiVersion": "resource.nvidia.com/v1beta1",
            "kind": "ComputeDomainClique",
            "metadata": {
                "name": f"{UID}.{CLIQUE}",
                "labels": {names.DOMAIN_LABEL: UID, names.CLIQUE_LABEL: CLIQUE},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u1"}],
            },
            "daemons": [
                {"nodeName": "gb200-n01", "ipAddress": "10.244.3.17", "cliqueID": CLIQUE, "index": 0}
            ],
        }
    )

    assert clique.metadata.owner_references[0].kind == "Pod"
    assert clique.daemons[0].node_name == "gb200-n01"
    assert clique.daemons[0].status == "NotReady"


def test_channel_config_parameters() -> None:
    config = ComputeDomainChannelConfig(domain_id=UID, allocation_mode="Single")

    assert config.to_parameters() == {
        "apiVersion": "resource.nvidia.com/v1beta1",
        "kind": "ComputeDomainChannelConfig",
        "domainID": UID,
        "allocationMode": "Single",
    }


def test_channel_config_leaves_out_an_unset_allocation_mode() -> None:
    assert "allocationMode" not in ComputeDomainChannelConfig(domain_id=UID).to_parameters()


def test_daemon_config_round_trips() -> None:
    parameters = {
        "apiVersion": "resource.nvidia.com/v1beta1",
        "kind": "ComputeDomainDaemonConfig",
        "domainID": UID,
    }

    assert ComputeDomainDaemonConfig.model_validate(parameters).to_parameters() == parameters


@pytest.mark.parametrize(
    "parameters",
    [
        {"kind": "ComputeDomainDaemonConfig", "domainID": UID, "unknown": 1},
        {"kind": "ComputeDomainChannelConfig", "domainID": UID},
        {"apiVersion": "resource.nvidia.com/v1", "kind": "ComputeDomainDaemonConfig", "domainID": UID},
    ],
)
def test_opaque_configs_are_strict(parameters: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ComputeDomainDaemonConfig.model_validate(parameters)


@pytest.mark.parametrize("config_type", [ComputeDomainChannelConfig, ComputeDomainDaemonConfig])
def test_validate_rejects_an_empty_domain_id(
    config_type: type[ComputeDomainChannelConfig] | type[ComputeDomainDaemonConfig],
) -> None:
    config_type(domain_id=UID).validate()
    with pytest.raises(ValueError, match="domainID cannot be empty"):
        config_type().validate()


@pytest.mark.parametrize("name", ["Bad_Name.", "x" * 254, "-a", "a-", "A", "a..b", ""])
def test_a_template_name_the_api_server_would_refuse_is_invalid(name: str) -> None:
    with pytest.raises(ValidationError):
        ChannelTemplateRef.model_validate({"name": name})


@pytest.mark.parametrize("name", ["a", "team.a-1.channel", "x" * 253])
def test_dns_subdomain_template_names_are_valid(name: str) -> None:
    assert ChannelTemplateRef.model_validate({"name": name}).name == name
