"""The control plane the tests talk to: a fresh local one, or an existing cluster when asked."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
