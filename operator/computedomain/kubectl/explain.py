"""`kubectl computedomain why`: one paragraph that says why a domain is not Ready and what to do.

A pure function of a `Snapshot`. It starts from the controller's Ready condition (the most basic
obstacle is the one the controller reports) and, where the reason is about nodes or daemons, walks
down to what each node shows: its daemon pod, the scheduler's message, the kubelet's and the kubelet
plugin's Events, the crashed container's last log lines, the node's clique label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from computedomain.api import names
from computedomain.kubectl.snapshot import EventInfo, NodeInfo, PodInfo, Snapshot

# Reasons the kubelet plugin gives on workload pods (their one home is `api.names`).
NO_CLIQUE = names.PLUGIN_NO_CLIQUE
# The kubelet's reason when a claim's prepare failed; its message is the plugin's answer.
FAILED_PREPARE = "FailedPrepareDynamicResources"
# The kubelet plugin's refusal to start below this driver (`plugin/nvidiadriver.py`).
MINIMUM_DRIVER = names.MINIMUM_DRIVER_VERSION
# GPU products whose trays sit on a multi-node NVLink fabric: without a clique label they are broken.
FABRIC_PRODUCTS = ("GB200", "GB300")
_NODES_SHOWN = 5
# Stands for the daemon pod's name in a finding, so that nodes with the same trouble share one sentence.
_POD = "\x00pod\x00"
_MESSAGE_CHARS = 300


@dataclass(frozen=True)
class Reason:
    """What a condition reason of the controller means and what to do about it."""

    meaning: str
    fix: str


# Every reason `controller/render/status.py` and `controller/plan/problems.py` can set on Ready=False.
CONTROLLER_REASONS: dict[str, Reason] = {
    "InvalidSpec": Reason(
        "its spec does not validate against the operator's API model",
        "fix the manifest where the message says and apply it again",
    ),
    "ResourceAPIUnavailable": Reason(
        "the API server serves no resource.k8s.io version (v1, v1beta2 or v1beta1), so no claim "
        "template can exist",
        "enable Dynamic Resource Allocation on the cluster (Kubernetes 1.32 or later with the "
        "resource.k8s.io API served), then restart the controller",
    ),
    "NameConflict": Reason(
        "a ResourceClaimTemplate with the name in spec.channel.resourceClaimTemplate.name already exists "
        "and is not this domain's (it is left untouched)",
        "choose another spec.channel.resourceClaimTemplate.name, or delete that template; the "
        "controller looks again every 30 s",
    ),
    "ReconcileError": Reason(
        "the API server refused one of the controller's writes",
        "read the refusal in the message (usually the controller's RBAC or an admission policy) and "
        "lift it; the controller retries with backoff and the condition clears by itself",
    ),
    "LabelConflict": Reason(
        "nodes where this domain's pods were placed already belong to another ComputeDomain (a node "
        "serves one domain at a time)",
        "keep the two domains' pods on different nodes (node affinity or separate node pools), or "
        "end the other domain's pods on those nodes",
    ),
    "CliqueFull": Reason(
        "more of its nodes joined one NVLink clique than an IMEX domain may hold (the chart's "
        f"daemon.maxNodesPerIMEXDomain, {names.DEFAULT_MAX_NODES_PER_CLIQUE} by default): the nodes at "
        "that clique's limit got no IMEX slot",
        "run fewer of the domain's pods per NVLink clique (spread them over racks), or raise "
        "daemon.maxNodesPerIMEXDomain where the hardware allows",
    ),
    # Clique mode (`imex.mode=clique`): each domain takes an IMEX channel from its cliques' pool.
    "ChannelPoolExhausted": Reason(
        "no IMEX channel of an NVLink clique it uses is free (the other domains there hold them all)",
        "wait: its pods go on in the order they came once a channel frees; end other domains' jobs in "
        "that clique to free one sooner",
    ),
    "AllChannelsRefused": Reason(
        "allocationMode: All would hand its pods every IMEX channel, the other domains' of its cliques "
        "too, which clique mode keeps apart",
        "recreate the domain with allocationMode: Single",
    ),
    "ReleasingChannels": Reason(
        "it is being deleted, and its pods in some cliques still hold their claims: the domain keeps its "
        "IMEX channels there until those claims are released, so no new domain is given a channel a "
        "running process still uses",
        "let its jobs finish (or delete their pods); the deletion completes by itself",
    ),
    "ImexModeMismatch": Reason(
        "it was created under another imex.mode than the controller now runs with",
        "delete the domain (or let its jobs finish) before switching imex.mode, or switch back",
    ),
    "WaitingForNodes": Reason(
        "fewer nodes joined than spec.numNodes",
        "nodes join as the domain's workload pods are scheduled with their channel claims",
    ),
    "DaemonsNotReady": Reason(
        "the IMEX daemons of some joined nodes are not Ready",
        "see what each node shows",
    ),
}


def explain(snapshot: Snapshot) -> tuple[bool, str]:
    """(whether the domain is Ready, one paragraph saying why or why not and what to do)."""
    s = snapshot
    if s.deleting:
        return False, (
            f"ComputeDomain {s.key} is being deleted: the controller removes its DaemonSet, claim "
            "templates, clique objects and node labels, then its finalizer. If it stays, the "
            f"controller is not running: kubectl -n {s.operator_namespace} get pods -l "
            "app.kubernetes.io/component=controller."
        )
    ready = s.condition("Ready")
    if ready is None:
        return False, _unreconciled(s)
    stale = _stale(s)
    if ready.status == "True":
        text = f"ComputeDomain {s.key} is Ready: {_shorten(ready.message)}."
        notes = _clique_notes(s)
        if notes:
            text += " However, " + " ".join(notes)
        return True, text + stale
    reason = CONTROLLER_REASONS.get(ready.reason)
    head = f"ComputeDomain {s.key} is not Ready ({ready.reason}): {_shorten(ready.message)}."
    if reason is None:
        return (
            False,
            head + " The controller gave a reason this tool does not know; read the message." + stale,
        )
    if ready.reason == "WaitingForNodes":
        return False, head + " " + " ".join(_waiting_for_nodes(s)) + stale
    if ready.reason == "DaemonsNotReady":
        found = _daemon_findings(s)
        body = " ".join(found) if found else "Nothing on the nodes tells why yet; look again in a moment."
        return False, head + " " + body + stale
    text = f"{head} That means {reason.meaning}. What to do: {reason.fix}."
    children = s.condition("ChildrenReady")
    if ready.reason == "LabelConflict":
        text += _conflict_owners(s)
    if children is not None and children.status == "False" and children.reason != ready.reason:
        text += f" ChildrenReady is also False ({children.reason}): {_shorten(children.message)}."
    return False, text + stale


def _unreconciled(s: Snapshot) -> str:
    controller = (
        f"kubectl -n {s.operator_namespace} get pods -l app.kubernetes.io/component=controller "
        "and read the leader's log"
    )
    if s.status:
        # NVIDIA's CRD has no conditions: an older CRD prunes every field the controller adds.
        return (
            f"ComputeDomain {s.key} shows status {s.status} but no conditions: the installed "
            "ComputeDomain CRD is outdated and drops the fields that explain the status (or the "
            "controller running is NVIDIA's). Apply the CRD of this operator's chart "
            f"(docs/install.md, Migrating) and check the controller: {controller}."
        )
    return (
        f"ComputeDomain {s.key} has no status yet: the controller has not reconciled it. Check that "
        f"the controller runs and leads: {controller}."
    )


def _stale(s: Snapshot) -> str:
    if s.observed_generation is None or s.observed_generation >= s.generation:
        return ""
    return (
        f" The status describes generation {s.observed_generation} while the domain is at generation "
        f"{s.generation}: the controller has not caught up (check that it runs)."
    )


# --- WaitingForNodes ---------------------------------------------------------------------------------


def _waiting_for_nodes(s: Snapshot) -> list[str]:
    joined = {n.name for n in s.nodes}
    allocated = sorted({c.node for c in s.claims if c.node})
    unallocated = [c for c in s.claims if not c.node]
    found: list[str] = []
    if not s.claims:
        found.append(
            f"No workload claim of this domain exists: no pod in namespace {s.namespace} uses "
            f"`resourceClaimTemplateName: {s.template}` yet. What to do: start the workload whose "
            f"{s.num_nodes} pods claim that template (one per node), or lower spec.numNodes."
        )
    if unallocated:
        found.append(_unscheduled_workload(s, len(unallocated)))
    not_joined = [node for node in allocated if node not in joined]
    # A labelled node joins once its daemon pod runs: what keeps the pod from running is the news.
    starting = [n for n in not_joined if _labelled(s, n) or any(p.where == n for p in s.daemon_pods)]
    unlabelled = [n for n in not_joined if n not in starting]
    if unlabelled:
        found.append(_allocated_not_joined(s, unlabelled))
    found += _daemon_findings(s, starting)
    if not found:
        found.append(
            f"{len(allocated)} of the domain's claims are allocated; the domain waits for "
            f"{max(s.num_nodes - len(joined), 0)} more nodes, which join as more of its pods are scheduled."
        )
    return found


def _unscheduled_workload(s: Snapshot, count: int) -> str:
    text = (
        f"{_count(count, 'workload claim')} of this domain {'is' if count == 1 else 'are'} not allocated yet"
    )
    pending = [p for p in s.pending_pods if p.unschedulable]
    if pending:
        first = pending[0]
        text += (
            f"; the scheduler cannot place {_count(len(pending), 'pod')} "
            f"(pod {first.namespace}/{first.name}: {_shorten(first.unschedulable)})"
        )
        text += (
            ". What to do: each node offers one IMEX channel (its ResourceSlice's channel-0) and serves one "
            "domain at a time, so the pods need as many free GPU nodes with the kubelet plugin running "
            "(kubectl get resourceslices --field-selector spec.driver=compute-domain.nvidia.com); free "
            "or add such nodes, or relax the pods' node constraints."
        )
    else:
        text += ": their pods wait for the scheduler (kubectl describe pod shows its message)."
    return text


def _allocated_not_joined(s: Snapshot, nodes: Sequence[str]) -> str:
    foreign = [
        n for n in nodes if (info := s.node_info.get(n)) is not None and info.domain not in ("", s.uid)
    ]
    if foreign:
        return (
            f"Claims are allocated on {_some(foreign)}, which already belong to another ComputeDomain, "
            "so they cannot join. What to do: keep the two domains' pods on different nodes."
        )
    return (
        f"Claims are allocated on {_some(nodes)}, which the status does not list yet: the controller "
        "labels such nodes within seconds; if they stay out, check that the controller runs."
    )


def _conflict_owners(s: Snapshot) -> str:
    foreign = sorted(
        f"{info.name} (domain UID {info.domain})"
        for info in s.node_info.values()
        if info.domain not in ("", s.uid) and any(c.node == info.name for c in s.claims)
    )
    return f" Nodes held by another domain: {_some(foreign)}." if foreign else ""


# --- Daemons and nodes -------------------------------------------------------------------------------


def _labelled(s: Snapshot, node: str) -> bool:
    info = s.node_info.get(node)
    return info is not None and info.domain == s.uid


def _daemon_findings(s: Snapshot, starting: Sequence[str] = ()) -> list[str]:
    """One sentence per kind of trouble, naming the nodes that show it, with what to do: of the joined
    nodes whose daemon is not Ready, and of `starting`, nodes that have not joined yet."""
    troubles: dict[str, list[str]] = {}
    order: list[str] = []
    for node in sorted({*(n.name for n in s.nodes if n.status != "Ready"), *starting}):
        for finding in _node_trouble(s, node):
            if finding not in troubles:
                troubles[finding] = []
                order.append(finding)
            troubles[finding].append(node)
    sentences = []
    for finding in order:
        nodes = troubles[finding]
        pod = next((p.name for p in s.daemon_pods if p.where == nodes[0] and not p.deleting), "")
        # One node: name its pod; several: each node's own daemon pod.
        named = pod if len(nodes) == 1 and pod else "<its daemon pod>"
        sentences.append(f"On {_some(nodes)}: {finding.replace(_POD, named)}")
    return sentences + _clique_notes(s)


def _node_trouble(s: Snapshot, node: str) -> list[str]:
    pod = next((p for p in s.daemon_pods if p.where == node and not p.deleting), None)
    plugin = _plugin_problem(s, node)
    if pod is None:
        return [_no_daemon_pod(s, node), *([plugin] if plugin else [])]
    events = [e for e in s.events if e.kind == "Pod" and (e.uid == pod.uid or e.name == pod.name)]
    if pod.unschedulable:
        return [
            f"the IMEX daemon pod cannot be scheduled: {_shorten(pod.unschedulable)}. What to do: free "
            "what the scheduler names on that node (pods, CPU or memory for the daemon's requests, the "
            "node's daemon-0 device), or lower the chart's daemon resource requests."
        ]
    if _cdi_disabled(pod, events):
        return [
            "the IMEX daemon gets none of its claim's CDI edits (COMPUTE_DOMAIN_UUID is not set: CDI is "
            "not enabled in the container runtime, or the runtime does not read the plugin's CDI "
            "folder). What to do: enable CDI in the runtime (containerd 1.7: enable_cdi = true and "
            "cdi_spec_dirs naming the chart's kubeletPlugin.cdiRoot) and restart it."
        ]
    failed = [e for e in events if e.reason == FAILED_PREPARE]
    if plugin:
        return [plugin]
    if failed:
        message = failed[-1].message
        if "not registered" in message:
            return [
                f"the kubelet has no kubelet plugin for {names.DRIVER} on this node ({_shorten(message)}). "
                f"What to do: check the plugin pod there: kubectl -n {s.operator_namespace} get pods -l "
                "app.kubernetes.io/component=kubelet-plugin -o wide, and its log."
            ]
        return [
            f"the daemon's claim cannot be prepared: {_shorten(message)}. What to do: give the node "
            "what the message names (the IMEX binaries or the NVIDIA driver under the driver root)."
        ]
    if pod.waiting in ("CrashLoopBackOff", "Error") or (pod.restarts and not pod.ready):
        last = _last_line(pod.log_tail)
        said = f" (its last log line: {_shorten(last)})" if last else ""
        return [
            f"the IMEX daemon container keeps exiting{said}. What to do: kubectl -n {pod.namespace} logs "
            f"{_POD} --previous."
        ]
    if pod.phase == "Running":
        return [
            "the IMEX daemon runs but its readiness probe (compute-domain-daemon check, nvidia-imex-ctl -q) "
            "fails: nvidia-imex has not connected to its peers yet. What to do: kubectl -n "
            f"{pod.namespace} exec {_POD} -- compute-domain-daemon check, and its log; a host "
            "nvidia-imex service on the node must be disabled."
        ]
    if pod.waiting == "ContainerCreating" or pod.phase == "Pending":
        return [
            "the IMEX daemon pod is being created: the kubelet plugin prepares its claim first. If it "
            f"stays, kubectl -n {pod.namespace} describe pod {_POD}."
        ]
    return [f"the IMEX daemon pod is {pod.state}."]


def _no_daemon_pod(s: Snapshot, node: str) -> str:
    if not s.daemonset_exists:
        return (
            f"no IMEX daemon pod, and the DaemonSet {names.daemon_name(s.uid)} is missing in namespace "
            f"{s.operator_namespace}: ChildrenReady tells why."
        )
    info = s.node_info.get(node)
    if info is not None and info.domain != s.uid:
        owner = f"belongs to domain UID {info.domain}" if info.domain else "lacks the domain label"
        return (
            f"no IMEX daemon pod: the node {owner} ({names.DOMAIN_LABEL}), which the DaemonSet selects "
            "nodes by; the controller labels a node once it sees the claim allocated there."
        )
    if info is not None and not info.ready:
        return "no IMEX daemon pod: the node is not Ready."
    return (
        "no IMEX daemon pod yet, though the node carries the domain label. If it stays, kubectl -n "
        f"{s.operator_namespace} describe daemonset {names.daemon_name(s.uid)}."
    )


def _plugin_problem(s: Snapshot, node: str) -> str | None:
    plugin = s.plugin_pods.get(node)
    if plugin is None or plugin.ready:
        return None
    if "older than" in plugin.log_tail:
        return (
            f"the kubelet plugin refuses to start because the NVIDIA driver is older than {MINIMUM_DRIVER} "
            f"({_shorten(_last_line(plugin.log_tail))}). What to do: upgrade the GPU driver on this node to "
            f"{MINIMUM_DRIVER} or later."
        )
    last = _last_line(plugin.log_tail)
    said = f" (its last log line: {_shorten(last)})" if last else ""
    return (
        f"the kubelet plugin pod {plugin.name} is {plugin.state}{said}. What to do: kubectl -n "
        f"{plugin.namespace} logs {plugin.name} --previous."
    )


def _cdi_disabled(pod: PodInfo, events: Sequence[EventInfo]) -> bool:
    if "is CDI enabled" in pod.log_tail or "COMPUTE_DOMAIN_UUID is not set" in pod.log_tail:
        return True
    return any("CDI device injection failed" in e.message or "unresolvable CDI" in e.message for e in events)


def _clique_notes(s: Snapshot) -> list[str]:
    """Nodes of the domain that run without an NVLink clique where they should have one."""
    warned = {_node_of_warning(e) for e in s.events if e.reason == NO_CLIQUE}
    missing = []
    for entry in s.nodes:
        if entry.clique:
            continue
        info = s.node_info.get(entry.name) or NodeInfo(entry.name)
        if entry.name in warned or any(p in info.product for p in FABRIC_PRODUCTS):
            missing.append(entry.name)
    if not missing:
        return []
    said = [
        e.message
        for e in s.events
        if e.kind == "Node" and e.name in missing and e.type == "Warning" and e.message
    ]
    agent = f" The node agent says: {_shorten(said[-1])}." if said else ""
    return [
        f"{_some(missing)} joined without an NVLink clique (no {names.GPU_CLIQUE_LABEL} label), so "
        f"its pods get no IMEX channel and cannot share GPU memory with other nodes.{agent} What to do: "
        "check the node agent's pod on that node (its log, and computedomain-agent --once --no-kube "
        "there prints the GPUs' fabric state, which must be registered); once the label is back, "
        "delete the workload pod and the domain's daemon pod on that node so both start with the "
        "clique."
    ]


def _node_of_warning(event: EventInfo) -> str:
    # The plugin's message starts "node <name> has no NVLink clique".
    words = event.message.split()
    return words[1] if len(words) > 1 and words[0] == "node" else ""


# --- Words -------------------------------------------------------------------------------------------


def _some(items: Sequence[str]) -> str:
    if len(items) <= _NODES_SHOWN:
        return ", ".join(items)
    return f"{', '.join(items[:_NODES_SHOWN])} and {len(items) - _NODES_SHOWN} more"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _shorten(message: str) -> str:
    message = " ".join(message.split()).rstrip(".")
    return message if len(message) <= _MESSAGE_CHARS else message[: _MESSAGE_CHARS - 3] + "..."


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
