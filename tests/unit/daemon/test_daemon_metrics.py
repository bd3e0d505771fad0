"""The IMEX daemon wrapper's metrics: the supervisor counts starts, restarts by cause and reloads of the
fake `nvidia-imex`, the readiness file sets the ready gauge, the peer gauges count what the clique lists,
and `/readyz` reads the state file as the pod's probe does."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from computedomain.daemon import metrics
from computedomain.daemon.config import DaemonEntry, render_imex_config, render_nodes_config
from computedomain.daemon.process import ImexSupervisor, imex_argv
from computedomain.daemon.readiness import ReadinessFile, http_readiness, state_file
from computedomain.daemon.settings import DaemonSettings, SettingsError
from fakes.imex.harness import FAKE_IMEX, events_of, wait_until


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def supervisor(tmp_path: Path) -> AsyncIterator[ImexSupervisor]:
    config = tmp_path / "imexd"
    config.mkdir()
    (config / "nodes.cfg").write_text(render_nodes_config(2))
    (config / "imexd.cfg").write_text(render_imex_config("10.0.0.1", str(config / "nodes.cfg")))
    env = {**os.environ, "FAKE_IMEX_STATE": str(tmp_path / "state"), "IMEX_HOSTS_FILE": str(tmp_path / "h")}
    made = ImexSupervisor(imex_argv(str(FAKE_IMEX), str(config / "imexd.cfg")), env=env, restart_delay=0.05)
    yield made
    await made.stop()


async def test_supervisor_counts_restarts_by_cause_and_reloads(
    supervisor: ImexSupervisor, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    exited = sample("computedomain_daemon_imex_restarts_total", cause="exited")
    reconfigured = sample("computedomain_daemon_imex_restarts_total", cause="reconfigured")
    reloads = sample("computedomain_daemon_imex_reloads_total")

    await supervisor.ensure_started()
    await wait_until(lambda: events_of(state, "start"), "the first start")
    # The first start is no restart.
    assert sample("computedomain_daemon_imex_running") == 1
    assert sample("computedomain_daemon_imex_restarts_total", cause="exited") == exited

    first = supervisor.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    await wait_until(lambda: supervisor.pid not in (None, first), "the restart after the crash")
    assert sample("computedomain_daemon_imex_restarts_total", cause="exited") == exited + 1

    await supervisor.restart()
    assert sample("computedomain_daemon_imex_restarts_total", cause="reconfigured") == reconfigured + 1
    assert await supervisor.reload() is True
    assert sample("computedomain_daemon_imex_reloads_total") == reloads + 1

    await supervisor.stop()
    assert sample("computedomain_daemon_imex_running") == 0


def test_the_readiness_file_sets_the_ready_gauge_and_readyz(tmp_path: Path) -> None:
    settings = DaemonSettings(config_dir=tmp_path)
    assert http_readiness(settings) == (False, "IMEX daemon is not ready: no state yet")
    file = ReadinessFile(state_file(settings))

    file.put(True, 4242)
    assert sample("computedomain_daemon_imex_ready") == 1
    assert http_readiness(settings) == (True, "IMEX daemon is ready")

    file.put(False, None)
    assert sample("computedomain_daemon_imex_ready") == 0
    assert http_readiness(settings) == (False, "IMEX daemon is not ready")

    file.put(True, 4242)
    file.clear()
    assert sample("computedomain_daemon_imex_ready") == 0


def test_peers_are_those_of_the_clique_that_imex_can_address() -> None:
    daemons = [
        DaemonEntry("n1", "10.0.0.1", "c.1", 0, "Ready"),
        DaemonEntry("n2", "10.0.0.2", "c.1", 1, "NotReady"),
        # Not addressable yet: no index, no IP; and a daemon of another clique.
        DaemonEntry("n3", "10.0.0.3", "c.1", None, "Ready"),
        DaemonEntry("n4", "", "c.1", 2, "Ready"),
        DaemonEntry("n5", "10.0.0.5", "c.2", 0, "Ready"),
    ]
    assert metrics.peer_counts(daemons, "c.1") == (2, 1)

    metrics.count_peers(daemons, "c.1")
    assert (sample("computedomain_daemon_peers"), sample("computedomain_daemon_peers_ready")) == (2, 1)
    metrics.count_peers((), "c.1")
    assert (sample("computedomain_daemon_peers"), sample("computedomain_daemon_peers_ready")) == (0, 0)


def test_http_port_is_off_unless_given() -> None:
    assert DaemonSettings.from_env({}).http_port == 0
    assert DaemonSettings.from_env({"HTTP_PORT": "8080"}).http_port == 8080
    with pytest.raises(SettingsError, match="HTTP_PORT"):
        DaemonSettings.from_env({"HTTP_PORT": "70000"})
