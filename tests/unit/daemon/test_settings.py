"""The daemon's settings from its environment."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from computedomain.daemon.settings import ENV_NAMES, MISSING_DOMAIN_MESSAGE, SettingsError, load_settings

FULL_ENV = {
    "NODE_NAME": "gb200-n01",
    "POD_IP": "10.244.3.17",
    "POD_NAME": "computedomain-daemon-uid-x7k2p",
    "POD_NAMESPACE": "dra-driver",
    "POD_UID": "5b1e",
    "COMPUTE_DOMAIN_UUID": "0c9d7c4e-7b1a-4a63-9a55-1f1f0d6f2a10",
    "COMPUTE_DOMAIN_NAME": "llama-train",
    "COMPUTE_DOMAIN_NAMESPACE": "team-a",
    "CLIQUE_ID": "7d3b.32766",
    "MAX_NODES_PER_IMEX_DOMAIN": "8",
    "LOG_VERBOSITY": "4",
}


def test_defaults() -> None:
    settings = load_settings({})
    assert settings.clique_id is None
    assert settings.max_nodes == 18
    assert settings.log_verbosity == 0
    assert settings.config_file == Path("/imexd/imexd.cfg")
    assert settings.template_file == Path("/imexd/imexd.cfg.tmpl")
    assert settings.nodes_file == Path("/imexd/nodes.cfg")
    assert settings.hosts_file == Path("/etc/hosts")
    assert settings.imex_binary == "nvidia-imex"
    assert settings.imex_ctl_binary == "nvidia-imex-ctl"


def test_full_environment() -> None:
    env = dict(FULL_ENV, IMEX_CONFIG_DIR="/tmp/x", IMEX_BINARY="/bin/fake-imex", IMEX_HOSTS_FILE="/tmp/hosts")
    settings = load_settings(env)
    settings.require_domain()
    settings.require_pod_identity()
    assert settings.clique_id == "7d3b.32766"
    assert settings.max_nodes == 8
    assert settings.log_verbosity == 4
    assert settings.config_file == Path("/tmp/x/imexd.cfg")
    assert settings.hosts_file == Path("/tmp/hosts")
    assert settings.imex_binary == "/bin/fake-imex"
    assert settings.domain_name == "llama-train"


def test_empty_clique_means_no_fabric_not_unknown() -> None:
    assert load_settings({"CLIQUE_ID": ""}).clique_id == ""


def test_missing_domain_gives_the_cdi_hint() -> None:
    env = {key: value for key, value in FULL_ENV.items() if key != "COMPUTE_DOMAIN_UUID"}
    with pytest.raises(SettingsError) as caught:
        load_settings(env).require_domain()
    assert str(caught.value) == MISSING_DOMAIN_MESSAGE
    assert "is CDI enabled in your container runtime?" in MISSING_DOMAIN_MESSAGE


def test_missing_pod_identity_is_named() -> None:
    env = {key: value for key, value in FULL_ENV.items() if key not in ("POD_IP", "POD_NAME")}
    with pytest.raises(SettingsError, match="POD_IP, POD_NAME"):
        load_settings(env).require_pod_identity()


@pytest.mark.parametrize(
    ("key", "value"),
    [("MAX_NODES_PER_IMEX_DOMAIN", "eighteen"), ("MAX_NODES_PER_IMEX_DOMAIN", "0"), ("LOG_VERBOSITY", "-1")],
)
def test_bad_numbers_rejected(key: str, value: str) -> None:
    with pytest.raises(SettingsError, match=key):
        load_settings({key: value})


def test_every_bad_variable_is_named_in_one_error() -> None:
    env = {"MAX_NODES_PER_IMEX_DOMAIN": "eighteen", "LOG_VERBOSITY": "-1", "LOG_FORMAT": "xml"}
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    message = str(caught.value)
    assert message.startswith("invalid daemon settings:")
    assert "MAX_NODES_PER_IMEX_DOMAIN='eighteen'" in message
    assert "LOG_VERBOSITY='-1'" in message
    assert "LOG_FORMAT='xml': must be json or text" in message


@pytest.mark.parametrize(
    ("text", "expected"), [("json", "json"), ("JSON", "json"), ("text", "text"), ("", "text")]
)
def test_log_format(text: str, expected: str) -> None:
    assert load_settings({"LOG_FORMAT": text}).log_format == expected


def test_settings_are_immutable() -> None:
    settings = load_settings({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.node_name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "overrides", "level"),
    [
        ({}, {}, "INFO"),
        ({"LOG_VERBOSITY": "4"}, {}, "DEBUG"),
        ({"LOG_VERBOSITY": "4"}, {"log_verbosity": 0}, "INFO"),
        ({"LOG_VERBOSITY": "4", "LOG_LEVEL": "warning"}, {}, "WARNING"),
        ({"LOG_LEVEL": "warning"}, {"level": "ERROR"}, "ERROR"),
    ],
)
def test_log_level_from_verbosity_unless_named(
    env: dict[str, str], overrides: dict[str, object], level: str
) -> None:
    assert load_settings(env, overrides).log_level == level


def test_bad_options_are_named_as_options() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"LOG_LEVEL": "loud"}, {"log_verbosity": -1})
    assert str(caught.value).splitlines()[1:] == [
        "  -v='-1': Input should be greater than or equal to 0",
        "  LOG_LEVEL='loud': must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
    ]


def test_entry_point_refuses_bad_settings_with_status_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from computedomain.daemon.__main__ import main

    monkeypatch.setenv("MAX_NODES_PER_IMEX_DOMAIN", "eighteen")
    monkeypatch.setenv("LOG_FORMAT", "xml")
    assert main(["-v", "4", "check"]) == 2
    error = capsys.readouterr().err.splitlines()
    assert error[0] == "compute-domain-daemon: error: invalid daemon settings:"
    assert "  LOG_FORMAT='xml': must be json or text" in error
    assert any(line.startswith("  MAX_NODES_PER_IMEX_DOMAIN='eighteen'") for line in error)


def test_domain_mode_is_the_default_and_follows_the_domains_clique_object() -> None:
    settings = load_settings(FULL_ENV)
    assert settings.imex_mode == "domain"
    assert not settings.clique_mode
    assert settings.peers_object("7d3b.32766") == "0c9d7c4e-7b1a-4a63-9a55-1f1f0d6f2a10.7d3b.32766"


def test_clique_mode_needs_no_domain_and_follows_the_cliques_peer_object() -> None:
    env = {key: value for key, value in FULL_ENV.items() if not key.startswith("COMPUTE_DOMAIN_")}
    settings = load_settings({**env, "IMEX_MODE": "clique"})
    assert settings.clique_mode
    settings.require_domain()  # a clique daemon serves every domain of its clique, none by name
    assert settings.peers_object("7d3b.32766") == "imex.7d3b.32766"


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(SettingsError, match="IMEX_MODE='node': must be domain or clique"):
        load_settings({"IMEX_MODE": "node"})


def test_blanks_around_values_are_dropped_but_a_blank_clique_stays_no_fabric() -> None:
    settings = load_settings({"NODE_NAME": " gb200-n01 ", "CLIQUE_ID": "  ", "MAX_NODES_PER_IMEX_DOMAIN": ""})
    assert settings.node_name == "gb200-n01"
    assert settings.clique_id == ""
    assert settings.max_nodes == 18


def test_every_variable_is_named() -> None:
    assert set(ENV_NAMES.values()) >= {"COMPUTE_DOMAIN_UUID", "CLIQUE_ID", "IMEX_MODE", "POD_IP", "LOG_LEVEL"}
    assert len(set(ENV_NAMES.values())) == len(ENV_NAMES)


def test_the_daemon_does_not_import_pydantic() -> None:
    # Its start is on the critical path of a domain's first pods (and `check` is the liveness probe).
    code = (
        "import sys, computedomain.daemon.__main__, computedomain.daemon.run; "
        "print(sorted({m.split('.')[0] for m in sys.modules} "
        "& {'pydantic', 'pydantic_core', 'pydantic_settings'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
