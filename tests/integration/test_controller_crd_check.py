"""The controller's start-up check of the installed CRDs, on a control plane of its own.

The ComputeDomain CRD is installed as NVIDIA's chart installs it (our schema without our status fields
and printer columns), as happens when Helm keeps an existing CRD. The controller must say so in its log,
in a Warning Event that `kubectl describe crd` shows and in a metric, and keep reconciling; once our
CRD is applied, a restarted controller finds nothing to report.
"""

from __future__ import annotations

import asyncio
import copy
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from cdtestbed.cluster import ClusterOptions
from cdtestbed.connection import connection_of
from cdtestbed.controller_process import ControllerProcess
from cdtestbed.dra import install_device_classes
from cdtestbed.install import apply_crds, crd_manifests, ensure_namespace
from cdtestbed.tools import Tools
from computedomain.api import names
from computedomain.kube import DOMAINS, EVENTS, Kube
from conftest import controller_env
from support.domains import DOMAINS_CRD, OUR_STATUS_FIELDS
from support.testbed import ControlPlane, private_control_plane
from support.waiting import eventually

pytestmark = pytest.mark.cluster

NAMESPACE = "computedomain-system"
OUTDATED = 'computedomain_crd_outdated{crd="computedomains.resource.nvidia.com"}'

plane = private_control_plane("crdcheck-", ClusterOptions(controllers=False))


def nvidia_like(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Our CRDs, with the ComputeDomain CRD cut down to what NVIDIA's chart installs."""
    reduced = copy.deepcopy(manifests)
    domain = next(m for m in reduced if m["metadata"]["name"] == DOMAINS_CRD)
    [version] = domain["spec"]["versions"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    for field in OUR_STATUS_FIELDS:
        del status["properties"][field]
    del version["additionalPrinterColumns"]
    return reduced


@pytest_asyncio.fixture(scope="module")
async def kube(plane: ControlPlane) -> AsyncIterator[Kube]:
    await apply_crds(plane.api, nvidia_like(crd_manifests()))
    await ensure_namespace(plane.api, NAMESPACE)
    await install_device_classes(plane.api)
    admin = Kube(connection_of(plane.api), field_manager="crd-check-test")
    yield admin
    await admin.close()


async def crd_events(kube: Kube) -> list[dict[str, Any]]:
    items, _ = await kube.list(EVENTS, "default", field_selector=f"involvedObject.name={DOMAINS_CRD}")
    return [e for e in items if e["reason"] == "CRDOutdated"]


async def some_crd_events(kube: Kube) -> list[dict[str, Any]] | None:
    return await crd_events(kube) or None


async def test_an_outdated_crd_is_reported_and_the_controller_keeps_working(
    plane: ControlPlane, kube: Kube
) -> None:
    logs = plane.cluster.logs
    controller = ControllerProcess(
        plane.cluster.kubeconfig, logs / "controller-outdated.log", controller_env(NAMESPACE)
    )
    controller.start()
    try:
        events = await eventually(lambda: some_crd_events(kube), timeout=30, what="the CRDOutdated Event")
        [event] = events
        crd = await client.ApiextensionsV1Api(plane.api).read_custom_resource_definition(DOMAINS_CRD)
        # Where `kubectl describe crd` looks: a reference without namespace, the Event in `default`.
        reference = event["involvedObject"]
        assert "namespace" not in reference
        assert (reference["apiVersion"], reference["kind"], reference["name"], reference["uid"]) == (
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            DOMAINS_CRD,
            crd.metadata.uid,
        )
        assert event["type"] == "Warning"
        described = await asyncio.to_thread(
            subprocess.run,
            [str(Tools.default().bin("kubectl")), "describe", "crd", DOMAINS_CRD],
            env={"KUBECONFIG": str(plane.cluster.kubeconfig), "HOME": str(plane.cluster.workdir)},
            capture_output=True,
            text=True,
            check=True,
        )
        assert "CRDOutdated" in described.stdout
        assert ".status.conditions, .status.observedGeneration, .status.readyNodes" in event["message"]
        assert "printer columns Ready, Nodes, Cliques" in event["message"]
        assert "kubectl apply --server-side --force-conflicts" in event["message"]
        log = controller.log.read_text()
        assert (
            f"ERROR computedomain.controller.runtime.crdcheck: CustomResourceDefinition {DOMAINS_CRD}" in log
        )
        assert controller.metric(OUTDATED) == 1

        # It keeps reconciling: a domain gets its status, less what the old CRD prunes.
        await kube.create(
            DOMAINS,
            {
                "apiVersion": names.API_VERSION,
                "kind": names.DOMAIN_KIND,
                "metadata": {"name": "cd", "namespace": NAMESPACE},
                "spec": {"channel": {"resourceClaimTemplate": {"name": "cd-channel"}}},
            },
        )

        async def status() -> dict[str, Any] | None:
            domain = await kube.get(DOMAINS, "cd", NAMESPACE) or {}
            written: dict[str, Any] = domain.get("status") or {}
            return written if written.get("status") else None

        written = await eventually(status, timeout=30, what="the domain's status")
        assert "conditions" not in written
        assert "readyNodes" not in written
        assert controller.process is not None
        assert controller.process.poll() is None
        assert controller.get("/readyz")[0] == 200
    finally:
        controller.stop()

    # Our CRD applied (the fix the message gives): the next start finds nothing to report.
    await apply_crds(plane.api)
    controller = ControllerProcess(
        plane.cluster.kubeconfig, logs / "controller-fixed.log", controller_env(NAMESPACE)
    )
    controller.start()
    try:

        async def checked() -> bool:
            return "has every field this controller writes" in controller.log.read_text()

        await eventually(checked, timeout=30, what="the check of our CRD")
        assert controller.metric(OUTDATED) == 0
        assert len(await crd_events(kube)) == 1
        assert "is not the one this operator ships" not in controller.log.read_text()
    finally:
        controller.stop()
