"""Our own credential loader: kubeconfig (CA, client certificates, tokens, exec plugins) and the pod's
service account, each proven by a request that a TLS server checks."""

from __future__ import annotations

import base64
import json
import os
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cdtestbed import pki as pki_module
from computedomain.kube import NODES, Kube
from computedomain.kube import config as config_module
from computedomain.kube.config import ConfigError, Connection, from_kubeconfig, in_cluster, load_connection


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> pki_module.Pki:
    return pki_module.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def server(certs: pki_module.Pki) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """An HTTPS server with the test PKI's serving certificate; records each request's credentials."""
    seen: list[dict[str, Any]] = []

    async def nodes(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(x[0] for x in peer["subject"]) if peer else {}
        seen.append({"authorization": request.headers.get("Authorization"), "cn": subject.get("commonName")})
        return web.json_response({"items": [], "metadata": {"resourceVersion": "1"}})

    app = web.Application()
    app.router.add_get("/api/v1/nodes", nodes)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs.ca_cert))
    context.load_cert_chain(str(certs.serving_cert), str(certs.serving_key))
    context.verify_mode = ssl.CERT_OPTIONAL
    test_server = TestServer(app, host="127.0.0.1", scheme="https")
    await test_server.start_server(ssl=context)
    yield f"https://127.0.0.1:{test_server.port}", seen
    await test_server.close()


def write_config(path: Path, server: str, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    config = {
        "clusters": [{"name": "c", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(json.dumps(config))
    return path


async def ask(connection: Connection) -> None:
    kube = Kube(connection)
    try:
        await kube.list(NODES)
    finally:
        await kube.close()


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


async def test_client_certificates_from_files_or_data(
    tmp_path: Path, certs: pki_module.Pki, server: tuple[str, list[dict[str, Any]]]
) -> None:
    url, seen = server
    by_file = write_config(
        tmp_path / "files",
        url,
        {"certificate-authority": str(certs.ca_cert)},
        {"client-certificate": str(certs.admin_cert), "client-key": str(certs.admin_key)},
    )
    by_data = write_config(
        tmp_path / "data",
        url,
        {"certificate-authority-data": b64(certs.ca_cert)},
        {"client-certificate-data": b64(certs.admin_cert), "client-key-data": b64(certs.admin_key)},
    )
    await ask(from_kubeconfig(by_file))
    await ask(load_connection({"KUBECONFIG": f"{by_data}{os.pathsep}/nonexistent"}))
    assert seen == [{"authorization": None, "cn": "admin"}] * 2


async def test_an_unknown_server_certificate_is_refused(
    tmp_path: Path, server: tuple[str, list[dict[str, Any]]]
) -> None:
    url, seen = server
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        await ask(from_kubeconfig(write_config(tmp_path / "k", url, {}, {"token": "t"})))
    assert seen == []
    await ask(
        from_kubeconfig(write_config(tmp_path / "k", url, {"insecure-skip-tls-verify": True}, {"token": "t"}))
    )
    assert seen == [{"authorization": "Bearer t", "cn": None}]


async def test_a_token_file_and_an_exec_plugin(
    tmp_path: Path, certs: pki_module.Pki, server: tuple[str, list[dict[str, Any]]]
) -> None:
    url, seen = server
    (tmp_path / "token").write_text("from-file\n")
    trust = {"certificate-authority": str(certs.ca_cert)}
    await ask(from_kubeconfig(write_config(tmp_path / "a", url, trust, {"tokenFile": "token"})))
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json, os, sys\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "assert info['kind'] == 'ExecCredential', info\n"
        "print(json.dumps({'apiVersion': info['apiVersion'], 'kind': 'ExecCredential',"
        " 'status': {'token': 'exec-' + os.environ['WHO'] + '-' + sys.argv[1]}}))\n"
    )
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(plugin), "x"],
            "env": [{"name": "WHO", "value": "me"}],
        }
    }
    await ask(from_kubeconfig(write_config(tmp_path / "b", url, trust, user)))
    assert [s["authorization"] for s in seen] == ["Bearer from-file", "Bearer exec-me-x"]


async def test_a_failing_exec_plugin_says_why(tmp_path: Path) -> None:
    user = {"exec": {"command": sys.executable, "args": ["-c", "import sys; sys.exit('no login')"]}}
    connection = from_kubeconfig(write_config(tmp_path / "k", "https://127.0.0.1:1", {}, user))
    with pytest.raises(ConfigError, match="no login"):
        await connection.auth_headers()


async def test_in_a_pod_the_service_account_token_is_re_read_as_it_rotates(
    tmp_path: Path,
    certs: pki_module.Pki,
    server: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, seen = server
    account = tmp_path / "sa"
    account.mkdir()
    (account / "token").write_text("first")
    (account / "ca.crt").write_bytes(certs.ca_cert.read_bytes())
    port = url.rsplit(":", 1)[1]
    connection = in_cluster(
        {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port}, account
    )
    await ask(connection)
    (account / "token").write_text("second")
    await ask(connection)  # within the re-read interval: the token read a moment ago
    monkeypatch.setattr(config_module, "TOKEN_REREAD_SECONDS", 0.0)
    await ask(connection)
    assert [s["authorization"] for s in seen] == ["Bearer first", "Bearer first", "Bearer second"]


def test_clear_errors_for_missing_credentials(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no kubeconfig at"):
        load_connection({"KUBECONFIG": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="no service account token"):
        in_cluster({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, tmp_path)
    bad = write_config(tmp_path / "k", "https://x", {}, {"auth-provider": {"name": "gcp"}})
    with pytest.raises(ConfigError, match="auth-provider"):
        from_kubeconfig(bad)
    with pytest.raises(ConfigError, match="no context named 'other'"):
        from_kubeconfig(bad, "other")
