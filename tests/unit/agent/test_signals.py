"""`computedomain-agent` as a real process: how it ends when the kubelet (or a person) stops it.

It runs without the cluster (`--no-kube`), NVML optional (a host without it is allowed), checking
every second and printing a report per check, and is sent SIGTERM over and over until it exits.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fakes.imex.harness import wait_until

REPO = Path(__file__).resolve().parents[3]
EXIT_WAIT = 20.0


def start_agent(log: Path, reports: Path) -> subprocess.Popen[bytes]:
    """The agent from this checkout, on a machine without NVML; reports in `reports`, logs in `log`."""
    keep = {"PATH", "HOME", "LANG", "TMPDIR"}
    env = {key: value for key, value in os.environ.items() if key in keep}
    env.update(PYTHONPATH=str(REPO / "operator"), LD_LIBRARY_PATH=str(reports.parent), LOG_FORMAT="json")
    argv = [sys.executable, "-m", "computedomain.agent", "--no-kube", "--no-require-nvml", "--json"]
    with log.open("wb") as errors, reports.open("wb") as output:
        return subprocess.Popen([*argv, "--interval", "1"], env=env, stdout=output, stderr=errors)


async def terminate_repeatedly(process: subprocess.Popen[bytes], limit: float) -> int:
    """SIGTERM, then SIGTERM again every millisecond until the process exits; its exit code."""
    deadline = time.monotonic() + limit
    while process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the agent did not exit within {limit:.0f}s of SIGTERM")
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.001)
    return process.returncode


async def test_sigterm_while_stopping_still_exits_zero(tmp_path: Path) -> None:
    log, reports = tmp_path / "agent.log", tmp_path / "reports.jsonl"
    process = start_agent(log, reports)
    try:
        await wait_until(lambda: reports.read_text().strip(), "the first report", limit=EXIT_WAIT)
        code = await terminate_repeatedly(process, EXIT_WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 0, log.read_text(errors="replace")
    # It kept checking until stopped (on this machine's NVML, or without any).
    assert "reason" in json.loads(reports.read_text().splitlines()[0])["clique"]
    # LOG_FORMAT=json: every line the agent logged is one JSON object.
    assert all(json.loads(line)["level"] for line in log.read_text().splitlines() if line.strip())
