"""Keeps the `nvidia.com/gpu.clique` label of the agent's own Node true, and tells people when it changes.

Only this Node is read or written, and only the one label (server-side apply, the agent's own field
manager). The decisions live in `nodeplan`; this module only carries them out. Every API failure is
logged and reported as "not synced", so that the check loop retries soon: no failure ends the agent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp

from computedomain.agent import metrics
from computedomain.agent.nodeplan import (
    EventSpec,
    LabelAction,
    LabelPlan,
    StateKey,
    owns_label,
    plan_event,
    plan_label,
    render_label_apply,
    state_key,
)
from computedomain.api import names
from computedomain.kube import NODES, Kube, KubeError, Object
from computedomain.kube.events import Involved, Recorder, render_event
from computedomain.nvml.clique import CliqueResult

log = logging.getLogger(__name__)

# What a request to the API server may fail with: the server's refusal, or no answer at all.
_API_ERRORS = (KubeError, aiohttp.ClientError, OSError, TimeoutError, ValueError)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def node_event(node_name: str, node_uid: str, spec: EventSpec, now: datetime, namespace: str) -> Object:
    """The core/v1 Event about the agent's Node, posted in the agent's own `namespace` (a Node has none).

    The API server accepts an Event whose reference has no namespace only in `default` (or, for
    Events with an eventTime, `kube-system`); one in any other namespace must name that namespace in
    its reference. So the Node's reference carries the agent's namespace: the kind, name and uid still
    identify the Node, and `kubectl events -n <namespace> --for node/<name>` finds them.
    """
    return render_event(
        Involved(api_version="v1", kind="Node", name=node_name, uid=node_uid, namespace=namespace),
        event_type=spec.type,
        reason=spec.reason,
        message=spec.message,
        component=names.AGENT_FIELD_MANAGER,
        now=now,
        namespace=namespace,
        host=node_name,
    )


class NodeLabeler:
    """Brings one Node's clique label in line with a `CliqueResult`, writing only on change.

    `kube` carries the agent's field manager; Events go to `namespace`, the agent's own.
    """

    def __init__(
        self, kube: Kube, node_name: str, namespace: str, *, clock: Callable[[], datetime] = _utc_now
    ) -> None:
        self._kube = kube
        self._node_name = node_name
        self._namespace = namespace
        self._clock = clock
        self._reported: StateKey | None = None
        # One labeler per agent process: a state the node comes back to counts on its earlier Event.
        self._events = Recorder()

    async def sync(self, result: CliqueResult) -> bool:
        """Apply the label decision for `result` and post an Event when due; False if the API failed."""
        try:
            node = await self._kube.get(NODES, self._node_name)
        except _API_ERRORS as err:
            log.warning("reading node %s failed: %s", self._node_name, _describe(err))
            return False
        if node is None:
            log.warning("node %s does not exist", self._node_name)
            return False
        metadata = node.get("metadata") or {}
        live = (metadata.get("labels") or {}).get(names.GPU_CLIQUE_LABEL)
        owned = owns_label(
            metadata.get("managedFields") or [], names.AGENT_FIELD_MANAGER, names.GPU_CLIQUE_LABEL
        )
        plan = plan_label(live, owned, result.clique_id)
        written, after = await self._write_label(plan, live)
        if not written:
            return False
        # What the server answered, not what was planned: letting go of a label that another field
        # manager also set leaves it in place.
        spec = plan_event(self._reported, result, after != live)
        if spec is not None:
            event = node_event(
                self._node_name, str(metadata.get("uid", "")), spec, self._clock(), self._namespace
            )
            if not await self._events.record(self._kube, event):
                # Left unrecorded, so the next check tries this Event again.
                return True
        self._reported = state_key(result)
        return True

    async def _write_label(self, plan: LabelPlan, live: str | None) -> tuple[bool, str | None]:
        """Carry out `plan`: (False, live) when the API failed, else (True, the label's value now)."""
        if not plan.write:
            if plan.action is LabelAction.LEAVE_FOREIGN:
                log.debug("label %s=%s is not ours; leaving it", names.GPU_CLIQUE_LABEL, live)
            return True, live
        try:
            answer = await self._kube.apply(NODES, render_label_apply(self._node_name, plan.value))
        except _API_ERRORS as err:
            log.warning("applying label on node %s failed: %s", self._node_name, _describe(err))
            metrics.LABEL_WRITES.labels(result="error").inc()
            return False, live
        metrics.LABEL_WRITES.labels(result="ok").inc()
        after: str | None = ((answer.get("metadata") or {}).get("labels") or {}).get(names.GPU_CLIQUE_LABEL)
        if plan.action is LabelAction.REMOVE and after is not None:
            log.info(
                "node %s label %s=%s stays: another field manager set it too; the agent no longer holds it",
                self._node_name,
                names.GPU_CLIQUE_LABEL,
                after,
            )
        else:
            log.info(
                "node %s label %s: %s -> %s",
                self._node_name,
                names.GPU_CLIQUE_LABEL,
                live or "(none)",
                after or "(none)",
            )
        return True, after


def _describe(err: BaseException) -> str:
    if isinstance(err, KubeError):
        return f"{err.status} {err}"
    return str(err) or type(err).__name__
