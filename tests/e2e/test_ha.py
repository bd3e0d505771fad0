"""High availability: two replicas, exactly one leads, the standby takes over when the leader dies."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from cdtestbed.cluster import LocalCluster
from cdtestbed.controller_process import ControllerProcess
from cdtestbed.install import apply_crds, ensure_namespace
from computedomain.api import names
from conftest import DAEMON_IMAGE, controller_env
from support.testbed import ControlPlane, private_control_plane
from support.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

NAMESPACE = "computedomain-system"
LEASE = "computedomain-controller"
# The lease lasts 15 s; the standby takes it once expired (and watched for the renew deadline).
TAKEOVER_LIMIT = 16.0


plane = private_control_plane("cluster-ha-")


@pytest_asyncio.fixture(scope="module")
async def prepared(plane: ControlPlane) -> ControlPlane:
    """The private control plane with the CRDs and the controller's namespace."""
    await apply_crds(plane.api)
    await ensure_namespace(plane.api, NAMESPACE)
    return plane


def _replica(cluster: LocalCluster, name: str) -> ControllerProcess:
    env = controller_env(NAMESPACE, POD_NAME=name, LEADER_ELECTION="true", IMAGE_NAME=DAEMON_IMAGE)
    return ControllerProcess(cluster.kubeconfig, Path(cluster.logs) / f"{name}.log", env)


async def _holder(api: client.ApiClient) -> str | None:
    lease = await client.CoordinationV1Api(api).read_namespaced_lease(LEASE, NAMESPACE)
    return lease.spec.holder_identity or None


async def _domain_reconciled(api: client.ApiClient, namespace: str, name: str) -> bool:
    custom = client.CustomObjectsApi(api)
    body = await custom.get_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.DOMAIN_PLURAL, name
    )
    return names.FINALIZER in (body["metadata"].get("finalizers") or []) and "status" in body


async def _create_domain(api: client.ApiClient, namespace: str, name: str) -> None:
    body = {
        "apiVersion": names.API_VERSION,
        "kind": names.DOMAIN_KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"channel": {"resourceClaimTemplate": {"name": f"{name}-channel"}}},
    }
    await client.CustomObjectsApi(api).create_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.DOMAIN_PLURAL, body
    )


async def test_one_leader_and_standby_takes_over_when_it_dies(prepared: ControlPlane) -> None:
    replicas = {name: _replica(prepared.cluster, name) for name in ("replica-a", "replica-b")}
    for replica in replicas.values():
        replica.start()
    try:
        holder = await eventually(lambda: _holder(prepared.api), timeout=30, what="a lease holder")
        # The identity is the pod name alone, so that a restarted container is recognised.
        assert holder in replicas
        leader_name = holder
        standby_name = next(name for name in replicas if name != leader_name)
        leader, standby = replicas[leader_name], replicas[standby_name]

        # Exactly one replica leads; both report ready (the standby must not block a rollout).
        assert leader.metric("computedomain_leader") == 1
        assert standby.metric("computedomain_leader") == 0
        assert leader.get("/readyz")[0] == 200
        assert standby.get("/readyz")[0] == 200

        await client.CoreV1Api(prepared.api).create_namespace({"metadata": {"name": "ha"}})
        await _create_domain(prepared.api, "ha", "before")
        await eventually(
            lambda: _domain_reconciled(prepared.api, "ha", "before"), timeout=30, what="reconcile"
        )
        assert standby.metric("computedomain_reconcile_total") == 0

        # The leader dies without releasing the lease; the standby must take over within the limit.
        leader.stop(signal.SIGKILL)
        killed = time.monotonic()

        async def standby_holds() -> bool:
            current = await _holder(prepared.api)
            return current == standby_name

        await eventually(
            standby_holds, timeout=TAKEOVER_LIMIT + 5, interval=0.1, what="standby to take the lease"
        )
        takeover = time.monotonic() - killed
        assert takeover < TAKEOVER_LIMIT, f"takeover took {takeover:.1f}s"
        print(f"\nHA failover after SIGKILL: {takeover:.1f}s (lease 15 s)")

        await _create_domain(prepared.api, "ha", "after")
        await eventually(
            lambda: _domain_reconciled(prepared.api, "ha", "after"), timeout=30, what="new leader works"
        )
        assert standby.metric("computedomain_leader") == 1
    finally:
        for replica in replicas.values():
            replica.stop()


async def test_clean_shutdown_hands_over_at_once(prepared: ControlPlane) -> None:
    first, second = _replica(prepared.cluster, "first"), _replica(prepared.cluster, "second")
    first.start()
    try:
        await eventually(lambda: _holder_is(prepared.api, "first"), timeout=30, what="first replica to lead")
        second.start()
        assert first.stop() == 0  # SIGTERM: releases the lease on the way out
        released = time.monotonic()
        await eventually(
            lambda: _holder_is(prepared.api, "second"), timeout=15, interval=0.1, what="handover"
        )
        # A released lease is taken on the standby's next retry, not after the lease duration.
        assert time.monotonic() - released < 6
    finally:
        first.stop()
        second.stop()


async def _holder_is(api: client.ApiClient, name: str) -> bool:
    return await _holder(api) == name


async def _transitions(api: client.ApiClient) -> int:
    lease = await client.CoordinationV1Api(api).read_namespaced_lease(LEASE, NAMESPACE)
    return int(lease.spec.lease_transitions or 0)


async def test_a_restarted_leader_takes_its_own_lease_back_at_once(prepared: ControlPlane) -> None:
    leader, standby = _replica(prepared.cluster, "pod-0"), _replica(prepared.cluster, "pod-1")
    leader.start()
    try:
        await eventually(lambda: _holder_is(prepared.api, "pod-0"), timeout=30, what="pod-0 to lead")
        standby.start()
        transitions = await _transitions(prepared.api)
        # The container dies and the kubelet starts it again: same pod, same name, new process.
        leader.stop(signal.SIGKILL)
        killed = time.monotonic()
        leader.start(wait_ready=False)

        async def leading_again() -> bool:
            return leader.metric("computedomain_leader") == 1

        await eventually(leading_again, timeout=20, interval=0.1, what="the restarted pod-0 to lead")
        back = time.monotonic() - killed
        # Before the lease (15 s) of its previous life expired, so the standby never held it: the
        # restarted process did not wait for the expiry (most of this time is the interpreter starting).
        assert back < 15, f"the restarted leader took {back:.1f}s"
        assert await _holder(prepared.api) == "pod-0"
        assert await _transitions(prepared.api) == transitions
        assert standby.metric("computedomain_leader") == 0
        print(f"\nHA restarted leader leads again after {back:.1f}s")
    finally:
        leader.stop()
        standby.stop()
