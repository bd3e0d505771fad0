"""Where each program's metrics are scraped, as the chart renders it: every pod that serves /metrics
names its port `http` and carries the prometheus.io annotations, and the port is the one the program
listens on (its HTTP_PORT, or its default)."""

from __future__ import annotations

from typing import Any

import pytest

from computedomain.api.models import ComputeDomain
from computedomain.controller.render.daemonset import daemonset
from computedomain.controller.settings import Settings
from computedomain.plugin.settings import PluginSettings
from support.chartrender import Manifest, env_of, only

SCRAPE = {"prometheus.io/scrape": "true", "prometheus.io/path": "/metrics"}


def scraped_port(template: dict[str, Any]) -> int:
    """The port the annotations point at, which must be the container's port named http."""
    annotations = template["metadata"]["annotations"]
    assert SCRAPE.items() <= annotations.items()
    (container,) = template["spec"]["containers"]
    (port,) = [p for p in container["ports"] if p["name"] == "http"]
    assert str(port["containerPort"]) == annotations["prometheus.io/port"]
    return int(port["containerPort"])


def test_the_node_agent_serves_on_its_annotated_port(default_render: list[Manifest]) -> None:
    template = only(default_render, "DaemonSet", "node-agent")["spec"]["template"]
    port = scraped_port(template)
    (container,) = template["spec"]["containers"]
    assert env_of(container)["HTTP_PORT"]["value"] == str(port)


def test_the_kubelet_plugin_serves_on_its_annotated_port(default_render: list[Manifest]) -> None:
    template = only(default_render, "DaemonSet", "kubelet-plugin")["spec"]["template"]
    port = scraped_port(template)
    (container,) = template["spec"]["containers"]
    # The chart leaves the plugin its default port.
    assert "HTTP_PORT" not in env_of(container)
    assert PluginSettings.from_env({"NODE_NAME": "n1"}).http_port == port


def test_the_controller_gives_the_imex_daemons_a_port(default_render: list[Manifest]) -> None:
    (container,) = only(default_render, "Deployment")["spec"]["template"]["spec"]["containers"]
    plain = {name: entry["value"] for name, entry in env_of(container).items() if "value" in entry}
    settings = Settings.from_env({**plain, "POD_NAME": "controller-0"})
    assert settings.daemon_http_port == 8080

    domain = ComputeDomain.model_validate(
        {
            "metadata": {"name": "cd", "namespace": "team", "uid": "u-1"},
            "spec": {"channel": {"resourceClaimTemplate": {"name": "cd-channel"}}},
        }
    )
    assert scraped_port(daemonset(domain, settings)["spec"]["template"]) == 8080


@pytest.mark.parametrize("component", ["node-agent", "kubelet-plugin"])
def test_no_program_pod_uses_the_host_network(default_render: list[Manifest], component: str) -> None:
    # A fixed port is safe only in the pod's own network namespace.
    assert not only(default_render, "DaemonSet", component)["spec"]["template"]["spec"].get("hostNetwork")
