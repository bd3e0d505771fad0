"""The `check` probe against the fake `nvidia-imex-ctl` (and the fake `nvidia-imex` it looks for)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from computedomain.daemon.check import check, check_command
from computedomain.daemon.config import HostEntry, render_hosts_file, render_imex_config, render_nodes_config
from computedomain.daemon.process import ImexSupervisor, imex_argv
from computedomain.daemon.settings import DaemonSettings, load_settings
from fakes.imex.harness import FAKE_IMEX, FAKE_IMEX_CTL, events_of, wait_until

POD_IP = "10.244.3.17"
CLIQUE = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22.32766"
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def hosts_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "hosts"
    path.write_text("127.0.0.1\tlocalhost\n")
    # The fakes read the hosts file path from the environment, as the daemon does.
    monkeypatch.setenv("IMEX_HOSTS_FILE", str(path))
    monkeypatch.delenv("FAKE_IMEX_STATE", raising=False)
    return path


def make_settings(tmp_path: Path, hosts_file: Path, **env: str) -> DaemonSettings:
    base = {
        "IMEX_CONFIG_DIR": str(tmp_path / "imexd"),
        "IMEX_HOSTS_FILE": str(hosts_file),
        "IMEX_CTL_BINARY": str(FAKE_IMEX_CTL),
        "CLIQUE_ID": CLIQUE,
        "POD_IP": POD_IP,
    }
    base.update(env)
    return load_settings(base)


def write_config(settings: DaemonSettings) -> None:
    settings.config_dir.mkdir(parents=True, exist_ok=True)
    settings.nodes_file.write_text(render_nodes_config(settings.max_nodes))
    settings.config_file.write_text(render_imex_config(POD_IP, str(settings.nodes_file)))


def map_hosts(settings: DaemonSettings, *entries: HostEntry) -> None:
    settings.hosts_file.write_text(render_hosts_file(settings.hosts_file.read_text(), entries))


@pytest.fixture
async def running_imex(tmp_path: Path, hosts_file: Path) -> AsyncIterator[ImexSupervisor]:
    settings = make_settings(tmp_path, hosts_file)
    write_config(settings)
    supervisor = ImexSupervisor(imex_argv(str(FAKE_IMEX), str(settings.config_file)), restart_delay=0.05)
    await supervisor.ensure_started()
    await wait_until(lambda: (settings.config_dir / "imex.pid").exists(), "the fake IMEX to start")
    yield supervisor
    await supervisor.stop()


async def test_no_fabric_succeeds_without_asking_imex(tmp_path: Path, hosts_file: Path) -> None:
    settings = make_settings(tmp_path, hosts_file, CLIQUE_ID="", IMEX_CTL_BINARY=str(tmp_path / "absent"))
    result = await check(settings)
    assert result.ok
    assert "no NVLink fabric" in result.message


async def test_unknown_clique_fails(tmp_path: Path, hosts_file: Path) -> None:
    settings = load_settings(
        {"IMEX_CONFIG_DIR": str(tmp_path / "imexd"), "IMEX_CTL_BINARY": str(FAKE_IMEX_CTL)}
    )
    result = await check(settings)
    assert not result.ok
    assert "clique ID not known" in result.message


@pytest.mark.parametrize(("recorded", "ok"), [("", True), (CLIQUE, False)])
async def test_clique_recorded_by_run_is_used(
    tmp_path: Path, hosts_file: Path, recorded: str, ok: bool
) -> None:
    settings = load_settings(
        {"IMEX_CONFIG_DIR": str(tmp_path / "imexd"), "IMEX_CTL_BINARY": str(FAKE_IMEX_CTL)}
    )
    settings.config_dir.mkdir()
    settings.clique_file.write_text(recorded)
    result = await check(settings)
    assert result.ok is ok


async def test_missing_config_is_not_ready(tmp_path: Path, hosts_file: Path) -> None:
    result = await check(make_settings(tmp_path, hosts_file))
    assert not result.ok
    assert "NOT_READY" in result.message
    assert "does not exist" in result.message


async def test_ready_when_config_complete_and_imex_running(
    tmp_path: Path, hosts_file: Path, running_imex: ImexSupervisor
) -> None:
    settings = make_settings(tmp_path, hosts_file)
    map_hosts(settings, HostEntry(0, POD_IP), HostEntry(1, "10.244.5.9"))
    result = await check(settings)
    assert result.ok, result.message


async def test_not_ready_until_hosts_block_lists_this_node(
    tmp_path: Path, hosts_file: Path, running_imex: ImexSupervisor
) -> None:
    settings = make_settings(tmp_path, hosts_file)
    map_hosts(settings, HostEntry(1, "10.244.5.9"))
    result = await check(settings)
    assert not result.ok
    assert "maps no listed node name" in result.message


async def test_not_ready_after_imex_stopped(
    tmp_path: Path, hosts_file: Path, running_imex: ImexSupervisor
) -> None:
    settings = make_settings(tmp_path, hosts_file)
    map_hosts(settings, HostEntry(0, POD_IP))
    assert (await check(settings)).ok
    await running_imex.stop()
    assert events_of(settings.config_dir, "stop")
    result = await check(settings)
    assert not result.ok
    assert "not running" in result.message


async def test_missing_ctl_binary_is_not_ready(tmp_path: Path, hosts_file: Path) -> None:
    settings = make_settings(tmp_path, hosts_file, IMEX_CTL_BINARY=str(tmp_path / "absent"))
    result = await check(settings)
    assert not result.ok
    assert "cannot run" in result.message


@pytest.mark.parametrize(
    ("output", "ok"),
    [("READY\\n", True), ("READY \\n", False), ("READY\\nextra\\n", False), ("ready\\n", False), ("", False)],
)
async def test_only_exact_ready_counts(tmp_path: Path, hosts_file: Path, output: str, ok: bool) -> None:
    ctl = tmp_path / "ctl"
    ctl.write_text(f"#!/bin/sh\nprintf '{output}'\n")
    ctl.chmod(0o755)
    result = await check(make_settings(tmp_path, hosts_file, IMEX_CTL_BINARY=str(ctl)))
    assert result.ok is ok


async def test_check_command_prints_verdict(
    tmp_path: Path, hosts_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await check_command(make_settings(tmp_path, hosts_file)) == 1
    assert "not ready" in capsys.readouterr().out
    assert await check_command(make_settings(tmp_path, hosts_file, CLIQUE_ID="")) == 0
    assert "no NVLink fabric" in capsys.readouterr().out


@pytest.mark.parametrize(("clique", "code"), [("", 0), (CLIQUE, 1)])
def test_console_entry_point_check(tmp_path: Path, clique: str, code: int) -> None:
    env = dict(
        os.environ, CLIQUE_ID=clique, IMEX_CONFIG_DIR=str(tmp_path), IMEX_CTL_BINARY=str(FAKE_IMEX_CTL)
    )
    env["PYTHONPATH"] = str(REPO / "operator")
    done = subprocess.run(
        [sys.executable, "-m", "computedomain.daemon", "-v", "2", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == code, done.stdout + done.stderr


def test_console_entry_point_requires_a_subcommand() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO / "operator"))
    done = subprocess.run(
        [sys.executable, "-m", "computedomain.daemon"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "run|check" in done.stderr
