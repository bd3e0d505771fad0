"""What the agent writes to its Node and which Event it posts, decided without touching the API (pure).

The agent owns exactly one field of its Node: the `nvidia.com/gpu.clique` label, through server-side
apply under its own field manager. Applying a partial Node without the label drops the agent's claim and
so removes the label, without touching any other field.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from computedomain.api import names
from computedomain.nvml.clique import CliqueResult, Reason


class LabelAction(enum.Enum):
    """What to do with the clique label."""

    KEEP = "keep"
    SET = "set"
    REMOVE = "remove"
    # Present, not ours, and no clique: the agent removes nothing it does not own.
    LEAVE_FOREIGN = "leaveForeign"


@dataclass(frozen=True)
class LabelPlan:
    """The label action, the value to apply for SET, and whether the live value changes."""

    action: LabelAction
    value: str | None

    @property
    def write(self) -> bool:
        """True when the plan needs a request to the API server."""
        return self.action in (LabelAction.SET, LabelAction.REMOVE)


@dataclass(frozen=True)
class EventSpec:
    """A core/v1 Event to post on the Node."""

    type: str
    reason: str
    message: str


# (clique, reason) of the last state reported; an Event goes out only when it changes.
StateKey = tuple[str | None, str]


def state_key(result: CliqueResult) -> StateKey:
    """The part of a result that, when it changes, deserves an Event."""
    return (result.clique_id, str(result.reason))


def owns_label(managed_fields: Sequence[Mapping[str, Any]], manager: str, key: str) -> bool:
    """True when `manager` holds label `key` through server-side apply, per the Node's managedFields."""
    for entry in managed_fields:
        if entry.get("manager") != manager or entry.get("operation") != "Apply":
            continue
        fields = entry.get("fieldsV1") or {}
        labels = (fields.get("f:metadata") or {}).get("f:labels") or {}
        if f"f:{key}" in labels:
            return True
    return False


def plan_label(live: str | None, owned: bool, desired: str | None) -> LabelPlan:
    """Decide the label write. No write when the live node already shows the desired state.

    A desired value that is already there but set by someone else is applied once anyway: holding the
    field is what lets the agent remove it later when the clique goes away.
    """
    if desired is not None:
        if live == desired and owned:
            return LabelPlan(LabelAction.KEEP, desired)
        return LabelPlan(LabelAction.SET, desired)
    if owned:
        return LabelPlan(LabelAction.REMOVE, None)
    if live is not None:
        return LabelPlan(LabelAction.LEAVE_FOREIGN, live)
    return LabelPlan(LabelAction.KEEP, None)


def label_changes(live: str | None, plan: LabelPlan) -> bool:
    """True when carrying out `plan` changes the label's visible value."""
    if plan.action is LabelAction.SET:
        return live != plan.value
    return plan.action is LabelAction.REMOVE and live is not None


def render_label_apply(node_name: str, value: str | None) -> dict[str, Any]:
    """The partial Node the agent applies: its one label, or no labels at all to let go of it."""
    metadata: dict[str, Any] = {"name": node_name}
    if value is not None:
        metadata["labels"] = {names.GPU_CLIQUE_LABEL: value}
    return {"apiVersion": "v1", "kind": "Node", "metadata": metadata}


def _problem_text(result: CliqueResult) -> str:
    extra = [p for p in result.problems if p != result.message]
    return "; ".join([result.message, *extra])


def plan_event(previous: StateKey | None, result: CliqueResult, changed_label: bool) -> EventSpec | None:
    """The Event for this check, or None. Never two Events in a row for the same state.

    After a restart (`previous` None) a healthy, unchanged node stays quiet; problems and label
    changes are reported.
    """
    if previous == state_key(result):
        return None
    if previous is None and not (result.is_problem or changed_label):
        return None
    reason = result.reason
    if reason is Reason.CLIQUE_FOUND:
        return EventSpec("Normal", "NVLinkCliqueDetected", result.message)
    if result.is_problem:
        return EventSpec("Warning", "NVLinkCliqueInvalid", f"{reason}: {_problem_text(result)}")
    if reason is Reason.REGISTRATION_IN_PROGRESS:
        return EventSpec("Normal", "NVLinkRegistrationInProgress", result.message)
    if changed_label:
        return EventSpec("Normal", "NVLinkCliqueRemoved", f"{reason}: {result.message}")
    return None
