"""Where the API server is and how to prove who we are: in a pod its service account, elsewhere a
kubeconfig file.

Our own small loader rather than the generated client's: importing that client costs every process
about 38 MiB of model classes it never uses (all programs talk REST with plain dicts, `kube.client`).
It covers what our programs meet: the pod's service account (its token re-read as the kubelet
rotates it), and kubeconfig clusters with a CA, a server name for TLS, an HTTP(S) proxy, client
certificates, a static token, a token file or an exec credential plugin
(`client.authentication.k8s.io`, giving a token or a client certificate). `KUBECONFIG` may list
several files, merged as kubectl merges them.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import os
import ssl
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# The kubelet refreshes a projected token well before it expires; re-reading once a minute follows.
TOKEN_REREAD_SECONDS = 60.0
# An exec credential is asked for again this long before it says it expires.
EXEC_EARLY_SECONDS = 30.0


class ConfigError(Exception):
    """No usable credentials: the message says what is missing or wrong."""


@dataclass
class TokenFile:
    """A bearer token read from a file, re-read periodically (projected tokens rotate)."""

    path: Path
    _token: str = ""
    _read_at: float = -1e9

    async def token(self) -> str:
        """The current token."""
        now = time.monotonic()
        if now - self._read_at >= TOKEN_REREAD_SECONDS:
            self._token = (await asyncio.to_thread(self.path.read_text)).strip()
            self._read_at = now
        return self._token


@dataclass
class ExecCredential:
    """A token from an exec credential plugin (kubeconfig `users[].user.exec`), cached until it expires."""

    command: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    api_version: str = "client.authentication.k8s.io/v1"
    # Where a client certificate the plugin returns goes: the context of the connection's sessions.
    ssl_context: ssl.SSLContext | None = None
    _token: str = ""
    _certificate: tuple[str, str] | None = None
    _expires: float = 0.0

    async def token(self) -> str:
        """The current token ("" when the plugin gives a client certificate instead), running the
        plugin when it has given nothing yet or what it gave is about to expire."""
        if (self._token or self._certificate) and time.time() < self._expires - EXEC_EARLY_SECONDS:
            return self._token
        info = {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
        process = await asyncio.create_subprocess_exec(
            self.command,
            *self.args,
            env={**os.environ, **self.env, "KUBERNETES_EXEC_INFO": json.dumps(info)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            detail = err.decode(errors="replace").strip()
            raise ConfigError(f"credential plugin {self.command} failed ({process.returncode}): {detail}")
        status = (json.loads(out) or {}).get("status") or {}
        certificate = status.get("clientCertificateData"), status.get("clientKeyData")
        if not status.get("token") and not all(certificate):
            raise ConfigError(
                f"credential plugin {self.command} returned neither a token nor a client certificate and key"
            )
        self._token = str(status.get("token") or "")
        if all(certificate):
            pair = (str(certificate[0]), str(certificate[1]))
            if pair != self._certificate and self.ssl_context is not None:
                # Connections opened from now on present it; open ones keep theirs until they close.
                _load_client_certificate(self.ssl_context, pair[0].encode(), pair[1].encode())
            self._certificate = pair
        expiry = status.get("expirationTimestamp")
        self._expires = _parse_time(expiry) if expiry else float("inf")
        return self._token


@dataclass
class StaticToken:
    """A token written in the kubeconfig itself."""

    value: str

    async def token(self) -> str:
        """The token."""
        return self.value


TokenSource = TokenFile | ExecCredential | StaticToken


@dataclass
class Connection:
    """The API server's address, how to trust it, and our credentials (a client certificate in
    `ssl_context`, a bearer token from `tokens`, or both)."""

    host: str
    ssl_context: ssl.SSLContext
    tokens: TokenSource | None = None
    # An HTTP(S) proxy to reach the server through (a cluster's `proxy-url`).
    proxy: str | None = None
    # The name to ask for (SNI) and to check the server's certificate against, when it is not the
    # host of `host` (a cluster's `tls-server-name`).
    server_hostname: str | None = None

    async def auth_headers(self) -> dict[str, str]:
        """The Authorization header, when we authenticate with a token (an exec plugin's client
        certificate, if it gives one, is loaded into `ssl_context` on the way)."""
        if self.tokens is None:
            return {}
        token = await self.tokens.token()
        return {"Authorization": f"Bearer {token}"} if token else {}


def load_connection(environ: Mapping[str, str] | None = None) -> Connection:
    """In a pod (KUBERNETES_SERVICE_HOST set): the service account; else the files KUBECONFIG lists
    (merged; those that do not exist are skipped, as kubectl skips them) or ~/.kube/config."""
    env = os.environ if environ is None else environ
    if env.get("KUBERNETES_SERVICE_HOST"):
        return in_cluster(env)
    listed = [Path(p).expanduser() for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    paths = [p for p in listed if p.exists()] if listed else [Path.home() / ".kube" / "config"]
    if not paths or not paths[0].exists():
        where = os.pathsep.join(str(p) for p in listed or paths)
        raise ConfigError(f"not in a pod (KUBERNETES_SERVICE_HOST unset) and no kubeconfig at {where}")
    return from_kubeconfig(paths)


def service_address(env: Mapping[str, str]) -> str:
    """The API server's URL in a pod, from the `kubernetes` Service's address the kubelet gives it."""
    host, port = env["KUBERNETES_SERVICE_HOST"], env.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"https://{host}:{port}"


def in_cluster(env: Mapping[str, str], account: Path = SERVICE_ACCOUNT_DIR) -> Connection:
    """The pod's service account: the API server's CA and a token the kubelet keeps fresh."""
    token, ca = account / "token", account / "ca.crt"
    if not token.exists():
        raise ConfigError(f"in a pod, but no service account token at {token}")
    context = ssl.create_default_context(cafile=str(ca) if ca.exists() else None)
    return Connection(service_address(env), context, TokenFile(token))


@dataclass(frozen=True)
class _Entry:
    """A named cluster, user or context, and the folder of the file that defines it (its relative
    paths are relative to that file)."""

    value: dict[str, Any]
    base: Path


@dataclass
class _Merged:
    """Several kubeconfig files as one, by kubectl's rules: the first file that names a cluster, user
    or context defines it, and the first file that sets `current-context` sets it."""

    paths: list[Path]
    current_context: str | None = None
    sections: dict[str, dict[str, _Entry]] = field(default_factory=dict)

    def named(self, section: str, name: Any) -> _Entry:
        entry = self.sections.get(section, {}).get(name)
        if entry is None:
            raise ConfigError(f"kubeconfig has no {section[:-1]} named {name!r}")
        return entry


def _merge(paths: Sequence[Path]) -> _Merged:
    # Imported here: a program in a pod reads its service account and never pays for the parser.
    import yaml

    merged = _Merged(list(paths))
    for path in paths:
        config = yaml.safe_load(path.read_text()) or {}
        if not merged.current_context and config.get("current-context"):
            merged.current_context = str(config["current-context"])
        for section, key in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            known = merged.sections.setdefault(section, {})
            for item in config.get(section) or []:
                name = item.get("name")
                if name not in known:
                    known[name] = _Entry(dict(item.get(key) or {}), path.parent)
    return merged


def from_kubeconfig(path: Path | Sequence[Path], context_name: str | None = None) -> Connection:
    """The current (or named) context of a kubeconfig file, or of several merged as kubectl does."""
    merged = _merge([path] if isinstance(path, Path) else list(path))
    where = os.pathsep.join(str(p) for p in merged.paths)
    context = merged.named("contexts", context_name or merged.current_context).value
    cluster_entry = merged.named("clusters", context.get("cluster"))
    cluster, base = cluster_entry.value, cluster_entry.base
    user_entry = merged.named("users", context.get("user")) if context.get("user") else _Entry({}, base)
    server = cluster.get("server")
    if not server:
        raise ConfigError(f"{where}: cluster {context.get('cluster')!r} has no server")
    ssl_context = _ssl_context(cluster, base, user_entry.value, user_entry.base)
    tokens = _tokens(user_entry.value, user_entry.base, where)
    if isinstance(tokens, ExecCredential):
        tokens.ssl_context = ssl_context
    return Connection(
        str(server).rstrip("/"),
        ssl_context,
        tokens,
        proxy=_proxy(cluster, where),
        server_hostname=str(cluster["tls-server-name"]) if cluster.get("tls-server-name") else None,
    )


def _proxy(cluster: Mapping[str, Any], where: str) -> str | None:
    url = cluster.get("proxy-url")
    if not url:
        return None
    # aiohttp speaks to HTTP and HTTPS proxies only; kubectl's SOCKS5 proxies would need another library.
    if not str(url).startswith(("http://", "https://")):
        raise ConfigError(f"{where}: proxy-url {url!r} is not supported; use an http:// or https:// proxy")
    return str(url)


def _ssl_context(
    cluster: Mapping[str, Any], cluster_base: Path, user: Mapping[str, Any], user_base: Path
) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if cluster.get("certificate-authority-data"):
        context.load_verify_locations(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    elif cluster.get("certificate-authority"):
        context.load_verify_locations(cafile=str(cluster_base / cluster["certificate-authority"]))
    if cluster.get("insecure-skip-tls-verify"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    cert = _pem(user, "client-certificate", user_base)
    key = _pem(user, "client-key", user_base)
    if cert and key:
        _load_client_certificate(context, cert, key)
    return context


def _load_client_certificate(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # ssl reads a certificate chain only from files: write them where only we can read them.
    with tempfile.TemporaryDirectory() as scratch:
        cert_file, key_file = Path(scratch) / "tls.crt", Path(scratch) / "tls.key"
        cert_file.write_bytes(cert)
        key_file.write_bytes(key)
        context.load_cert_chain(str(cert_file), str(key_file))


def _pem(user: Mapping[str, Any], name: str, base: Path) -> bytes | None:
    if user.get(f"{name}-data"):
        return base64.b64decode(user[f"{name}-data"])
    if user.get(name):
        return (base / str(user[name])).read_bytes()
    return None


def _tokens(user: Mapping[str, Any], base: Path, where: str) -> TokenSource | None:
    if user.get("token"):
        return StaticToken(str(user["token"]))
    if user.get("tokenFile"):
        return TokenFile(base / user["tokenFile"])
    plugin = user.get("exec")
    if plugin:
        return ExecCredential(
            command=str(plugin["command"]),
            args=[str(a) for a in plugin.get("args") or []],
            env={str(e["name"]): str(e["value"]) for e in plugin.get("env") or []},
            api_version=str(plugin.get("apiVersion") or "client.authentication.k8s.io/v1"),
        )
    if user.get("auth-provider"):
        raise ConfigError(f"{where}: auth-provider credentials are not supported; use exec or a token")
    return None


def _parse_time(value: str) -> float:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
