"""The kubelet plugin's settings from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from computedomain.plugin.settings import PluginSettings, SettingsError


def test_defaults_follow_the_kubelet_layout() -> None:
    settings = PluginSettings.from_env({"NODE_NAME": "gb200-r01-t01"})
    assert settings.registration_socket == Path(
        "/var/lib/kubelet/plugins_registry/compute-domain.nvidia.com-reg.sock"
    )
    assert settings.dra_socket == Path("/var/lib/kubelet/plugins/compute-domain.nvidia.com/dra.sock")
    assert settings.state == Path("/var/lib/kubelet/plugins/compute-domain.nvidia.com")
    assert settings.cdi_root == Path("/var/run/cdi")
    assert settings.host_root == Path("/")
    assert settings.http_port == 8080
    assert settings.prepare_wait < 45


def test_every_variable_is_read() -> None:
    settings = PluginSettings.from_env(
        {
            "NODE_NAME": "n1",
            "NAMESPACE": "ops",
            "KUBELET_ROOT_DIR": "/k",
            "CDI_ROOT": "/cdi",
            "DRIVER_ROOT": "/driver-root",
            "HOST_DRIVER_ROOT": "/run/nvidia/driver",
            "PROC_DEVICES": "/fake/devices",
            "BOOT_ID_FILE": "/fake/boot_id",
            "STATE_DIR": "/state",
            "LOG_FORMAT": "json",
            "HTTP_PORT": "0",
            "PREPARE_WAIT_SECONDS": "20",
            "HEALTH_SOURCE": "static",
        }
    )
    assert settings.dra_socket == Path("/k/plugins/compute-domain.nvidia.com/dra.sock")
    assert settings.state == Path("/state")
    assert settings.host_root == Path("/run/nvidia/driver")
    assert settings.json_logs
    assert (settings.http_port, settings.prepare_wait, settings.health_source) == (0, 20.0, "static")


def test_every_bad_variable_is_named_in_one_error() -> None:
    with pytest.raises(SettingsError) as caught:
        PluginSettings.from_env(
            {
                "NAMESPACE": "Not_A_Label",
                "CDI_ROOT": "relative/cdi",
                "LOG_FORMAT": "yaml",
                "PREPARE_WAIT_SECONDS": "50",
                "HTTP_PORT": "many",
                "HEALTH_SOURCE": "dcgm",
            }
        )
    message = str(caught.value)
    for expected in (
        "NODE_NAME is required",
        "NAMESPACE='Not_A_Label'",
        "CDI_ROOT='relative/cdi': must be an absolute path",
        "LOG_FORMAT='yaml': must be json or text",
        "PREPARE_WAIT_SECONDS='50'",
        "HTTP_PORT='many'",
        "HEALTH_SOURCE='dcgm': must be nvml or static",
    ):
        assert expected in message


def test_entry_point_refuses_bad_settings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from computedomain.plugin.__main__ import main

    monkeypatch.delenv("NODE_NAME", raising=False)
    monkeypatch.setenv("LOG_FORMAT", "xml")
    assert main([]) == 2
    error = capsys.readouterr().err
    assert "NODE_NAME is required" in error
    assert "LOG_FORMAT='xml'" in error
