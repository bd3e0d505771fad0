"""The product's `Connection` for a test's kubernetes_asyncio client (the test bed's client library)."""

from __future__ import annotations

import ssl

from kubernetes_asyncio.client import ApiClient

from computedomain.kube.config import Connection, StaticToken


def connection_of(api: ApiClient) -> Connection:
    """The same server, trust and credentials (client certificate or bearer token) as `api`."""
    conf = api.configuration
    context = ssl.create_default_context(cafile=conf.ssl_ca_cert)
    if conf.cert_file:
        context.load_cert_chain(conf.cert_file, keyfile=conf.key_file)
    if not conf.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    token = ""
    for key in ("BearerToken", "authorization"):
        value = str((conf.api_key or {}).get(key) or "")
        if value:
            token = value.removeprefix("Bearer ").strip()
            break
    return Connection(str(conf.host), context, StaticToken(token) if token else None)
