"""The IMEX daemon pods' metrics port: rendered into a domain's daemons and the clique daemons alike
once DAEMON_HTTP_PORT names one, absent otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from computedomain.api.models import ComputeDomain
from computedomain.controller.render import cliquedaemons
from computedomain.controller.render.daemonset import daemonset
from computedomain.controller.settings import Settings, SettingsError

SETTINGS = Settings(image="registry.example/cd:1.0", pod_name="controller-0", namespace="cd-system")
DOMAIN = ComputeDomain.model_validate(
    {
        "metadata": {"name": "train-cd", "namespace": "team-a", "uid": "0c9d7c4e"},
        "spec": {"channel": {"resourceClaimTemplate": {"name": "train-cd-channel"}}},
    }
)
RENDERS = {
    "domain": lambda settings: daemonset(DOMAIN, settings),
    "clique": cliquedaemons.daemonset,
}


def template(kind: str, port: int) -> dict[str, Any]:
    rendered: dict[str, Any] = RENDERS[kind](SETTINGS.model_copy(update={"daemon_http_port": port}))
    return dict(rendered["spec"]["template"])


@pytest.mark.parametrize("kind", sorted(RENDERS))
def test_a_port_makes_the_daemon_serve_and_say_where(kind: str) -> None:
    pod = template(kind, 9400)
    (container,) = pod["spec"]["containers"]

    assert container["ports"] == [{"name": "http", "containerPort": 9400, "protocol": "TCP"}]
    assert {"name": "HTTP_PORT", "value": "9400"} in container["env"]
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9400",
        "prometheus.io/path": "/metrics",
    }
    # Everything else is the template without a port, so that only the port rolls the daemons.
    plain = template(kind, 0)
    (plain_container,) = plain["spec"]["containers"]
    assert {k: v for k, v in container.items() if k not in ("ports", "env")} == {
        k: v for k, v in plain_container.items() if k != "env"
    }
    assert container["env"][:-1] == plain_container["env"]
    assert pod["metadata"]["labels"] == plain["metadata"]["labels"]


@pytest.mark.parametrize("kind", sorted(RENDERS))
def test_no_port_renders_none(kind: str) -> None:
    pod = template(kind, 0)
    (container,) = pod["spec"]["containers"]

    assert "ports" not in container
    assert "HTTP_PORT" not in {e["name"] for e in container["env"]}
    assert "annotations" not in pod["metadata"]


def test_the_port_setting_defaults_off_and_is_checked() -> None:
    assert Settings.from_env({"IMAGE_NAME": "x", "POD_NAME": "p"}).daemon_http_port == 0
    assert (
        Settings.from_env({"IMAGE_NAME": "x", "POD_NAME": "p", "DAEMON_HTTP_PORT": "8080"}).daemon_http_port
        == 8080
    )
    with pytest.raises(SettingsError, match="DAEMON_HTTP_PORT"):
        Settings.from_env({"IMAGE_NAME": "x", "POD_NAME": "p", "DAEMON_HTTP_PORT": "-1"})
