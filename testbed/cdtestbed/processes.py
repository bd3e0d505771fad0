"""Stopping the programs the test bed runs as local processes."""

from __future__ import annotations

import subprocess
from collections.abc import Callable


def terminate(
    process: subprocess.Popen[bytes] | None, timeout: float, kill: Callable[[], None] | None = None
) -> int | None:
    """SIGTERM `process` and wait up to `timeout` seconds, then `kill` it (SIGKILL by default);
    its exit code, or None when it was never started."""
    if process is None:
        return None
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            (kill or process.kill)()
            process.wait()
    return process.returncode
