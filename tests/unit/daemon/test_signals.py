"""`compute-domain-daemon run` as a real process: how it ends when the kubelet (or a person) stops it.

The daemon runs from this checkout against a small stand-in for the API server (its pod patch, and a
clique that lists the daemon itself, so the fake `nvidia-imex` is started) and is sent SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from computedomain.api import names
from fakes.imex.harness import FAKE_IMEX, events_of, wait_until

REPO = Path(__file__).resolve().parents[3]
NAMESPACE = "dra-driver"
POD = "computedomain-daemon-x7k2p"
NODE = "gb200-n01"
POD_IP = "10.244.3.17"
DOMAIN_UID = "0c9d7c4e-7b1a-4a63-9a55-1f1f0d6f2a10"
CLIQUE = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22.32766"
CLIQUE_NAME = names.clique_name(DOMAIN_UID, CLIQUE)
EXIT_WAIT = 20.0


@dataclass
class StandInApi:
    """Answers the daemon's pod patch and its clique list; holds its watches open."""

    patches: list[dict[str, Any]] = field(default_factory=list)

    async def patch_pod(self, request: web.Request) -> web.Response:
        self.patches.append(await request.json())
        return web.json_response({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": POD}})

    async def cliques(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            clique = {
                "apiVersion": names.API_VERSION,
                "kind": names.CLIQUE_KIND,
                "metadata": {"name": CLIQUE_NAME, "namespace": NAMESPACE, "resourceVersion": "5"},
                "daemons": [{"nodeName": NODE, "ipAddress": POD_IP, "cliqueID": CLIQUE, "index": 0}],
            }
            return web.json_response(
                {"kind": "List", "metadata": {"resourceVersion": "5"}, "items": [clique]}
            )
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        await asyncio.sleep(3600)  # ended by the daemon going away
        return response


@pytest.fixture
async def api_server(tmp_path: Path) -> AsyncIterator[tuple[StandInApi, Path]]:
    stand_in = StandInApi()
    app = web.Application()
    app.router.add_patch(f"/api/v1/namespaces/{NAMESPACE}/pods/{POD}", stand_in.patch_pod)
    cliques = f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{NAMESPACE}/{names.CLIQUE_PLURAL}"
    app.router.add_get(cliques, stand_in.cliques)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": str(server.make_url("")).rstrip("/")}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    yield stand_in, kubeconfig
    await server.close()


def daemon_env(tmp_path: Path, kubeconfig: Path) -> dict[str, str]:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1\tlocalhost\n")
    keep = {"PATH", "HOME", "LANG", "TMPDIR"}
    env = {key: value for key, value in os.environ.items() if key in keep}
    env.update(
        PYTHONPATH=str(REPO / "operator"),
        KUBECONFIG=str(kubeconfig),
        NODE_NAME=NODE,
        POD_IP=POD_IP,
        POD_NAME=POD,
        POD_NAMESPACE=NAMESPACE,
        COMPUTE_DOMAIN_UUID=DOMAIN_UID,
        CLIQUE_ID=CLIQUE,
        IMEX_CONFIG_DIR=str(tmp_path / "imexd"),
        IMEX_HOSTS_FILE=str(hosts),
        IMEX_BINARY=str(FAKE_IMEX),
        LOG_FORMAT="json",
    )
    return env


def start_daemon(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`compute-domain-daemon run` from this checkout, its output in `log`."""
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "computedomain.daemon", "run"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


async def terminate_repeatedly(process: subprocess.Popen[bytes], limit: float) -> int:
    """SIGTERM, then SIGTERM again every millisecond until the process exits; its exit code."""
    deadline = time.monotonic() + limit
    while process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the daemon did not exit within {limit:.0f}s of SIGTERM")
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.001)
    return process.returncode


async def test_sigterm_during_shutdown_still_exits_zero(
    api_server: tuple[StandInApi, Path], tmp_path: Path
) -> None:
    stand_in, kubeconfig = api_server
    log = tmp_path / "daemon.log"
    state = tmp_path / "imexd"
    process = start_daemon(daemon_env(tmp_path, kubeconfig), log)
    try:
        await wait_until(lambda: events_of(state, "start"), "IMEX to start", limit=EXIT_WAIT)
        assert stand_in.patches == [{"metadata": {"labels": {names.CLIQUE_LABEL: CLIQUE}}}]
        # The kubelet sends one SIGTERM; a person or a second stop may repeat it while the daemon is
        # stopping IMEX and exiting. None of them may turn a clean exit into death by signal.
        code = await terminate_repeatedly(process, EXIT_WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = log.read_text(errors="replace").splitlines()
    assert code == 0, "\n".join(lines)
    assert [event["pid"] for event in events_of(state, "stop")] == [events_of(state, "start")[0]["pid"]]
    # LOG_FORMAT=json: every line the daemon wrote is one JSON object.
    records = [json.loads(line) for line in lines if line.strip()]
    assert records[-1]["msg"] == "terminated; exiting"
