"""Clique mode: the clique daemons' DaemonSet, claim template and peer objects, checked path by path."""

from __future__ import annotations

from typing import Any

from computedomain.api import names
from computedomain.api.models import CliqueDaemon, ComputeDomain
from computedomain.controller.render import cliquedaemons
from computedomain.controller.render.daemonset import daemonset as domain_daemonset
from computedomain.controller.settings import Settings
from computedomain.dra.configs import DaemonConfig, decode_parameters

SETTINGS = Settings(image="registry.example/cd:1.0", pod_name="controller-0", namespace="cd-system")
LABELS = {"resource.nvidia.com/imexDaemons": "clique"}
CLIQUE = "7d3b-uuid.32766"
DOMAIN = ComputeDomain.model_validate(
    {
        "metadata": {"name": "train-cd", "namespace": "team-a", "uid": "0c9d7c4e"},
        "spec": {"channel": {"resourceClaimTemplate": {"name": "train-cd-channel"}}},
    }
)


def pod_spec(settings: Settings = SETTINGS) -> dict[str, Any]:
    spec: dict[str, Any] = cliquedaemons.daemonset(settings)["spec"]["template"]["spec"]
    return spec


def env(settings: Settings = SETTINGS) -> dict[str, Any]:
    (container,) = pod_spec(settings)["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_one_daemonset_in_the_operator_namespace_selected_by_its_own_label() -> None:
    rendered = cliquedaemons.daemonset(SETTINGS)
    assert rendered["metadata"] == {
        "name": "computedomain-clique-daemons",
        "namespace": "cd-system",
        "labels": LABELS,
    }
    assert rendered["spec"]["selector"] == {"matchLabels": LABELS}
    assert rendered["spec"]["template"]["metadata"] == {"labels": LABELS}
    # Not a domain's: the per-domain caches, indexes and sweep never see it.
    assert names.DOMAIN_LABEL not in str(rendered)


def test_runs_on_every_node_with_a_clique_label() -> None:
    terms = pod_spec()["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms == {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "nvidia.com/gpu.clique", "operator": "Exists"}]}]
    }
    assert "nodeSelector" not in pod_spec()


def test_the_container_is_the_per_domain_daemons_less_the_domain_plus_the_mode() -> None:
    (clique,) = pod_spec()["containers"]
    (domain,) = domain_daemonset(DOMAIN, SETTINGS)["spec"]["template"]["spec"]["containers"]
    for key in ("name", "image", "command", "resources", "securityContext"):
        assert clique[key] == domain[key], key
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert clique[probe] == domain[probe], probe
    assert clique["securityContext"]["runAsUser"] == 0
    assert clique["securityContext"]["allowPrivilegeEscalation"] is False
    variables = env()
    assert variables["IMEX_MODE"] == "clique"
    assert not any(name.startswith("COMPUTE_DOMAIN_") for name in variables)
    domain_env = {e["name"] for e in domain["env"]}
    assert set(variables) == {name for name in domain_env if not name.startswith("COMPUTE_DOMAIN_")} | {
        "IMEX_MODE"
    }


def test_claims_the_daemon_device_through_its_own_template() -> None:
    spec = pod_spec()
    assert spec["resourceClaims"] == [
        {"name": names.DAEMON_CLAIM, "resourceClaimTemplateName": "computedomain-clique-daemons"}
    ]
    template = cliquedaemons.daemon_claim_template(SETTINGS, "v1")
    assert template["metadata"] == {
        "name": "computedomain-clique-daemons",
        "namespace": "cd-system",
        "labels": {**LABELS, names.TARGET_LABEL: names.TARGET_DAEMON},
    }
    devices = template["spec"]["spec"]["devices"]
    (request,) = devices["requests"]
    assert (request["name"], request["exactly"]["deviceClassName"]) == ("daemon", names.DAEMON_DEVICE_CLASS)
    (config,) = devices["config"]
    assert config["requests"] == ["daemon"]
    # The kubelet plugin's decoder takes it as a daemon config that names the clique mode.
    decoded = decode_parameters(config["opaque"]["parameters"])
    assert isinstance(decoded, DaemonConfig)
    assert decoded.domain_id == "clique"


def test_priority_class_is_node_critical_unless_the_chart_names_one() -> None:
    assert pod_spec()["priorityClassName"] == "system-node-critical"
    named = SETTINGS.model_copy(update={"daemon_priority_class": "imex-critical"})
    assert pod_spec(named)["priorityClassName"] == "imex-critical"


def test_peer_object_lists_the_cliques_daemons_with_no_owner() -> None:
    daemons = [
        CliqueDaemon(node_name="n-a", ip_address="10.0.0.1", clique_id=CLIQUE, index=0, status="Ready"),
        CliqueDaemon(node_name="n-b", ip_address="10.0.0.2", clique_id=CLIQUE, index=1),
    ]
    peers = cliquedaemons.peers_object(SETTINGS, CLIQUE, daemons)
    assert peers["metadata"] == {
        "name": f"imex.{CLIQUE}",
        "namespace": "cd-system",
        "labels": {**LABELS, names.CLIQUE_LABEL: CLIQUE},
    }
    assert peers["kind"] == names.CLIQUE_KIND
    assert peers["daemons"] == [
        {"nodeName": "n-a", "ipAddress": "10.0.0.1", "cliqueID": CLIQUE, "index": 0, "status": "Ready"},
        {"nodeName": "n-b", "ipAddress": "10.0.0.2", "cliqueID": CLIQUE, "index": 1, "status": "NotReady"},
    ]
    assert "channel" not in peers
