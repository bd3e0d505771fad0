"""Tests on real kubelets skip where kubelets cannot run, unless CD_REQUIRE_KUBELETS says they must run."""

from __future__ import annotations

import pytest

from support import realnodes


def test_skips_with_the_reason_where_kubelets_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realnodes, "can_run_kubelet", lambda: "real kubelets need root")
    monkeypatch.delenv(realnodes.REQUIRE_KUBELETS, raising=False)
    with pytest.raises(pytest.skip.Exception, match="real kubelets need root"):
        realnodes.require_kubelets()


def test_fails_instead_where_kubelets_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realnodes, "can_run_kubelet", lambda: "real kubelets need root")
    monkeypatch.setenv(realnodes.REQUIRE_KUBELETS, "1")
    with pytest.raises(pytest.fail.Exception, match=r"CD_REQUIRE_KUBELETS is set.*need root"):
        realnodes.require_kubelets()


def test_goes_on_where_kubelets_can_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realnodes, "can_run_kubelet", lambda: None)
    monkeypatch.setenv(realnodes.REQUIRE_KUBELETS, "1")
    realnodes.require_kubelets()
