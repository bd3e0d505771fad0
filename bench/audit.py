"""Count the API requests one client made, from the API server's audit log."""

from __future__ import annotations

import datetime
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclass(frozen=True)
class Request:
    """One request as the audit log saw it."""

    verb: str
    resource: str
    subresource: str
    received: float


def _timestamp(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def requests_by(audit_log: Path, user: str, since: float = 0.0, until: float = float("inf")) -> list[Request]:
    """Requests by `user` received in [since, until) (epoch seconds), each counted once."""
    seen: dict[str, Request] = {}
    with audit_log.open() as lines:
        for line in lines:
            event = json.loads(line)
            if event.get("user", {}).get("username") != user or event["auditID"] in seen:
                continue
            received = _timestamp(event["requestReceivedTimestamp"])
            if not since <= received < until:
                continue
            ref = event.get("objectRef") or {}
            seen[event["auditID"]] = Request(
                event["verb"], ref.get("resource", ""), ref.get("subresource", ""), received
            )
    return list(seen.values())


def writes(requests: list[Request]) -> list[Request]:
    """Only the requests that change something."""
    return [r for r in requests if r.verb in WRITE_VERBS]


def summary(requests: list[Request]) -> str:
    """`verb resource[/sub]: count` lines, most frequent first."""
    counts = Counter(f"{r.verb} {r.resource}{'/' + r.subresource if r.subresource else ''}" for r in requests)
    return ", ".join(f"{key}: {n}" for key, n in counts.most_common()) or "none"
