"""Where the API server is and how to prove who we are: in a pod its service account, elsewhere a
kubeconfig file.

Our own small loader rather than the generated client's: importing that client costs every process
about 38 MiB of model classes it never uses (all programs talk REST with plain dicts, `kube.client`).
It covers what our programs meet: the pod's service account (its token re-read as the kubelet
rotates it), and kubeconfig clusters with a CA, client certificates, a static token, a token file or
an exec credential plugin (`client.authentication.k8s.io`).
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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

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
    _token: str = ""
    _expires: float = 0.0

    async def token(self) -> str:
        """The current token, running the plugin when there is none or it is about to expire."""
        if self._token and time.time() < self._expires - EXEC_EARLY_SECONDS:
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
        if not status.get("token"):
            raise ConfigError(f"credential plugin {self.command} returned no token")
        self._token = str(status["token"])
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

    async def auth_headers(self) -> dict[str, str]:
        """The Authorization header, when we authenticate with a token."""
        if self.tokens is None:
            return {}
        return {"Authorization": f"Bearer {await self.tokens.token()}"}


def load_connection(environ: Mapping[str, str] | None = None) -> Connection:
    """In a pod (KUBERNETES_SERVICE_HOST set): the service account; else KUBECONFIG or ~/.kube/config."""
    env = os.environ if environ is None else environ
    if env.get("KUBERNETES_SERVICE_HOST"):
        return in_cluster(env)
    paths = [p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    path = Path(paths[0]) if paths else Path.home() / ".kube" / "config"
    if not path.exists():
        raise ConfigError(f"not in a pod (KUBERNETES_SERVICE_HOST unset) and no kubeconfig at {path}")
    return from_kubeconfig(path)


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


def from_kubeconfig(path: Path, context_name: str | None = None) -> Connection:
    """The current (or named) context of a kubeconfig file."""
    config = yaml.safe_load(path.read_text()) or {}
    name = context_name or config.get("current-context")
    context = _named(config, "contexts", name, "context")
    cluster = _named(config, "clusters", context.get("cluster"), "cluster")
    user = _named(config, "users", context.get("user"), "user") if context.get("user") else {}
    base = path.parent
    server = cluster.get("server")
    if not server:
        raise ConfigError(f"{path}: cluster {context.get('cluster')!r} has no server")
    ssl_context = _ssl_context(cluster, user, base)
    return Connection(str(server).rstrip("/"), ssl_context, _tokens(user, base, path))


def _named(config: Mapping[str, Any], section: str, name: Any, key: str) -> dict[str, Any]:
    for entry in config.get(section) or []:
        if entry.get("name") == name:
            return dict(entry.get(key) or {})
    raise ConfigError(f"kubeconfig has no {section[:-1]} named {name!r}")


def _ssl_context(cluster: Mapping[str, Any], user: Mapping[str, Any], base: Path) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if cluster.get("certificate-authority-data"):
        context.load_verify_locations(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    elif cluster.get("certificate-authority"):
        context.load_verify_locations(cafile=str(base / cluster["certificate-authority"]))
    if cluster.get("insecure-skip-tls-verify"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    cert = _pem(user, "client-certificate", base)
    key = _pem(user, "client-key", base)
    if cert and key:
        # ssl reads a certificate chain only from files: write them where only we can read them.
        with tempfile.TemporaryDirectory() as scratch:
            cert_file, key_file = Path(scratch) / "tls.crt", Path(scratch) / "tls.key"
            cert_file.write_bytes(cert)
            key_file.write_bytes(key)
            context.load_cert_chain(str(cert_file), str(key_file))
    return context


def _pem(user: Mapping[str, Any], name: str, base: Path) -> bytes | None:
    if user.get(f"{name}-data"):
        return base64.b64decode(user[f"{name}-data"])
    if user.get(name):
        return (base / str(user[name])).read_bytes()
    return None


def _tokens(user: Mapping[str, Any], base: Path, path: Path) -> TokenSource | None:
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
        raise ConfigError(f"{path}: auth-provider credentials are not supported; use exec or a token")
    return None


def _parse_time(value: str) -> float:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
