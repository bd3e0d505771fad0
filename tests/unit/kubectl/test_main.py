"""The console entry point without an API server: usage errors and settings exit 2."""

from __future__ import annotations

import pytest

from computedomain.kubectl.__main__ import main, read_settings


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_a_bad_output_format_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "x", "-o", "yaml"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_the_operator_namespace_comes_from_the_environment_and_the_option() -> None:
    assert read_settings({}, {}).operator_namespace == "computedomain-system"
    assert read_settings({"CD_OPERATOR_NAMESPACE": "ops"}, {}).operator_namespace == "ops"
    assert (
        read_settings({"CD_OPERATOR_NAMESPACE": "ops"}, {"operator_namespace": "gpu"}).operator_namespace
        == "gpu"
    )


def test_a_bad_operator_namespace_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--operator-namespace", "Not_A_Name", "why", "x"]) == 2
    assert "--operator-namespace='Not_A_Name'" in capsys.readouterr().err


def test_no_kubeconfig_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    assert main(["why", "x"]) == 2
    assert "no kubeconfig" in capsys.readouterr().err
