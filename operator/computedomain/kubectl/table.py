"""`kubectl computedomain status`: per node the clique, index, daemon pod and its state, and the channel
claims, as a table or as JSON (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from computedomain.kubectl.snapshot import Snapshot

_HEADERS = ("NODE", "CLIQUE", "INDEX", "DAEMON POD", "DAEMON", "CLAIMS")


@dataclass(frozen=True)
class Row:
    """What one node holds of the domain."""

    node: str
    clique: str
    index: int | None
    daemon_pod: str
    daemon_state: str
    claims: tuple[str, ...]


def rows(s: Snapshot) -> list[Row]:
    """One row per node that the status, a clique object, a daemon pod or a claim names, sorted."""
    entries = {n.name: n for n in s.nodes}
    slots = {slot.node: slot for slot in s.slots}
    pods = {p.where: p for p in s.daemon_pods if p.where and not p.deleting}
    claims: dict[str, list[str]] = {}
    for claim in s.claims:
        if claim.node:
            claims.setdefault(claim.node, []).append(claim.name)
    found = []
    for node in sorted({*entries, *slots, *pods, *claims}):
        entry, slot, pod = entries.get(node), slots.get(node), pods.get(node)
        info = s.node_info.get(node)
        clique = entry.clique if entry else slot.clique if slot else info.clique if info else ""
        index = entry.index if entry else slot.index if slot else None
        found.append(
            Row(
                node=node,
                clique=clique,
                index=index,
                daemon_pod=pod.name if pod else "",
                daemon_state=pod.state if pod else "",
                claims=tuple(sorted(claims.get(node, []))),
            )
        )
    return found


def render_table(s: Snapshot) -> str:
    """A heading line (the domain's state and Ready condition), then the per-node table."""
    ready = s.condition("Ready")
    joined = len(s.nodes)
    ready_nodes = sum(1 for n in s.nodes if n.status == "Ready")
    heading = (
        f"ComputeDomain {s.key}: {s.status or 'no status'}, {ready_nodes}/{max(s.num_nodes, joined)} "
        f"nodes ready, {len({n.clique for n in s.nodes if n.clique})} cliques"
    )
    if ready is not None:
        heading += f"; {ready.type}={ready.status} {ready.reason}: {ready.message}"
    unallocated = sum(1 for c in s.claims if not c.node)
    lines = [heading]
    if unallocated:
        lines.append(f"{unallocated} channel claim(s) not allocated yet")
    table = [
        (
            r.node,
            r.clique or "-",
            "-" if r.index is None else str(r.index),
            r.daemon_pod or "-",
            r.daemon_state or "-",
            ",".join(r.claims) or "-",
        )
        for r in rows(s)
    ]
    if not table:
        lines.append("no node has joined")
        return "\n".join(lines) + "\n"
    widths = [max(len(cell) for cell in column) for column in zip(_HEADERS, *table, strict=False)]
    for line in (_HEADERS, *table):
        lines.append("   ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    return "\n".join(lines) + "\n"


def render_json(s: Snapshot) -> dict[str, Any]:
    """The same facts as the table, as a JSON document."""
    ready = s.condition("Ready")
    return {
        "namespace": s.namespace,
        "name": s.name,
        "uid": s.uid,
        "status": s.status,
        "numNodes": s.num_nodes,
        "ready": None
        if ready is None
        else {"status": ready.status, "reason": ready.reason, "message": ready.message},
        "unallocatedClaims": sorted(c.name for c in s.claims if not c.node),
        "nodes": [
            {
                "name": r.node,
                "cliqueID": r.clique,
                "index": r.index,
                "daemonPod": r.daemon_pod,
                "daemonState": r.daemon_state,
                "claims": list(r.claims),
            }
            for r in rows(s)
        ],
    }
