"""The control plane the tests talk to: a fresh local one, or an existing cluster when asked."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest_asyncio
from kubernetes_asyncio import client, config

from cdtestbed.cluster import STATE_FILE, ClusterOptions, LocalCluster
from cdtestbed.tools import Tools, repo_root

USE_EXISTING = "CD_USE_EXISTING_CLUSTER"


@dataclass(frozen=True)
class Testbed:
    """A reachable cluster: its kubeconfig and, for a local one, where each component logs."""

    __test__ = False  # not a test class, despite its name

    kubeconfig: Path
    logs: Path | None
    local: LocalCluster | None

    def describe_logs(self) -> str:
        """A line telling a reader of a failed test where to look."""
        if self.logs is None:
            return "cluster: existing (KUBECONFIG); component logs are the cluster's own"
        files = ", ".join(sorted(p.name for p in self.logs.glob("*.log")))
        return f"control-plane logs in {self.logs}: {files}"


def use_existing_cluster() -> bool:
    """True when the suite should run against the cluster named by KUBECONFIG."""
    return os.environ.get(USE_EXISTING, "").lower() in {"1", "true", "yes"}


KEEP_RUNS = 3


STALE_SECONDS = 6 * 3600


def _running(folder: Path) -> bool:
    # A control plane still running (in this or a parallel test run) keeps its state file; one
    # left by a killed run is stale after a while.
    state = folder / STATE_FILE
    return state.exists() and time.time() - state.stat().st_mtime < STALE_SECONDS


def work_root() -> Path:
    """Parent folder of per-run control-plane folders; the newest stopped ones stay for post-mortems."""
    root = repo_root() / ".work" / "tests"
    root.mkdir(parents=True, exist_ok=True)
    runs = sorted(root.glob("*-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [run for run in runs if run.is_dir() and not _running(run)][KEEP_RUNS:]:
        shutil.rmtree(old, ignore_errors=True)
    return root


@contextmanager
def local_cluster(options: ClusterOptions | None = None, prefix: str = "cluster-") -> Iterator[LocalCluster]:
    """Start a private control plane for the duration of the block."""
    tools = Tools.default()
    missing = tools.missing()
    if missing:
        raise RuntimeError(f"control-plane tools missing ({', '.join(missing)}): run `make tools` first")
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=work_root()))
    with LocalCluster(workdir, tools, options or ClusterOptions()) as cluster:
        yield cluster


@contextmanager
def testbed() -> Iterator[Testbed]:
    """The session's cluster: KUBECONFIG's when opted in, else a local control plane."""
    if use_existing_cluster():
        kubeconfig = os.environ.get("KUBECONFIG")
        if not kubeconfig:
            raise RuntimeError(f"{USE_EXISTING}=1 needs KUBECONFIG to name the cluster")
        yield Testbed(Path(kubeconfig.split(os.pathsep)[0]), None, None)
        return
    with local_cluster() as cluster:
        yield Testbed(cluster.kubeconfig, cluster.logs, cluster)


@dataclass(frozen=True)
class ControlPlane:
    """A private control plane and an admin client of it."""

    cluster: LocalCluster
    api: client.ApiClient


@asynccontextmanager
async def control_plane(
    options: ClusterOptions | None = None, prefix: str = "cluster-"
) -> AsyncIterator[ControlPlane]:
    """Start a private control plane and open an admin client of it for the duration of the block."""
    with local_cluster(options, prefix=prefix) as cluster:
        async with await config.new_client_from_config(config_file=str(cluster.kubeconfig)) as api:
            yield ControlPlane(cluster, api)


def private_control_plane(prefix: str, options: ClusterOptions | None = None) -> Callable[..., Any]:
    """A module-scoped fixture yielding a `ControlPlane` of the module's own.

    For tests that need a control plane set up differently from the session's or that must not share
    it. Assign it in the module (`plane = private_control_plane("cluster-ha-")`); the attribute's name
    is the fixture's name. `prefix` names the control plane's folder under .work/tests.
    """

    @pytest_asyncio.fixture(scope="module")
    async def fixture() -> AsyncIterator[ControlPlane]:
        async with control_plane(options, prefix) as plane:
            yield plane

    return fixture
