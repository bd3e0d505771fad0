"""The kubelet plugin's settings from the environment."""

from __future__ import annotations

import logging
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
            "LOG_LEVEL": "debug",
            "IMEX_MODE": "clique",
        }
    )
    assert (settings.imex_mode, settings.clique_mode) == ("clique", True)
    assert settings.dra_socket == Path("/k/plugins/compute-domain.nvidia.com/dra.sock")
    assert settings.state == Path("/state")
    assert settings.host_root == Path("/run/nvidia/driver")
    assert (settings.json_logs, settings.log_format, settings.log_level) == (True, "json", "DEBUG")
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
                "LOG_LEVEL": "chatty",
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
        "LOG_LEVEL='chatty'",
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


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("NODE_NAME", "a..b", "NODE_NAME='a..b': must be a node name (DNS subdomain)"),
        ("NODE_NAME", "n" * 254, "must be a node name (DNS subdomain)"),
        ("NAMESPACE", "n" * 64, "must be a DNS label"),
        ("HTTP_PORT", "70000", "HTTP_PORT='70000': Input should be less than or equal to 65535"),
        ("HTTP_PORT", "5.5", "HTTP_PORT='5.5': Input should be a valid integer"),
        ("PREPARE_WAIT_SECONDS", "45", "PREPARE_WAIT_SECONDS='45': Input should be less than 45"),
        ("CLEANUP_INTERVAL_SECONDS", "0", "CLEANUP_INTERVAL_SECONDS='0': Input should be greater than 0"),
        ("HEALTH_INTERVAL_SECONDS", "often", "Input should be a valid number"),
        ("STATE_DIR", "state", "STATE_DIR='state': must be an absolute path"),
        ("IMEX_MODE", "channel", "IMEX_MODE='channel': must be domain or clique"),
    ],
)
def test_bad_values_are_named_with_the_problem(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match="invalid kubelet plugin settings:") as caught:
        PluginSettings.from_env({"NODE_NAME": "n1", variable: value})
    assert message in str(caught.value)


def test_empty_variables_are_unset_and_values_are_trimmed() -> None:
    settings = PluginSettings.from_env(
        {"NODE_NAME": " n1 ", "HTTP_PORT": "", "STATE_DIR": "  ", "LOG_FORMAT": " JSON ", "HEALTH_SOURCE": ""}
    )
    assert (settings.node_name, settings.http_port, settings.state_dir) == ("n1", 8080, None)
    assert (settings.log_format, settings.health_source) == ("json", "nvml")
    with pytest.raises(SettingsError, match="NODE_NAME is required"):
        PluginSettings.from_env({"NODE_NAME": " "})


def test_options_override_the_environment_and_are_named_when_bad() -> None:
    settings = PluginSettings.from_env({"NODE_NAME": "n1", "LOG_LEVEL": "error"}, {"log_level": "debug"})
    assert settings.log_level == "DEBUG"
    with pytest.raises(SettingsError, match="--log-level='chatty': must be one of DEBUG"):
        PluginSettings.from_env({"NODE_NAME": "n1"}, {"log_level": "chatty"})


def test_the_entry_point_runs_until_the_driver_is_judged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from computedomain.plugin.__main__ import EXIT_UNFIT, main

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", root.handlers[:])
    monkeypatch.setattr(root, "level", root.level)
    version = tmp_path / "proc" / "driver" / "nvidia" / "version"
    version.parent.mkdir(parents=True)
    version.write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  565.57.01  Thu Oct 10 12:29:05 UTC 2024\n"
    )
    for variable in ("LOG_FORMAT", "LOG_LEVEL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("NODE_NAME", "gb200-n01")
    monkeypatch.setenv("DRIVER_ROOT", str(tmp_path))
    # The driver is judged from its version file alone, before the plugin loads its servers.
    assert main(["-v"]) == EXIT_UNFIT
    assert "refusing to start: NVIDIA driver 565.57.01 on node gb200-n01" in capsys.readouterr().err


def test_the_imex_mode_defaults_to_one_daemon_per_domain() -> None:
    settings = PluginSettings.from_env({"NODE_NAME": "n1"})
    assert (settings.imex_mode, settings.clique_mode) == ("domain", False)
