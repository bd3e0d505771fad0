"""What operators of the operator see: health and readiness endpoints, Prometheus metrics, JSON logs."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from kubernetes_asyncio import client

from cdtestbed.controller_process import ControllerProcess
from computedomain.api import names
from conftest import controller_env
from support.testbed import Testbed, work_root
from support.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]


async def test_health_readiness_and_metrics(
    api: client.ApiClient, controller: ControllerProcess, namespace: str
) -> None:
    assert controller.get("/healthz") == (200, "ok\n")
    assert controller.get("/readyz")[0] == 200
    body = {
        "apiVersion": names.API_VERSION,
        "kind": names.DOMAIN_KIND,
        "metadata": {"name": "observed", "namespace": namespace},
        "spec": {"numNodes": 2, "channel": {"resourceClaimTemplate": {"name": "observed-channel"}}},
    }
    before = controller.metric("computedomain_reconcile_total")
    await client.CustomObjectsApi(api).create_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.DOMAIN_PLURAL, body
    )

    async def reconciled() -> bool:
        return controller.metric("computedomain_reconcile_total") > before

    await eventually(reconciled, timeout=30, what="a reconcile to be counted")
    _, text = controller.get("/metrics")
    for family in (
        "computedomain_reconcile_total",
        "computedomain_reconcile_duration_seconds_bucket",
        "computedomain_api_writes_total",
        "computedomain_queue_depth",
        "computedomain_leader",
    ):
        assert family in text, f"{family} missing from /metrics"
    # The new domain (numNodes 2, no node yet) is counted among the NotReady ones.
    assert controller.metric('computedomain_domains{status="NotReady"}') >= 1


def _lease_held_by_someone_else(name: str, namespace: str) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"holderIdentity": "elsewhere", "leaseDurationSeconds": 3600, "renewTime": now},
    }


async def test_standby_is_ready_and_logs_json_lines(
    api: client.ApiClient, cluster: Testbed, operator_ready: str
) -> None:
    lease = "observability-held-elsewhere"
    await client.CoordinationV1Api(api).create_namespaced_lease(
        operator_ready, _lease_held_by_someone_else(lease, operator_ready)
    )
    log = (cluster.logs or work_root()) / "controller-standby.log"
    env = controller_env(operator_ready, LEADER_ELECTION="true", LEASE_NAME=lease, LOG_FORMAT="json")
    standby = ControllerProcess(cluster.kubeconfig, log, env)
    standby.start()
    try:
        # A standby must count as ready, or a Deployment of two replicas never becomes Available.
        status, detail = standby.get("/readyz")
        assert (status, detail.strip()) == (200, "standby")
        assert standby.metric("computedomain_leader") == 0

        def waiting_logged() -> list[dict[str, Any]] | None:
            lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
            return lines if any("waiting to lead" in entry["msg"] for entry in lines) else None

        async def logged() -> list[dict[str, Any]] | None:
            return waiting_logged()

        entries = await eventually(logged, timeout=15, what="a JSON log line saying it waits to lead")
        assert all({"time", "level", "logger", "msg"} <= entry.keys() for entry in entries)
    finally:
        standby.stop()
        await client.CoordinationV1Api(api).delete_namespaced_lease(lease, operator_ready)
