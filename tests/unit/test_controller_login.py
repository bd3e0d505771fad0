"""Kopf's login in a pod: the address and credentials our own client uses, no cluster DNS needed."""

from __future__ import annotations

from pathlib import Path

from computedomain.controller.handlers import service_account_login


def _account(folder: Path, token: str = "tok-1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "token").write_text(token + "\n")
    (folder / "ca.crt").write_text("")
    (folder / "namespace").write_text("computedomain-system")
    return folder


async def test_kopf_dials_the_service_address_not_a_dns_name(tmp_path: Path) -> None:
    account = _account(tmp_path / "sa")
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    info = await service_account_login(env, account)
    assert info is not None
    # Kopf's own login would say https://kubernetes.default.svc, which needs cluster DNS.
    assert info.server == "https://10.0.0.1:443"
    assert info.token == "tok-1"
    assert info.ca_path == str(account / "ca.crt")
    assert info.default_namespace == "computedomain-system"


async def test_an_ipv6_service_address_is_bracketed(tmp_path: Path) -> None:
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}
    info = await service_account_login(env, _account(tmp_path / "sa"))
    assert info is not None
    assert info.server == "https://[fd00::1]:6443"


async def test_outside_a_pod_there_is_no_service_account_login(tmp_path: Path) -> None:
    assert await service_account_login({}, _account(tmp_path / "sa")) is None
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    assert await service_account_login(env, tmp_path / "missing") is None
