"""A network namespace of the test bed's own, where pod addresses live.

Real containers need real pod networks: a CNI bridge per node with addresses from a private range.
The network rule keeps every such address out of the machine's own (root) network namespace, so the
bed creates one namespace, holds it open with a sleeping process, and runs inside it whatever must
reach or be reached by pods: the control plane, each node's containerd and kubelet. The root
namespace reaches the API server through a loopback forwarder (`cdtestbed.forward`).

Inside, besides 127.0.0.1, loopback holds the `kubernetes` Service's address,
so that pods (which are told `KUBERNETES_SERVICE_HOST`) reach the API server without kube-proxy, and
one bridge per node created before its kubelet starts (the kubelet needs a non-loopback node address
for `kubectl exec` and logs).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import os
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from cdtestbed.processes import terminate

CLONE_NEWNET = 0x40000000
# The `kubernetes` Service's ClusterIP for the control plane's --service-cluster-ip-range 10.0.0.0/24.
SERVICE_IP = "10.0.0.1"
_T = TypeVar("_T")


class NamespaceError(RuntimeError):
    """The namespace could not be created or changed; the message says what failed."""


def enter(path: str) -> None:
    """Move the calling thread into the network namespace at `path`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({path}): {os.strerror(errno)}")
    finally:
        os.close(fd)


def holder_script(ready: Path) -> str:
    """The script that holds the namespace: loopback and the Service address up, forwarding on."""
    return "\n".join(
        [
            "set -eu",
            "ip link set lo up",
            # On loopback: local to the namespace, so a pod's packet routed to its bridge's gateway is
            # delivered to the API server (kernels without the dummy driver have loopback too).
            f"ip addr add {SERVICE_IP}/32 dev lo",
            # Pods of one node reach pods of another through the namespace's routing between bridges.
            "echo 1 > /proc/sys/net/ipv4/ip_forward",
            f"touch {shlex.quote(str(ready))}",
            "exec sleep infinity",
        ]
    )


@dataclass
class NetworkNamespace:
    """One network namespace held open by a child process. Use `start()`/`stop()`."""

    log: Path
    tie_to_parent: bool = True
    process: subprocess.Popen[bytes] | None = None
    _pool: concurrent.futures.ThreadPoolExecutor | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        """The holder's PID (its namespace is /proc/<pid>/ns/net)."""
        if self.process is None:
            raise NamespaceError("the network namespace is not running")
        return self.process.pid

    @property
    def path(self) -> str:
        """The namespace file, for `nsenter --net=` and setns."""
        return f"/proc/{self.pid}/ns/net"

    def start(self, timeout: float = 15.0) -> None:
        """Create the namespace and wait until its interfaces are set up."""
        from cdtestbed.cluster import die_with_parent

        ready = Path(tempfile.mkdtemp(prefix="cdnet-")) / "ready"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                ["unshare", "--net", "sh", "-c", holder_script(ready)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent if self.tie_to_parent else None,
            )
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.process.poll() is not None:
                raise NamespaceError(
                    f"network namespace holder exited with {self.process.returncode}; see {self.log}"
                )
            if time.monotonic() > deadline:
                raise NamespaceError(f"network namespace not ready after {timeout:.0f}s; see {self.log}")
            time.sleep(0.05)
        ready.unlink()
        ready.parent.rmdir()

    def stop(self) -> None:
        """Stop the holder; the namespace goes with its last process."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self.process is not None:
            terminate(self.process, 10.0)
            self.process = None

    def wrap(self, args: list[str]) -> list[str]:
        """`args` run inside the namespace (nsenter execs them: the PID stays the program's)."""
        return ["nsenter", f"--net={self.path}", "--", *args]

    def call(self, function: Callable[[], _T]) -> _T:
        """Run `function` on a thread that has entered the namespace (sockets it opens live there)."""
        if self._pool is None:
            path = self.path
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="netns", initializer=enter, initargs=(path,)
            )
        return self._pool.submit(function).result()

    def ip(self, *args: str) -> None:
        """Run `ip ARGS` inside the namespace."""
        result = subprocess.run(self.wrap(["ip", *args]), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise NamespaceError(f"ip {' '.join(args)}: {result.stderr.strip()}")

    def add_bridge(self, name: str, address: str) -> None:
        """A bridge with `address` (CIDR form), up; the CNI bridge plugin adopts it as its gateway."""
        with contextlib.suppress(NamespaceError):
            self.ip("link", "del", name)
        self.ip("link", "add", name, "type", "bridge")
        self.ip("addr", "add", address, "dev", name)
        self.ip("link", "set", name, "up")
