"""The IMEX daemon pods' annotations from the chart (DAEMON_POD_ANNOTATIONS): on a domain's daemons and
the clique daemons alike, beside the scrape annotations, which win."""

from __future__ import annotations

from typing import Any

import pytest

from computedomain.api.models import ComputeDomain
from computedomain.controller.render import cliquedaemons
from computedomain.controller.render.daemonset import daemonset
from computedomain.controller.settings import Settings

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
MESH = {"sidecar.istio.io/inject": "false", "prometheus.io/port": "1"}


def metadata(kind: str, **changes: Any) -> dict[str, Any]:
    rendered: dict[str, Any] = RENDERS[kind](SETTINGS.model_copy(update=changes))
    return dict(rendered["spec"]["template"]["metadata"])


@pytest.mark.parametrize("kind", sorted(RENDERS))
def test_the_charts_annotations_reach_the_daemon_pods(kind: str) -> None:
    assert metadata(kind, daemon_pod_annotations=MESH)["annotations"] == MESH
    assert "annotations" not in metadata(kind)


@pytest.mark.parametrize("kind", sorted(RENDERS))
def test_the_scrape_annotations_win(kind: str) -> None:
    annotations = metadata(kind, daemon_pod_annotations=MESH, daemon_http_port=9400)["annotations"]
    assert annotations["sidecar.istio.io/inject"] == "false"
    assert annotations["prometheus.io/port"] == "9400"


def test_the_setting_is_a_json_object() -> None:
    env = {
        "IMAGE_NAME": "registry.example/cd:1.0",
        "DAEMON_POD_ANNOTATIONS": '{"sidecar.istio.io/inject": "false"}',
    }
    assert Settings.from_env(env).daemon_pod_annotations == {"sidecar.istio.io/inject": "false"}
