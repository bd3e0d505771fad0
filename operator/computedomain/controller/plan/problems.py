"""What keeps a domain from working, found while planning or applying, in plain words."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ProblemReason = Literal[
    "NameConflict", "LabelConflict", "InvalidSpec", "ResourceAPIUnavailable", "ReconcileError", "CliqueFull"
]


@dataclass(frozen=True)
class Problem:
    """Something the reconcile found that keeps the domain from working, in plain words."""

    reason: ProblemReason
    message: str
