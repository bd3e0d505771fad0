"""The chart's monitoring objects, rendered offline: the ServiceMonitor and PodMonitors select the pods
that serve /metrics, only where the cluster serves their API (or the values force it); the
PrometheusRule passes `promtool check rules` and its unit tests (tests/promtool/alerts.yaml), whose
series are the ones the real programs served (tests/fixtures/metrics); every query of the Grafana
dashboard parses and returns data from those series."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cdtestbed.tools import Tools
from computedomain.api.models import ComputeDomain
from computedomain.controller.render.cliquedaemons import daemonset as clique_daemonset
from computedomain.controller.render.daemonset import daemonset
from computedomain.controller.settings import Settings
from support.chartrender import CHART, CLUSTER_V1, NAMESPACE, Manifest, env_of, only, render, run_template
from support.metricsfixture import FIXTURES

MONITORING_API = ("--api-versions", "monitoring.coreos.com/v1")
ALL_ON = (
    "--set",
    "monitoring.serviceMonitor.enabled=true,monitoring.podMonitor.enabled=true,"
    "monitoring.prometheusRule.enabled=true,monitoring.dashboard.enabled=true",
)
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
ALERT_TESTS = Path(__file__).resolve().parents[2] / "promtool" / "alerts.yaml"
DASHBOARD = CHART / "dashboards" / "computedomain-operator.json"
# Labels Prometheus gives each scraped series from its target (the ServiceMonitor's and PodMonitors'
# relabelings), which the programs themselves never serve.
TARGET_LABELS = {"job", "namespace", "pod", "instance", "node", "service", "endpoint", "container"}
# Label values that name things of one run (a clique's fabric UUID, a GPU's UUID): the alert tests keep
# the label, not necessarily the value.
PER_RUN_LABELS = {"clique", "uuid"}
# Grafana's own variables in the dashboard's queries, as Prometheus would get them.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}

Sample = tuple[str, frozenset[tuple[str, str]]]


def promtool() -> Path:
    """The promtool of the tool cache; skipped without it, except in CI, which builds it."""
    path = Tools.default().directory / "bin" / "promtool"
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: CI builds it with `make tools`")
        pytest.skip(f"promtool not built ({path} is missing): run `make tools` or `tools/build.sh promtool`")
    return path


def run_promtool(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        [str(promtool()), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def kinds(manifests: list[Manifest]) -> set[str]:
    return {m["kind"] for m in manifests}


def rules_file(helm: Path, *args: str) -> dict[str, Any]:
    """The PrometheusRule's spec, which is a Prometheus rules file as it stands."""
    manifests = render(helm, *CLUSTER_V1, *MONITORING_API, ALL_ON[0], ALL_ON[1], *args)
    spec: dict[str, Any] = only(manifests, "PrometheusRule")["spec"]
    return spec


def alert_names(rules: dict[str, Any]) -> set[str]:
    return {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}


def fixture_samples() -> dict[str, list[tuple[str, float, dict[str, str]]]]:
    """Fixture file stem -> its samples (name, value, labels), `_created` ones left out."""
    found: dict[str, list[tuple[str, float, dict[str, str]]]] = {}
    for path in sorted(FIXTURES.glob("*.prom")):
        found[path.stem] = [
            (sample.name, sample.value, dict(sample.labels))
            for family in text_string_to_metric_families(path.read_text())
            for sample in family.samples
            if not sample.name.endswith("_created")
        ]
    return found


def served() -> set[Sample]:
    """Every series some program served, by name and labels (per-run values blanked)."""
    return {
        (name, frozenset((k, "" if k in PER_RUN_LABELS else v) for k, v in labels.items()))
        for samples in fixture_samples().values()
        for name, _, labels in samples
    }


def parse_series(text: str) -> tuple[str, dict[str, str]]:
    """A promtool input series, `name{a="b",...}`, as (name, labels)."""
    match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?", text.strip())
    assert match, f"not a series: {text}"
    labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"', match.group(2) or ""))
    return match.group(1), labels


def matches(selector: Manifest, labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector (matchLabels, matchExpressions) selects `labels`."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        chosen = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]
        if not chosen:
            return False
    return True


def http_port(pod_spec: Manifest) -> bool:
    return any(p.get("name") == "http" for c in pod_spec["containers"] for p in c.get("ports", []))


def controller_settings(manifests: list[Manifest], **extra: str) -> Settings:
    """The controller's settings as the chart's Deployment gives them."""
    (container,) = only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    plain = {name: entry["value"] for name, entry in env_of(container).items() if "value" in entry}
    return Settings.from_env({**plain, "POD_NAME": "controller-0", **extra})


# --- rendering ------------------------------------------------------------------------------------


def test_monitoring_is_off_by_default(default_render: list[Manifest]) -> None:
    assert not kinds(default_render) & MONITORING_KINDS
    assert not [
        m for m in default_render if m["kind"] == "ConfigMap" and "dashboard" in m["metadata"]["name"]
    ]


def test_the_monitoring_kinds_render_only_where_their_api_is_served_or_forced(helm: Path) -> None:
    """Enabled without the API (a cluster without the Prometheus Operator), only the dashboard renders;
    with the API, or forced for a render without cluster access, all of them."""
    without = render(helm, *CLUSTER_V1, *ALL_ON)
    assert not kinds(without) & MONITORING_KINDS
    assert only(without, "ConfigMap", "dashboard")

    for extra in (MONITORING_API, ("--set", "monitoring.forceMonitoringApi=true")):
        manifests = render(helm, *CLUSTER_V1, *ALL_ON, *extra)
        assert kinds(manifests) >= MONITORING_KINDS
        assert len([m for m in manifests if m["kind"] == "PodMonitor"]) == 2


def test_the_service_monitor_scrapes_the_controller_service(helm: Path) -> None:
    manifests = render(helm, *CLUSTER_V1, *ALL_ON, *MONITORING_API, "--set", "monitoring.labels.release=kps")
    monitor = only(manifests, "ServiceMonitor")
    services = [m for m in manifests if m["kind"] == "Service"]
    chosen = [s for s in services if matches(monitor["spec"]["selector"], s["metadata"]["labels"])]
    assert [s["metadata"]["name"] for s in chosen] == [
        f"{only(manifests, 'Deployment')['metadata']['name']}-metrics"
    ]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in chosen[0]["spec"]["ports"]}
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    # The Prometheus of kube-prometheus-stack selects by its release label.
    for kind in MONITORING_KINDS:
        for manifest in (m for m in manifests if m["kind"] == kind):
            assert manifest["metadata"]["labels"]["release"] == "kps"


@pytest.mark.parametrize("mode", ["domain", "clique"])
def test_the_pod_monitors_scrape_the_plugin_agent_and_imex_daemon_pods(helm: Path, mode: str) -> None:
    """Each program pod is chosen by exactly one PodMonitor, on its port http; the IMEX daemons are
    the pods the controller itself renders, of the chart's IMEX mode; the controller is left to the
    ServiceMonitor."""
    manifests = render(helm, *CLUSTER_V1, *ALL_ON, *MONITORING_API, "--set", f"imex.mode={mode}")
    monitors = [m for m in manifests if m["kind"] == "PodMonitor"]
    settings = controller_settings(manifests)
    domain = ComputeDomain.model_validate(
        {
            "metadata": {"name": "cd", "namespace": "team", "uid": "u-1"},
            "spec": {"channel": {"resourceClaimTemplate": {"name": "cd-channel"}}},
        }
    )
    daemons = clique_daemonset(settings) if mode == "clique" else daemonset(domain, settings)
    pods = {
        "kubelet-plugin": only(manifests, "DaemonSet", "kubelet-plugin")["spec"]["template"],
        "node-agent": only(manifests, "DaemonSet", "node-agent")["spec"]["template"],
        "imex-daemon": daemons["spec"]["template"],
        "controller": only(manifests, "Deployment")["spec"]["template"],
    }
    for program, pod in pods.items():
        chosen = [m for m in monitors if matches(m["spec"]["selector"], pod["metadata"]["labels"])]
        assert len(chosen) == (0 if program == "controller" else 1), (program, chosen)
        if program != "controller":
            assert http_port(pod["spec"]), program
            (endpoint,) = chosen[0]["spec"]["podMetricsEndpoints"]
            assert endpoint["port"] == "http"
            assert {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"} in endpoint[
                "relabelings"
            ]
    # The daemons of the other mode are not chosen: a switch of mode is refused while domains live.
    other = daemonset(domain, settings) if mode == "clique" else clique_daemonset(settings)
    assert not [
        m for m in monitors if matches(m["spec"]["selector"], other["spec"]["template"]["metadata"]["labels"])
    ]


def test_the_alert_thresholds_and_labels_come_from_the_values(helm: Path) -> None:
    rules = rules_file(
        helm,
        "--set",
        "imex.mode=clique,monitoring.prometheusRule.notReadyFor=1h30m,"
        "monitoring.prometheusRule.poolNearExhaustion=0.75,monitoring.prometheusRule.alertLabels.team=gpu",
    )
    by_name = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert by_name["ComputeDomainNotReady"]["expr"].endswith("> 5400")
    assert by_name["ComputeDomainChannelPoolNearExhaustion"]["expr"].endswith("> 0.75")
    assert all(rule["labels"]["team"] == "gpu" for rule in by_name.values())
    assert all(rule["labels"]["severity"] in {"warning", "critical"} for rule in by_name.values())


def test_alerts_of_what_is_not_running_are_not_rendered(helm: Path) -> None:
    """No pool alerts in domain mode, no plugin alerts without the plugin, no leader alert while the
    controller is paused (replicas 0)."""
    every = alert_names(rules_file(helm, "--set", "imex.mode=clique"))
    domain = alert_names(rules_file(helm))
    assert every - domain == {"ComputeDomainChannelPoolNearExhaustion", "ComputeDomainChannelPoolExhausted"}
    paused = alert_names(rules_file(helm, "--set", "controller.replicas=0,kubeletPlugin.enabled=false"))
    assert domain - paused == {
        "ComputeDomainControllerNotLeading",
        "ComputeDomainPluginNotRegistered",
        "ComputeDomainPrepareErrors",
    }


def test_a_bad_threshold_is_refused(helm: Path) -> None:
    for bad in (
        "monitoring.prometheusRule.notReadyFor=15 minutes",
        "monitoring.prometheusRule.poolNearExhaustion=2",
    ):
        result = run_template(helm, *CLUSTER_V1, "--set", bad)
        assert result.returncode != 0, bad
        assert "values don't meet the specifications" in result.stderr, bad


# --- the alerts against promtool -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["domain", "clique"])
def test_the_rules_pass_promtool_check(helm: Path, tmp_path: Path, mode: str) -> None:
    rules = rules_file(helm, "--set", f"imex.mode={mode}")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    out = run_promtool("check", "rules", "--lint=all", "--lint-fatal", "rules.yaml", cwd=tmp_path)
    assert f"SUCCESS: {len(alert_names(rules))} rules found" in out


def test_each_alert_fires_and_stays_silent_as_its_unit_tests_say(helm: Path, tmp_path: Path) -> None:
    """`promtool test rules` of tests/promtool/alerts.yaml on the rules rendered in clique mode (every
    alert), with the default thresholds; and every alert has a case where it fires and one where it
    does not."""
    rules = rules_file(helm, "--set", "imex.mode=clique")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    shutil.copy(ALERT_TESTS, tmp_path / "alerts.yaml")
    out = run_promtool("test", "rules", "alerts.yaml", cwd=tmp_path)
    assert "SUCCESS" in out

    cases = [
        case for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"] for case in test["alert_rule_test"]
    ]
    fired = {case["alertname"] for case in cases if case["exp_alerts"]}
    silent = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert fired == silent == alert_names(rules)
    print(f"promtool: {len(cases)} alert checks of {len(alert_names(rules))} alerts passed")


def test_the_alert_tests_feed_series_the_programs_served() -> None:
    """Each input series of the alert tests is one the real programs served (name and labels), plus the
    target labels Prometheus adds."""
    known = served()
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    series = {entry["series"] for test in tests for entry in test["input_series"]}
    for text in sorted(series):
        name, labels = parse_series(text)
        own = frozenset(
            (k, "" if k in PER_RUN_LABELS else v) for k, v in labels.items() if k not in TARGET_LABELS
        )
        assert (name, own) in known, f"no program served {name}{dict(own)} (tests/fixtures/metrics)"
        assert {"job", "namespace", "pod", "instance"} <= labels.keys(), text


def test_the_fixtures_hold_every_programs_series() -> None:
    """The real run covered each program, and what the alerts read."""
    programs = fixture_samples()
    assert set(programs) == {"controller", "controller-clique", "kubelet-plugin", "node-agent", "imex-daemon"}
    names = {name for samples in programs.values() for name, _, _ in samples}
    for rule_series in (
        "computedomain_leader",
        "computedomain_domain_not_ready_seconds",
        "computedomain_plugin_registered",
        "computedomain_plugin_claim_errors_total",
        "computedomain_daemon_imex_restarts_total",
        "computedomain_channel_pool_channels",
        "computedomain_channel_pool_waiting_domains",
    ):
        assert rule_series in names


# --- the dashboard ---------------------------------------------------------------------------------


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title and refId, PromQL as Prometheus gets it) of every query of the dashboard."""
    queries = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append((f"{panel['title']} ({target['refId']})", expr))
    return queries


def test_the_dashboard_configmap_holds_the_dashboard(helm: Path) -> None:
    configmap = only(render(helm, *CLUSTER_V1, *ALL_ON), "ConfigMap", "dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    (document,) = configmap["data"].values()
    assert json.loads(document) == json.loads(DASHBOARD.read_text())


def test_every_dashboard_query_reads_series_the_programs_served() -> None:
    names = {name for name, _ in served()}
    queries = dashboard_queries()
    assert len(queries) >= 20
    for title, expr in queries:
        used = set(re.findall(r"\bcomputedomain_[a-z_]+\b", expr))
        assert used, f"{title}: no series of the operator in {expr}"
        assert used <= names, f"{title}: {sorted(used - names)} never served (tests/fixtures/metrics)"
    panels = {title.rsplit(" (", 1)[0] for title, _ in queries}
    for subject in ("status", "Formation", "Reconcile", "Prepare", "wait", "IMEX", "fabric", "clique"):
        assert any(subject.lower() in panel.lower() for panel in panels), subject


def test_every_dashboard_query_parses_and_returns_data_from_the_real_series(tmp_path: Path) -> None:
    """Each query becomes a recording rule (`promtool check rules` parses it), evaluated by `promtool
    test rules` over the fixtures' series (counters rising, gauges as served, with the target labels
    the monitors add): each must return data, so a wrong name, label or matcher shows."""
    queries = dashboard_queries()
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)
                ],
            }
        ]
    }
    (tmp_path / "dashboard.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    run_promtool("check", "rules", "dashboard.yaml", cwd=tmp_path)

    series = []
    for stem, samples in fixture_samples().items():
        target = {
            "job": f"{NAMESPACE}/{stem}",
            "namespace": NAMESPACE,
            "pod": f"{stem}-0",
            "instance": f"{stem}:8080",
            "node": "gb200-r1-n01",
        }
        for name, value, labels in samples:
            rising = name.endswith(("_total", "_bucket", "_count", "_sum"))
            text = ",".join(f'{k}="{v}"' for k, v in sorted({**target, **labels}.items()))
            series.append(
                {"series": f"{name}{{{text}}}", "values": f"{value:.6f}{'+1' if rising else ''}x30"}
            )
    checks = [
        {"expr": f"absent(dashboard:query_{i})", "eval_time": "20m", "exp_samples": []}
        for i in range(len(queries))
    ]
    test = {
        "rule_files": ["dashboard.yaml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": checks}],
    }
    (tmp_path / "dashboard_test.yaml").write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run(
        [str(promtool()), "test", "rules", "dashboard_test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    empty = sorted(set(re.findall(r"absent\(dashboard:query_(\d+)\)", result.stdout + result.stderr)))
    named = [f"{queries[int(i)][0]}: {queries[int(i)][1]}" for i in empty]
    assert result.returncode == 0, "queries without data:\n" + "\n".join(named) + "\n" + result.stdout[-3000:]
    print(f"dashboard: {len(queries)} queries parse and return data from {len(series)} real series")
