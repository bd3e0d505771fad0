"""`why`: every reason the controller can set, and what the nodes show, from snapshots built by hand."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from computedomain.kubectl.explain import CONTROLLER_REASONS, explain
from computedomain.kubectl.snapshot import (
    ClaimInfo,
    Condition,
    EventInfo,
    NodeEntry,
    NodeInfo,
    PodInfo,
    Snapshot,
)

UID = "11111111-2222-4333-8444-555555555555"
OTHER = "99999999-2222-4333-8444-555555555555"
CLIQUE = "c0ffee.32766"
OPS = "computedomain-system"


def snapshot(reason: str, message: str = "", status: str = "False", **fields: object) -> Snapshot:
    base = Snapshot(
        namespace="team-a",
        name="train",
        uid=UID,
        operator_namespace=OPS,
        num_nodes=2,
        template="train-channel",
        status="Ready" if status == "True" else "NotReady",
        observed_generation=1,
        conditions=(Condition("Ready", status, reason, message or f"the {reason} message"),),
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def node(name: str, status: str = "NotReady", clique: str = CLIQUE) -> NodeEntry:
    return NodeEntry(name=name, clique=clique, index=0 if clique else -1, status=status)


def daemon(node_name: str, **fields: object) -> PodInfo:
    pod = PodInfo(namespace=OPS, name=f"daemon-{node_name}", uid=f"uid-{node_name}", node=node_name)
    return replace(pod, **fields)  # type: ignore[arg-type]


def test_every_reason_the_controller_sets_has_an_explanation() -> None:
    controller = Path(__file__).parents[3] / "operator" / "computedomain" / "controller"
    source = (controller / "plan" / "problems.py").read_text() + (
        controller / "render" / "status.py"
    ).read_text()
    literal = re.search(r"ProblemReason = Literal\[(.*?)\]", source, re.S)
    assert literal is not None
    reasons = set(re.findall(r'"(\w+)"', literal.group(1)))
    reasons |= set(re.findall(r'_Verdict\(\s*"False",\s*"(\w+)"', source))
    assert reasons >= {"CliqueFull", "WaitingForNodes", "DaemonsNotReady", "NameConflict"}
    assert reasons <= set(CONTROLLER_REASONS)


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        ("InvalidSpec", "fix the manifest"),
        ("ResourceAPIUnavailable", "enable Dynamic Resource Allocation"),
        ("NameConflict", "choose another spec.channel.resourceClaimTemplate.name"),
        ("ReconcileError", "read the refusal in the message"),
        ("LabelConflict", "keep the two domains' pods on different nodes"),
        ("CliqueFull", "run fewer of the domain's pods per NVLink clique"),
        ("ChannelPoolExhausted", "wait: its pods go on"),
        ("AllChannelsRefused", "recreate the domain with allocationMode: Single"),
        ("ImexModeMismatch", "delete the domain"),
    ],
)
def test_a_controller_reason_gets_its_meaning_and_fix(reason: str, words: str) -> None:
    ready, text = explain(snapshot(reason, "what the controller said"))
    assert not ready
    assert text.startswith(f"ComputeDomain team-a/train is not Ready ({reason}): what the controller said.")
    assert f"What to do: {words}" in text
    assert "\n" not in text


def test_a_label_conflict_names_the_node_and_the_other_domain() -> None:
    s = snapshot(
        "LabelConflict",
        claims=(ClaimInfo("team-a", "w-0-channel", node="gb-n00"),),
        node_info={"gb-n00": NodeInfo("gb-n00", CLIQUE, domain=OTHER)},
    )
    assert f"Nodes held by another domain: gb-n00 (domain UID {OTHER})." in explain(s)[1]


def test_children_not_ready_for_another_reason_is_said_too() -> None:
    s = snapshot(
        "LabelConflict",
        conditions=(
            Condition("Ready", "False", "LabelConflict", "x"),
            Condition("ChildrenReady", "False", "ReconcileError", "writing the DaemonSet failed (HTTP 403)"),
        ),
    )
    assert (
        "ChildrenReady is also False (ReconcileError): writing the DaemonSet failed (HTTP 403)."
        in (explain(s)[1])
    )


def test_an_unknown_reason_is_quoted() -> None:
    ready, text = explain(snapshot("SomethingNew", "new words"))
    assert not ready
    assert "(SomethingNew): new words" in text
    assert "does not know" in text


def test_a_ready_domain_exits_ready() -> None:
    s = snapshot("DomainReady", "2 of 2 nodes ready in 1 NVLink clique", status="True")
    assert explain(s) == (True, "ComputeDomain team-a/train is Ready: 2 of 2 nodes ready in 1 NVLink clique.")


def test_a_ready_domain_with_a_fabric_node_lacking_its_clique_label_says_so() -> None:
    s = snapshot(
        "DomainReady",
        status="True",
        nodes=(node("gb-n00", "Ready"), node("gb-n01", "Ready", clique="")),
        node_info={"gb-n01": NodeInfo("gb-n01", product="NVIDIA-GB200", domain=UID)},
        events=(EventInfo("Node", "gb-n01", "Warning", "RegistrationInProgress", "fabric registering"),),
    )
    ready, text = explain(s)
    assert ready
    assert "However, gb-n01 joined without an NVLink clique (no nvidia.com/gpu.clique label)" in text
    assert "The node agent says: fabric registering." in text


def test_a_node_without_fabric_is_no_news() -> None:
    s = snapshot(
        "DomainReady",
        status="True",
        nodes=(node("h100-n00", "Ready", clique=""),),
        node_info={"h100-n00": NodeInfo("h100-n00", product="NVIDIA-H100-PCIe", domain=UID)},
    )
    assert "However" not in explain(s)[1]


def test_the_plugin_s_no_clique_event_marks_the_node() -> None:
    s = snapshot(
        "DaemonsNotReady",
        nodes=(node("gb-n00", "Ready", clique=""), node("gb-n01")),
        daemon_pods=(daemon("gb-n01", phase="Running"),),
        events=(
            EventInfo(
                "Pod", "w-0", "Warning", "NoNVLinkClique", "node gb-n00 has no NVLink clique (its ...)"
            ),
        ),
    )
    assert "gb-n00 joined without an NVLink clique" in explain(s)[1]


def test_no_status_means_the_controller_has_not_reconciled() -> None:
    s = snapshot("x", conditions=(), status="", observed_generation=None)
    s = replace(s, status="")
    ready, text = explain(s)
    assert not ready
    assert "has no status yet: the controller has not reconciled it" in text


def test_a_status_without_conditions_means_an_outdated_crd() -> None:
    s = replace(snapshot("x"), conditions=(), status="NotReady")
    assert "the installed ComputeDomain CRD is outdated" in explain(s)[1]


def test_a_stale_status_is_pointed_out() -> None:
    s = snapshot("DomainReady", status="True", generation=3, observed_generation=2)
    assert "describes generation 2 while the domain is at generation 3" in explain(s)[1]


def test_a_domain_being_deleted() -> None:
    ready, text = explain(snapshot("DomainReady", status="True", deleting=True))
    assert not ready
    assert "is being deleted" in text


# --- WaitingForNodes -----------------------------------------------------------------------------------


def test_waiting_without_any_claim_asks_for_the_workload() -> None:
    text = explain(snapshot("WaitingForNodes"))[1]
    assert "no pod in namespace team-a uses `resourceClaimTemplateName: train-channel` yet" in text


def test_waiting_on_the_scheduler_quotes_it() -> None:
    s = snapshot(
        "WaitingForNodes",
        claims=(ClaimInfo("team-a", "w-0-channel", pods=("w-0",)),),
        pending_pods=(
            PodInfo("team-a", "w-0", unschedulable="0/40 nodes are available: cannot allocate all claims"),
        ),
    )
    text = explain(s)[1]
    assert "1 workload claim of this domain is not allocated yet" in text
    assert "(pod team-a/w-0: 0/40 nodes are available: cannot allocate all claims)" in text


def test_waiting_with_claims_on_another_domain_s_nodes() -> None:
    s = snapshot(
        "WaitingForNodes",
        claims=(ClaimInfo("team-a", "w-0-channel", node="gb-n03"),),
        node_info={"gb-n03": NodeInfo("gb-n03", CLIQUE, domain=OTHER)},
    )
    assert "Claims are allocated on gb-n03, which already belong to another ComputeDomain" in explain(s)[1]


def test_waiting_with_claims_the_status_does_not_list_yet() -> None:
    s = snapshot("WaitingForNodes", claims=(ClaimInfo("team-a", "w-0-channel", node="gb-n03"),))
    assert "which the status does not list yet" in explain(s)[1]


def test_waiting_for_more_pods() -> None:
    s = snapshot(
        "WaitingForNodes",
        num_nodes=3,
        nodes=(node("gb-n00", "Ready"),),
        claims=(ClaimInfo("team-a", "w-0-channel", node="gb-n00"),),
    )
    assert "waits for 2 more nodes" in explain(s)[1]


# --- DaemonsNotReady: what each node shows ---------------------------------------------------------------


def not_ready(*pods: PodInfo, **fields: object) -> str:
    s = snapshot("DaemonsNotReady", nodes=(node("gb-n00"),), daemon_pods=pods, **fields)
    ready, text = explain(s)
    assert not ready
    assert text.startswith("ComputeDomain team-a/train is not Ready (DaemonsNotReady)")
    return text


def test_a_daemon_pod_not_scheduled_quotes_the_scheduler() -> None:
    text = not_ready(
        PodInfo(OPS, "daemon-x", target="gb-n00", unschedulable="0/40 nodes are available: 1 Too many pods")
    )
    assert (
        "On gb-n00: the IMEX daemon pod cannot be scheduled: 0/40 nodes are available: 1 Too many pods"
        in text
    )


def test_cdi_not_enabled_from_the_daemon_s_log() -> None:
    text = not_ready(
        daemon(
            "gb-n00",
            phase="Running",
            waiting="CrashLoopBackOff",
            restarts=3,
            log_tail="COMPUTE_DOMAIN_UUID is not set: CDI container edits did not apply -- is CDI enabled",
        )
    )
    assert "CDI is not enabled in the container runtime" in text
    assert "enable_cdi = true" in text


def test_cdi_not_applied_from_the_runtime_s_event() -> None:
    pod = daemon("gb-n00", waiting="CreateContainerError")
    event = EventInfo(
        "Pod", pod.name, "Warning", "Failed", "CDI device injection failed: unresolvable CDI devices"
    )
    assert "CDI is not enabled" in not_ready(pod, events=(replace(event, uid=pod.uid),))


def test_driver_too_old_from_the_plugin_s_log() -> None:
    plugin = PodInfo(
        OPS,
        "plugin-x",
        node="gb-n00",
        phase="Running",
        waiting="CrashLoopBackOff",
        log_tail="refusing to start: NVIDIA driver 565.57.01 on node gb-n00 is older than 570.158.01",
    )
    text = not_ready(daemon("gb-n00", waiting="ContainerCreating"), plugin_pods={"gb-n00": plugin})
    assert "NVIDIA driver is older than 570.158.01" in text
    assert "upgrade the GPU driver on this node" in text


def test_a_plugin_pod_failing_otherwise_points_at_its_log() -> None:
    plugin = PodInfo(OPS, "plugin-x", node="gb-n00", waiting="CrashLoopBackOff", log_tail="boom\n")
    text = not_ready(daemon("gb-n00"), plugin_pods={"gb-n00": plugin})
    assert "the kubelet plugin pod plugin-x is CrashLoopBackOff (its last log line: boom)" in text


def test_no_plugin_registered_from_the_kubelet_s_event() -> None:
    pod = daemon("gb-n00", waiting="ContainerCreating")
    event = EventInfo(
        "Pod",
        pod.name,
        "Warning",
        "FailedPrepareDynamicResources",
        "DRA driver x is not registered",
        uid=pod.uid,
    )
    assert "the kubelet has no kubelet plugin for compute-domain.nvidia.com" in not_ready(
        pod, events=(event,)
    )


def test_a_failed_prepare_quotes_the_plugin() -> None:
    pod = daemon("gb-n00", waiting="ContainerCreating")
    event = EventInfo(
        "Pod",
        pod.name,
        "Warning",
        "FailedPrepareDynamicResources",
        "no nvidia-imex under /driver",
        uid=pod.uid,
    )
    assert "the daemon's claim cannot be prepared: no nvidia-imex under /driver" in not_ready(
        pod, events=(event,)
    )


def test_a_crashing_daemon_quotes_its_last_log_line() -> None:
    text = not_ready(
        daemon("gb-n00", waiting="CrashLoopBackOff", restarts=2, log_tail="a\nnvidia-imex exited 1\n")
    )
    assert "keeps exiting (its last log line: nvidia-imex exited 1)" in text


def test_a_running_daemon_that_is_not_ready_fails_its_probe() -> None:
    text = not_ready(daemon("gb-n00", phase="Running"))
    assert "its readiness probe (compute-domain-daemon check, nvidia-imex-ctl -q) fails" in text
    assert f"kubectl -n {OPS} exec daemon-gb-n00 -- compute-domain-daemon check" in text


def test_a_daemon_being_created() -> None:
    assert "the kubelet plugin prepares its claim first" in not_ready(
        daemon("gb-n00", waiting="ContainerCreating")
    )


def test_no_daemon_pod_on_a_node_without_the_domain_label() -> None:
    text = not_ready(node_info={"gb-n00": NodeInfo("gb-n00", CLIQUE)})
    assert "no IMEX daemon pod: the node lacks the domain label" in text


def test_no_daemon_pod_without_a_daemonset() -> None:
    assert "DaemonSet computedomain-daemon-" in not_ready(daemonset_exists=False)


def test_no_daemon_pod_on_a_node_that_is_not_ready() -> None:
    text = not_ready(node_info={"gb-n00": NodeInfo("gb-n00", CLIQUE, domain=UID, ready=False)})
    assert "no IMEX daemon pod: the node is not Ready" in text


def test_nodes_with_the_same_trouble_are_named_together_and_bounded() -> None:
    names = [f"gb-n{i:02d}" for i in range(7)]
    s = snapshot(
        "DaemonsNotReady",
        nodes=tuple(node(n) for n in names),
        daemon_pods=tuple(daemon(n, phase="Running") for n in names),
    )
    text = explain(s)[1]
    assert "On gb-n00, gb-n01, gb-n02, gb-n03, gb-n04 and 2 more: the IMEX daemon runs" in text
    assert text.count("readiness probe") == 1
    assert "exec <its daemon pod> --" in text


def test_waiting_for_a_labelled_node_whose_daemon_cannot_be_scheduled() -> None:
    s = snapshot(
        "WaitingForNodes",
        claims=(ClaimInfo("team-a", "w-0-channel", node="gb-n03"),),
        node_info={"gb-n03": NodeInfo("gb-n03", CLIQUE, domain=UID)},
        daemon_pods=(
            PodInfo(OPS, "d", target="gb-n03", unschedulable="0/3 nodes are available: 1 Too many pods"),
        ),
    )
    text = explain(s)[1]
    assert (
        "On gb-n03: the IMEX daemon pod cannot be scheduled: 0/3 nodes are available: 1 Too many pods" in text
    )
    assert "does not list yet" not in text
