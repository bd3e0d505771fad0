"""Our own credential loader: kubeconfig (CA, client certificates, tokens, exec plugins, server names,
proxies, several files merged) and the pod's service account, each proven by a request that a TLS
server checks, and checked against the generated client's loader on the same kubeconfigs."""

from __future__ import annotations

import asyncio
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
from kubernetes_asyncio import client as generated_client
from kubernetes_asyncio import config as generated_config

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
    # The name each TLS connection asked for (SNI), by its SSL object; none is sent for an IP address.
    names: dict[int, str] = {}

    async def nodes(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(x[0] for x in peer["subject"]) if peer else {}
        entry = {"authorization": request.headers.get("Authorization"), "cn": subject.get("commonName")}
        tls = request.transport.get_extra_info("ssl_object") if request.transport else None
        if id(tls) in names:
            entry["sni"] = names[id(tls)]
        seen.append(entry)
        return web.json_response({"items": [], "metadata": {"resourceVersion": "1"}})

    def on_server_name(tls: Any, name: str | None, _context: ssl.SSLContext) -> None:
        if name:
            names[id(tls)] = name

    app = web.Application()
    app.router.add_get("/api/v1/nodes", nodes)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs.ca_cert))
    context.load_cert_chain(str(certs.serving_cert), str(certs.serving_key))
    context.verify_mode = ssl.CERT_OPTIONAL
    context.sni_callback = on_server_name
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


@pytest.fixture
async def proxy() -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTP proxy that tunnels (CONNECT) to any address; records each tunnel's target."""
    targets: list[str] = []
    writers: list[asyncio.StreamWriter] = []

    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        finally:
            sink.close()

    async def tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ")
        assert method == "CONNECT", head
        targets.append(target)
        host, port = target.rsplit(":", 1)
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        writers.append(upstream_writer)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(
            pipe(reader, upstream_writer), pipe(upstream_reader, writer), return_exceptions=True
        )

    server = await asyncio.start_server(tunnel, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", targets
    for writer in writers:
        writer.close()
    server.close()
    await server.wait_closed()


def exec_plugin(tmp_path: Path, status: dict[str, str]) -> dict[str, Any]:
    """A kubeconfig user whose exec plugin answers `status` (each plugin a file of its own)."""
    plugin = tmp_path / f"plugin-{len(list(tmp_path.glob('plugin-*')))}.py"
    plugin.write_text(
        "import json, os\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        f"answer = {{'kind': 'ExecCredential', 'status': {status!r}}}\n"
        "print(json.dumps({'apiVersion': info['apiVersion'], **answer}))\n"
    )
    return {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(plugin)],
        }
    }


async def test_an_exec_plugin_may_give_a_client_certificate(
    tmp_path: Path, certs: pki_module.Pki, server: tuple[str, list[dict[str, Any]]]
) -> None:
    url, seen = server
    pair = {
        "clientCertificateData": certs.admin_cert.read_text(),
        "clientKeyData": certs.admin_key.read_text(),
    }
    trust = {"certificate-authority": str(certs.ca_cert)}
    await ask(from_kubeconfig(write_config(tmp_path / "k", url, trust, exec_plugin(tmp_path, pair))))
    assert seen == [{"authorization": None, "cn": "admin"}]
    nothing = write_config(tmp_path / "n", url, trust, exec_plugin(tmp_path, {}))
    with pytest.raises(ConfigError, match="neither a token nor a client certificate"):
        await from_kubeconfig(nothing).auth_headers()


async def test_tls_server_name_is_asked_for_and_checked(
    tmp_path: Path, certs: pki_module.Pki, server: tuple[str, list[dict[str, Any]]]
) -> None:
    url, seen = server
    trust = {"certificate-authority": str(certs.ca_cert)}
    await ask(
        from_kubeconfig(write_config(tmp_path / "k", url, {**trust, "tls-server-name": "kubernetes"}, {}))
    )
    assert seen == [{"authorization": None, "cn": None, "sni": "kubernetes"}]
    # The server's certificate is checked against that name, not the address.
    wrong = write_config(tmp_path / "w", url, {**trust, "tls-server-name": "elsewhere.example"}, {})
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        await ask(from_kubeconfig(wrong))
    assert len(seen) == 1


async def test_a_proxy_url_tunnels_every_request(
    tmp_path: Path,
    certs: pki_module.Pki,
    server: tuple[str, list[dict[str, Any]]],
    proxy: tuple[str, list[str]],
) -> None:
    url, seen = server
    proxy_url, targets = proxy
    trust = {"certificate-authority": str(certs.ca_cert), "proxy-url": proxy_url}
    await ask(from_kubeconfig(write_config(tmp_path / "k", url, trust, {"token": "t"})))
    assert targets == [url.removeprefix("https://")]
    assert seen == [{"authorization": "Bearer t", "cn": None}]
    socks = write_config(tmp_path / "s", url, {"proxy-url": "socks5://127.0.0.1:1080"}, {})
    with pytest.raises(ConfigError, match="socks5"):
        from_kubeconfig(socks)


def test_several_kubeconfig_files_merge_as_kubectl_merges_them(tmp_path: Path, certs: pki_module.Pki) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (second / "ca.crt").write_bytes(certs.ca_cert.read_bytes())
    (first / "config").write_text(
        json.dumps(
            {
                "current-context": "x",
                "users": [{"name": "u", "user": {"token": "first"}}],
                "clusters": [{"name": "other", "cluster": {"server": "https://first.example"}}],
            }
        )
    )
    (second / "config").write_text(
        json.dumps(
            {
                "current-context": "y",
                "users": [{"name": "u", "user": {"token": "second"}}],
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {"server": "https://second.example", "certificate-authority": "ca.crt"},
                    },
                    {"name": "other", "cluster": {"server": "https://ignored.example"}},
                ],
                "contexts": [
                    {"name": "x", "context": {"cluster": "c", "user": "u"}},
                    {"name": "y", "context": {"cluster": "other", "user": "u"}},
                ],
            }
        )
    )
    paths = [first / "config", tmp_path / "absent", second / "config"]
    connection = load_connection({"KUBECONFIG": os.pathsep.join(map(str, paths))})
    # The first file's current context, cluster and user; the second file's CA, relative to that file.
    assert connection.host == "https://second.example"
    assert asyncio.run(connection.auth_headers()) == {"Authorization": "Bearer first"}
    ca = ssl.create_default_context(cafile=str(certs.ca_cert)).get_ca_certs()
    assert ca
    assert all(c in connection.ssl_context.get_ca_certs() for c in ca)
    assert from_kubeconfig([first / "config", second / "config"], "y").host == "https://first.example"


async def ask_generated(config_file: str) -> None:
    configuration = generated_client.Configuration()
    await generated_config.load_kube_config(
        config_file=config_file, client_configuration=configuration, persist_config=False
    )
    async with generated_client.ApiClient(configuration) as api:
        await generated_client.CoreV1Api(api).list_node()


async def test_both_loaders_agree_on_the_same_kubeconfigs(
    tmp_path: Path,
    certs: pki_module.Pki,
    server: tuple[str, list[dict[str, Any]]],
    proxy: tuple[str, list[str]],
) -> None:
    url, seen = server
    proxy_url, targets = proxy
    ca_file = {"certificate-authority": str(certs.ca_cert)}
    ca_data = {"certificate-authority-data": b64(certs.ca_cert)}
    (tmp_path / "token.txt").write_text("from-file")
    certificate = {
        "clientCertificateData": certs.admin_cert.read_text(),
        "clientKeyData": certs.admin_key.read_text(),
    }
    fixtures: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
        "cert files": (
            ca_file,
            {"client-certificate": str(certs.admin_cert), "client-key": str(certs.admin_key)},
        ),
        "cert data": (
            ca_data,
            {"client-certificate-data": b64(certs.admin_cert), "client-key-data": b64(certs.admin_key)},
        ),
        "token": (ca_data, {"token": "static"}),
        "token file": (ca_file, {"tokenFile": str(tmp_path / "token.txt")}),
        "insecure": ({"insecure-skip-tls-verify": True}, {"token": "t"}),
        "tls-server-name": ({**ca_file, "tls-server-name": "kubernetes"}, {"token": "t"}),
        "proxy": ({**ca_file, "proxy-url": proxy_url}, {"token": "t"}),
        "exec token": (ca_file, exec_plugin(tmp_path, {"token": "exec"})),
        "exec certificate": (ca_file, exec_plugin(tmp_path, certificate)),
    }
    outcomes: dict[str, list[Any]] = {}
    for name, (cluster, user) in fixtures.items():
        path = write_config(tmp_path / name.replace(" ", "-"), url, cluster, user)
        for loader in ("ours", "generated"):
            del seen[:], targets[:]
            if loader == "ours":
                await ask(load_connection({"KUBECONFIG": str(path)}))
            else:
                await ask_generated(str(path))
            outcomes.setdefault(name, []).append((list(seen), list(targets)))
    # A merged pair: the current context in the first file, the cluster and user in the second.
    (tmp_path / "head").write_text(json.dumps({"current-context": "x"}))
    merged = (
        f"{tmp_path / 'head'}{os.pathsep}{write_config(tmp_path / 'tail', url, ca_file, {'token': 'merged'})}"
    )
    for loader in ("ours", "generated"):
        del seen[:]
        await (ask(load_connection({"KUBECONFIG": merged})) if loader == "ours" else ask_generated(merged))
        outcomes.setdefault("merged", []).append((list(seen), []))

    for name, (ours, generated) in outcomes.items():
        assert ours == generated, name
    expected = {
        "cert files": {"authorization": None, "cn": "admin"},
        "cert data": {"authorization": None, "cn": "admin"},
        "token": {"authorization": "Bearer static", "cn": None},
        "token file": {"authorization": "Bearer from-file", "cn": None},
        "insecure": {"authorization": "Bearer t", "cn": None},
        "tls-server-name": {"authorization": "Bearer t", "cn": None, "sni": "kubernetes"},
        "proxy": {"authorization": "Bearer t", "cn": None},
        "exec token": {"authorization": "Bearer exec", "cn": None},
        "exec certificate": {"authorization": None, "cn": "admin"},
        "merged": {"authorization": "Bearer merged", "cn": None},
    }
    assert {name: ours[0] for name, (ours, _) in outcomes.items()} == {
        name: [e] for name, e in expected.items()
    }
    assert outcomes["proxy"][0][1] == [url.removeprefix("https://")]
