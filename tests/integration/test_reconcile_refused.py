"""A write the API server refuses is told where users look: the domain's Ready condition carries the
server's own message and one Warning Event says it, while the controller keeps retrying; once the
refusal is lifted, the domain recovers by itself.

The refusal is real: a ValidatingAdmissionPolicy makes the API server answer 403 to the DaemonSet of
this test's domains (and only those, matched by the namespace the DaemonSet's daemons serve).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import pytest_asyncio
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from cdtestbed.controller_process import ControllerProcess
from computedomain.api import names
from support.domains import Cluster, Object, condition, domain_manifest, unique
from support.waiting import eventually

pytestmark = pytest.mark.cluster

ERRORS = "computedomain_reconcile_errors_total"
REFUSAL = "DaemonSets of this namespace's ComputeDomains are frozen for maintenance"


@pytest.fixture
def cd(api: client.ApiClient, operator_ready: str, controller: ControllerProcess) -> Cluster:
    return Cluster(api, operator_ready)


def _serves(namespace: str) -> str:
    """CEL: the DaemonSet's daemons serve a domain of `namespace` (the env the renderer sets)."""
    return (
        "object.spec.template.spec.containers.exists(c, has(c.env) && c.env.exists(e, "
        f"e.name == 'COMPUTE_DOMAIN_NAMESPACE' && has(e.value) && e.value == '{namespace}'))"
    )


def policy(name: str, namespace: str) -> Object:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["apps"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["daemonsets"],
                    }
                ]
            },
            "validations": [
                {"expression": f"!({_serves(namespace)})", "message": REFUSAL, "reason": "Forbidden"}
            ],
        },
    }


def binding(name: str) -> Object:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    }


def probe_daemonset(namespace: str) -> Object:
    labels = {"app": "refusal-probe"}
    container = {"name": "c", "image": "i", "env": [{"name": "COMPUTE_DOMAIN_NAMESPACE", "value": namespace}]}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "refusal-probe"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


class Refusal:
    """The admission policy that refuses the DaemonSets of one namespace's domains."""

    def __init__(self, cd: Cluster, namespace: str) -> None:
        self.cd = cd
        self.namespace = namespace
        self.name = unique("refuse-daemonsets")
        self.admission = client.AdmissionregistrationV1Api(cd.api)

    async def start(self) -> None:
        await self.admission.create_validating_admission_policy(cast(Any, policy(self.name, self.namespace)))
        await self.admission.create_validating_admission_policy_binding(cast(Any, binding(self.name)))
        # A policy takes effect once the API server has loaded it: wait until a dry run is refused.
        await eventually(self._refused, timeout=30, what="the admission policy in force")

    async def _refused(self) -> bool:
        try:
            await self.cd.apps.create_namespaced_daemon_set(
                self.cd.operator_namespace, cast(Any, probe_daemonset(self.namespace)), dry_run="All"
            )
        except ApiException as error:
            if error.status == 403 and REFUSAL in str(error.body):
                return True
            raise
        return False

    async def lift(self) -> None:
        for delete in (
            self.admission.delete_validating_admission_policy_binding,
            self.admission.delete_validating_admission_policy,
        ):
            try:
                await delete(self.name)
            except ApiException as error:
                if error.status != 404:
                    raise


@pytest_asyncio.fixture
async def refusal(cd: Cluster, namespace: str) -> AsyncIterator[Refusal]:
    refused = Refusal(cd, namespace)
    await refused.start()
    yield refused
    await refused.lift()


async def test_a_refused_daemonset_is_told_in_the_status_and_retried_until_allowed(
    cd: Cluster, namespace: str, refusal: Refusal, controller: ControllerProcess
) -> None:
    name = unique("cd")
    uid = (await cd.create_domain(domain_manifest(name, namespace)))["metadata"]["uid"]

    def refused(body: Object) -> bool:
        return condition(body).get("reason") == "ReconcileError"

    body = await cd.wait_domain(namespace, name, refused, "Ready reason ReconcileError")
    ready, children = condition(body), condition(body, "ChildrenReady")
    assert ready["status"] == "False"
    assert (children["status"], children["reason"]) == ("False", "ReconcileError")
    # The server's own words, and which step they stopped.
    assert "writing the DaemonSet and ResourceClaimTemplates failed (HTTP 403)" in ready["message"]
    assert REFUSAL in ready["message"]
    assert f'daemonsets.apps "{names.daemon_name(uid)}" is forbidden' in ready["message"]
    event = await cd.wait_event(namespace, name, "ReconcileError")
    assert REFUSAL in event["message"]

    # The controller keeps retrying, but tells it once: no new status write, no second Event.
    version = body["metadata"]["resourceVersion"]
    errors = controller.metric(ERRORS)

    async def retried() -> bool:
        return controller.metric(ERRORS) >= errors + 2

    await eventually(retried, timeout=30, what="two more failed reconciles")
    again = await cd.domain(namespace, name)
    assert again is not None
    assert again["metadata"]["resourceVersion"] == version
    assert [e["reason"] for e in await cd.events(namespace, name)].count("ReconcileError") == 1
    assert await cd.daemonset(uid) is None

    # Lifted: the next retry creates the DaemonSet and the condition clears.
    await refusal.lift()
    body = await cd.wait_domain(
        namespace, name, lambda b: not refused(b), "Ready reason other than ReconcileError", timeout=90
    )
    assert condition(body, "ChildrenReady")["reason"] == "ChildrenApplied"
    assert await cd.daemonset(uid) is not None

    await cd.delete_domain(namespace, name)
    await cd.wait_nothing_left(uid)
