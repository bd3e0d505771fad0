"""Fixtures shared by every test tier: the control plane, an API client, a fresh namespace."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from cdtestbed.controller_process import ControllerProcess
from cdtestbed.install import prepare_operator
from cdtestbed.nodes import add_ready_nodes
from cdtestbed.topology import FakeNode, nvl72_racks, plain_gpu_nodes
from support.namespaces import create_namespace
from support.testbed import Testbed, testbed, work_root

# The session's standard fake hardware: two NVL72 racks (two cliques) and two GPU nodes without fabric.
STANDARD_NODES: list[FakeNode] = nvl72_racks(2) + plain_gpu_nodes(2)

_TESTBED: Testbed | None = None


@pytest.fixture(scope="session")
def cluster() -> Iterator[Testbed]:
    """The control plane for the whole session (started once, stopped at the end)."""
    global _TESTBED
    with testbed() as bed:
        _TESTBED = bed
        yield bed
        _TESTBED = None


@pytest_asyncio.fixture(scope="session")
async def api(cluster: Testbed) -> AsyncIterator[client.ApiClient]:
    """An admin API client for the session's cluster."""
    async with await config.new_client_from_config(config_file=str(cluster.kubeconfig)) as api_client:
        yield api_client


@pytest_asyncio.fixture(scope="session")
async def fake_nodes(api: client.ApiClient) -> list[FakeNode]:
    """The standard fake GPU nodes, Ready and schedulable."""
    await add_ready_nodes(api, STANDARD_NODES)
    return STANDARD_NODES


@pytest_asyncio.fixture
async def namespace(api: client.ApiClient) -> AsyncIterator[str]:
    """A fresh namespace whose default ServiceAccount exists (pods can be admitted), deleted afterwards."""
    core = client.CoreV1Api(api)
    name = f"t-{uuid.uuid4().hex[:8]}"
    await create_namespace(api, name)
    yield name
    try:
        await core.delete_namespace(name)
    except ApiException as error:
        if error.status != 404:
            raise


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failure, say where the control plane's component logs are."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed and _TESTBED is not None and "cluster" in getattr(item, "fixturenames", ()):
        report.sections.append(("control plane", _TESTBED.describe_logs()))


OPERATOR_NAMESPACE = "computedomain-system"
DAEMON_IMAGE = "registry.example/computedomain-operator:0.1.0"


@pytest_asyncio.fixture(scope="session")
async def operator_ready(api: client.ApiClient, fake_nodes: list[FakeNode]) -> str:
    """CRDs, DeviceClasses, the operator namespace, and ResourceSlices for every fake node.

    The slices are what the ComputeDomain kubelet plugin would publish (a kubelet-plugin double).
    Returns the operator's namespace.
    """
    await prepare_operator(api, OPERATOR_NAMESPACE, [n.name for n in fake_nodes])
    return OPERATOR_NAMESPACE


def controller_env(namespace: str, **extra: str) -> dict[str, str]:
    """The controller's settings as the chart would pass them (leader election off unless asked)."""
    return {
        "NAMESPACE": namespace,
        "IMAGE_NAME": DAEMON_IMAGE,
        "POD_NAME": "controller-test",
        "LEADER_ELECTION": "false",
        "STATUS_BATCH_SECONDS": "0.1",
        **extra,
    }


@pytest.fixture(scope="session")
def controller(cluster: Testbed, operator_ready: str) -> Iterator[ControllerProcess]:
    """One controller process for the session, running against the session's cluster."""
    log_dir = cluster.logs or work_root()
    process = ControllerProcess(
        cluster.kubeconfig, log_dir / "controller.log", controller_env(operator_ready)
    )
    process.start()
    yield process
    process.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say which container runtime the run's real kubelet nodes used (doubles are named plainly)."""
    from cdtestbed.kubelets import RUNTIME_NAMES, STARTED

    if STARTED:
        used = ", ".join(f"{RUNTIME_NAMES[name]}: {count} node(s)" for name, count in sorted(STARTED.items()))
        terminalreporter.write_line(f"real kubelet nodes started by runtime: {used}")
