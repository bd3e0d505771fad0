"""The ComputeDomain CRD on a real API server: valid specs accepted, invalid ones rejected with
readable messages, the spec immutable, and `kubectl get` showing READY, NODES and CLIQUES."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from cdtestbed.controller_process import ControllerProcess
from computedomain.api import names
from support import testbed
from support.domains import Cluster, domain_manifest, unique
from support.observe import kubectl

pytestmark = pytest.mark.cluster


@pytest.fixture
def cd(api: client.ApiClient, operator_ready: str) -> Cluster:
    return Cluster(api, operator_ready)


async def rejection(cd: Cluster, manifest: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as caught:
        await cd.create_domain(manifest)
    assert caught.value.status == 422, caught.value.body
    # What `kubectl apply` prints: the server's message.
    return str(json.loads(caught.value.body or "{}")["message"])


async def test_a_minimal_domain_is_accepted_with_defaults(cd: Cluster, namespace: str) -> None:
    name = unique("cd")
    created = await cd.create_domain(domain_manifest(name, namespace))
    assert created["spec"] == {
        "numNodes": 0,
        "channel": {"resourceClaimTemplate": {"name": f"{name}-channel"}, "allocationMode": "Single"},
    }
    await cd.delete_domain(namespace, name)
    await cd.wait_nothing_left(created["metadata"]["uid"])


async def test_negative_num_nodes_is_rejected(cd: Cluster, namespace: str) -> None:
    message = await rejection(cd, domain_manifest(unique("cd"), namespace, num_nodes=-1))
    assert "spec.numNodes" in message
    assert "should be greater than or equal to 0" in message


async def test_an_unknown_allocation_mode_is_rejected(cd: Cluster, namespace: str) -> None:
    message = await rejection(cd, domain_manifest(unique("cd"), namespace, allocationMode="Some"))
    assert "spec.channel.allocationMode" in message
    assert 'Unsupported value: "Some"' in message
    assert '"Single"' in message
    assert '"All"' in message


async def test_a_missing_channel_is_rejected(cd: Cluster, namespace: str) -> None:
    manifest = domain_manifest(unique("cd"), namespace)
    del manifest["spec"]["channel"]
    message = await rejection(cd, manifest)
    assert "spec.channel: Required value" in message


async def test_a_missing_template_name_is_rejected(cd: Cluster, namespace: str) -> None:
    manifest = domain_manifest(unique("cd"), namespace)
    manifest["spec"]["channel"]["resourceClaimTemplate"] = {}
    message = await rejection(cd, manifest)
    assert "spec.channel.resourceClaimTemplate.name: Required value" in message


@pytest.mark.parametrize("name", ["Bad_Name.", "x" * 254, "-lead", "trail-", "UPPER"])
async def test_a_template_name_the_api_server_would_refuse_is_rejected(
    cd: Cluster, namespace: str, name: str
) -> None:
    manifest = domain_manifest(unique("cd"), namespace)
    manifest["spec"]["channel"]["resourceClaimTemplate"] = {"name": name}
    message = await rejection(cd, manifest)
    assert "spec.channel.resourceClaimTemplate.name" in message
    assert ("Too long" in message) if len(name) > 253 else ("DNS-1123 subdomain" in message)


async def test_a_valid_dotted_template_name_is_accepted(cd: Cluster, namespace: str) -> None:
    manifest = domain_manifest(unique("cd"), namespace)
    manifest["spec"]["channel"]["resourceClaimTemplate"] = {"name": "team.a-1.channel"}
    created = await cd.create_domain(manifest)
    assert created["spec"]["channel"]["resourceClaimTemplate"]["name"] == "team.a-1.channel"


async def test_the_spec_is_immutable(cd: Cluster, namespace: str) -> None:
    name = unique("cd")
    uid = (await cd.create_domain(domain_manifest(name, namespace, num_nodes=2)))["metadata"]["uid"]
    for patch in (
        {"spec": {"numNodes": 3}},
        {"spec": {"channel": {"resourceClaimTemplate": {"name": "other"}}}},
    ):
        with pytest.raises(ApiException) as caught:
            await cd.patch_domain(namespace, name, patch)
        assert caught.value.status == 422
        assert "A computeDomain.spec is immutable" in json.loads(caught.value.body or "{}")["message"]
    # Metadata stays editable.
    await cd.patch_domain(namespace, name, {"metadata": {"labels": {"team": "a"}}})
    await cd.delete_domain(namespace, name)
    await cd.wait_nothing_left(uid)


async def test_kubectl_get_shows_ready_nodes_and_cliques(
    cd: Cluster, cluster: testbed.Testbed, controller: ControllerProcess, namespace: str
) -> None:
    idle, waiting = unique("idle"), unique("waiting")
    await cd.create_domain(domain_manifest(idle, namespace))
    await cd.create_domain(domain_manifest(waiting, namespace, num_nodes=2))
    for name in (idle, waiting):
        await cd.wait_reconciled(namespace, name)

    table = await kubectl(
        cluster.kubeconfig, "get", names.DOMAIN_PLURAL, "-n", namespace, "--no-headers=false"
    )
    header, *rows = [line.split() for line in table.strip().splitlines()]
    assert header == ["NAME", "READY", "NODES", "CLIQUES", "AGE"]
    by_name = {row[0]: row[1:4] for row in rows}
    # An idle domain with numNodes 0 is Ready by NVIDIA's rule; numNodes 2 waits for two nodes.
    assert by_name == {idle: ["Ready", "0/0", "0"], waiting: ["NotReady", "0/2", "0"]}
    for name in (idle, waiting):
        await cd.delete_domain(namespace, name)
