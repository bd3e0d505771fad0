"""Controller settings come from the environment, with the reference's names and readable errors."""

from __future__ import annotations

import pytest

from computedomain.controller.settings import Settings, SettingsError, parse_feature_gates

MINIMAL = {"IMAGE_NAME": "registry.example/computedomain:1.0", "POD_NAME": "controller-0"}


def test_defaults() -> None:
    settings = Settings.from_env(MINIMAL)

    assert settings.model_dump() == {
        "namespace": "computedomain-system",
        "image": "registry.example/computedomain:1.0",
        "image_pull_secrets": (),
        "daemon_log_verbosity": 4,
        "max_nodes_per_clique": 18,
        "feature_gates": "ComputeDomainCliques=true,IMEXDaemonsWithDNSNames=true",
        "daemon_priority_class": "",
        "daemon_pod_annotations": {},
        "daemon_cpu_request": "10m",
        "daemon_memory_request": "64Mi",
        "daemon_memory_limit": "256Mi",
        "daemon_http_port": 0,
        "http_port": 8080,
        "json_logs": False,
        "leader_election": True,
        "lease_name": "computedomain-controller",
        "lease_duration": 15.0,
        "renew_deadline": 10.0,
        "retry_period": 2.0,
        "pod_name": "controller-0",
        "sweep_interval": 600.0,
        "status_batch_window": 0.2,
        "api_connections": 32,
        "imex_mode": "domain",
        "imex_channels": 2048,
        "log_level": "INFO",
    }


def test_reads_every_variable() -> None:
    settings = Settings.from_env(
        {
            "NAMESPACE": "dra-driver-nvidia-gpu",
            "IMAGE_NAME": "img:2",
            "CD_DAEMON_IMAGE_PULL_SECRET_NAMES": "regcred, other ,",
            "LOG_VERBOSITY_CD_DAEMON": "6",
            "MAX_NODES_PER_IMEX_DOMAIN": "8",
            "FEATURE_GATES": (
                "ComputeDomainCliques=true,IMEXDaemonsWithDNSNames=true,CrashOnNVLinkFabricErrors=false,"
            ),
            "DAEMON_PRIORITY_CLASS": "system-node-critical",
            "DAEMON_CPU_REQUEST": "0.1",
            "DAEMON_MEMORY_REQUEST": "128Mi",
            "DAEMON_MEMORY_LIMIT": "1024Mi",
            "HTTP_PORT": "9090",
            "LOG_FORMAT": "JSON",
            "LEADER_ELECTION": "false",
            "LEASE_NAME": "cd-lease",
            "LEASE_DURATION_SECONDS": "30",
            "RENEW_DEADLINE_SECONDS": "20",
            "RETRY_PERIOD_SECONDS": "5",
            "POD_NAME": "controller-1",
            "SWEEP_INTERVAL_SECONDS": "60",
            "STATUS_BATCH_SECONDS": "0",
            "LOG_LEVEL": "warning",
        }
    )

    assert settings.namespace == "dra-driver-nvidia-gpu"
    assert settings.image_pull_secrets == ("regcred", "other")
    assert (settings.daemon_log_verbosity, settings.max_nodes_per_clique) == (6, 8)
    assert settings.gates == {
        "ComputeDomainCliques": True,
        "IMEXDaemonsWithDNSNames": True,
        "CrashOnNVLinkFabricErrors": False,
    }
    assert settings.daemon_priority_class == "system-node-critical"
    # Quantities are kept in the form the API server echoes, so applied DaemonSets compare equal.
    assert (settings.daemon_cpu_request, settings.daemon_memory_request, settings.daemon_memory_limit) == (
        "100m",
        "128Mi",
        "1Gi",
    )
    assert (settings.http_port, settings.json_logs, settings.leader_election) == (9090, True, False)
    assert (settings.lease_name, settings.lease_duration, settings.renew_deadline, settings.retry_period) == (
        "cd-lease",
        30.0,
        20.0,
        5.0,
    )
    assert (settings.pod_name, settings.sweep_interval, settings.status_batch_window) == (
        "controller-1",
        60.0,
        0.0,
    )
    assert (settings.log_format, settings.log_level) == ("json", "WARNING")


def test_empty_variables_count_as_unset() -> None:
    settings = Settings.from_env({**MINIMAL, "NAMESPACE": "", "HTTP_PORT": " "})

    assert (settings.namespace, settings.http_port) == ("computedomain-system", 8080)


def test_pod_name_defaults_to_the_host_name() -> None:
    assert Settings.from_env({"IMAGE_NAME": "img"}).pod_name


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"IMAGE_NAME": ""}, "IMAGE_NAME is required"),
        ({"NAMESPACE": "Not_A_Label"}, "NAMESPACE='Not_A_Label': must be a DNS label"),
        ({"HTTP_PORT": "http"}, "HTTP_PORT='http': Input should be a valid integer"),
        ({"HTTP_PORT": "70000"}, "HTTP_PORT='70000'"),
        ({"MAX_NODES_PER_IMEX_DOMAIN": "0"}, "MAX_NODES_PER_IMEX_DOMAIN='0'"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT='xml': must be json or text"),
        ({"LEADER_ELECTION": "maybe"}, "LEADER_ELECTION='maybe': must be true or false"),
        ({"LEADER_ELECTION": "t"}, "LEADER_ELECTION='t': must be true or false"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL='loud': must be one of DEBUG, INFO"),
        ({"FEATURE_GATES": "ComputeDomainCliques"}, "not of the form Name=true"),
        ({"FEATURE_GATES": "ComputeDomainCliques=false"}, "needs ComputeDomainCliques enabled"),
        ({"DAEMON_CPU_REQUEST": "lots"}, "DAEMON_CPU_REQUEST='lots': 'lots' is not a Kubernetes quantity"),
        ({"DAEMON_MEMORY_REQUEST": "-1Mi"}, "must not be negative"),
        ({"DAEMON_MEMORY_REQUEST": "1Gi", "DAEMON_MEMORY_LIMIT": "512Mi"}, "must not be below"),
        ({"CD_DAEMON_IMAGE_PULL_SECRET_NAMES": "ok,Bad Name"}, "'Bad Name' is not a valid object name"),
        ({"RENEW_DEADLINE_SECONDS": "20"}, "LEASE_DURATION_SECONDS > RENEW_DEADLINE_SECONDS"),
        ({"STATUS_BATCH_SECONDS": "-1"}, "STATUS_BATCH_SECONDS='-1'"),
    ],
)
def test_bad_values_are_named(env: dict[str, str], expected: str) -> None:
    with pytest.raises(SettingsError, match="invalid controller settings") as raised:
        Settings.from_env({**MINIMAL, **env})

    assert expected in str(raised.value)


def test_reports_every_problem_at_once() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"POD_NAME": "p", "LOG_FORMAT": "xml", "HTTP_PORT": "x"})

    message = str(raised.value)
    assert "IMAGE_NAME" in message
    assert "LOG_FORMAT" in message
    assert "HTTP_PORT" in message


def test_settings_are_immutable() -> None:
    settings = Settings.from_env(MINIMAL)

    with pytest.raises(ValueError, match="frozen"):
        settings.image = "other"


@pytest.mark.parametrize(
    ("text", "gates"),
    [
        ("", {}),
        ("A=true", {"A": True}),
        (" A=true , B=False,", {"A": True, "B": False}),
    ],
)
def test_parse_feature_gates(text: str, gates: dict[str, bool]) -> None:
    assert parse_feature_gates(text) == gates


@pytest.mark.parametrize("text", ["A", "A=yes", "=true", "A=true,B"])
def test_parse_feature_gates_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="Name=true"):
        parse_feature_gates(text)


@pytest.mark.parametrize(
    ("variables", "bad"),
    [
        ({"IMEX_MODE": "rack"}, "IMEX_MODE"),
        ({"IMEX_CHANNELS": "1"}, "IMEX_CHANNELS"),
        ({"IMEX_CHANNELS": "2049"}, "IMEX_CHANNELS"),
    ],
)
def test_imex_mode_and_channels_are_checked(variables: dict[str, str], bad: str) -> None:
    with pytest.raises(SettingsError, match=bad):
        Settings.from_env({**MINIMAL, **variables})


def test_clique_mode_with_a_small_pool() -> None:
    settings = Settings.from_env({**MINIMAL, "IMEX_MODE": "clique", "IMEX_CHANNELS": "3"})

    assert (settings.imex_mode, settings.imex_channels) == ("clique", 3)
