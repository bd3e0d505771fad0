"""Run the controller as its own process, exactly as its container would run it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cdtestbed.cluster import free_port
from cdtestbed.tools import repo_root


@dataclass
class ControllerProcess:
    """`python -m computedomain.controller` with a kubeconfig, settings as environment, a log file."""

    kubeconfig: Path
    log: Path
    env: Mapping[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def start(self, wait_ready: bool = True, timeout: float = 60.0) -> None:
        """Start the process; by default wait until it serves /readyz."""
        self.port = self.port or free_port()
        # This checkout's code, even when the virtualenv was installed from another checkout.
        source = str(repo_root() / "operator")
        python_path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p)
        env = {
            **os.environ,
            "PYTHONPATH": python_path,
            "KUBECONFIG": str(self.kubeconfig),
            "HTTP_PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
            "TZ": "UTC",
            **self.env,
        }
        env.pop("KUBERNETES_SERVICE_HOST", None)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "computedomain.controller"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if wait_ready:
            self.wait_ready(timeout)

    def url(self, path: str) -> str:
        """URL of one of the process's HTTP endpoints."""
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> tuple[int, str]:
        """(status, body) of a GET on the process's HTTP server; (0, error) when unreachable."""
        try:
            with urllib.request.urlopen(self.url(path), timeout=2) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read().decode()
        except (urllib.error.URLError, OSError) as error:
            return 0, str(error)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until /readyz answers 200 (raises with the log's tail if the process dies)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"controller exited with {self.process.returncode}; see {self.log}")
            if self.get("/readyz")[0] == 200:
                return
            time.sleep(0.2)
        raise TimeoutError(f"controller not ready after {timeout:.0f}s; see {self.log}")

    def metric(self, name: str) -> float:
        """Sum of every sample of a Prometheus metric (0 if absent)."""
        _, text = self.get("/metrics")
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                head, _, value = line.rpartition(" ")
                if head == name or head.startswith(name + "{"):
                    total += float(value)
        return total

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Stop the process (SIGTERM by default, SIGKILL after `timeout`); returns its exit code."""
        if self.process is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
        finally:
            self.process = None
