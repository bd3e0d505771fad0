"""Keeps the `nvidia.com/gpu.clique` label of the agent's own Node true, and tells people when it changes.

Only this Node is read or written, and only the one label (server-side apply, the agent's own field
manager). The decisions live in `nodeplan`; this module only carries them out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from computedomain.agent.clique import CliqueResult
from computedomain.agent.nodeplan import (
    APPLY_CONTENT_TYPE,
    EVENT_NAMESPACE,
    LabelAction,
    LabelPlan,
    StateKey,
    owns_label,
    plan_event,
    plan_label,
    render_event,
    render_label_apply,
    state_key,
)
from computedomain.api import names

log = logging.getLogger(__name__)

_API_ERRORS = (ApiException, aiohttp.ClientError, asyncio.TimeoutError)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class NodeLabeler:
    """Brings one Node's clique label in line with a `CliqueResult`, writing only on change."""

    def __init__(
        self, api: client.ApiClient, node_name: str, *, clock: Callable[[], datetime] = _utc_now
    ) -> None:
        self._api = api
        self._core = client.CoreV1Api(api)
        self._node_name = node_name
        self._clock = clock
        self._reported: StateKey | None = None

    async def sync(self, result: CliqueResult) -> bool:
        """Apply the label decision for `result` and post an Event when due; False if the API failed."""
        try:
            node: dict[str, Any] = self._api.sanitize_for_serialization(
                await self._core.read_node(self._node_name)
            )
        except _API_ERRORS as err:
            log.warning("reading node %s failed: %s", self._node_name, _describe(err))
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
            # A plain dict serialises as is; the client's stubs only admit its model class.
            body: Any = render_event(self._node_name, str(metadata.get("uid", "")), spec, self._clock())
            try:
                await self._core.create_namespaced_event(EVENT_NAMESPACE, body)
            except _API_ERRORS as err:
                # Left unrecorded, so the next check tries this Event again.
                log.warning(
                    "posting event %s on node %s failed: %s", spec.reason, self._node_name, _describe(err)
                )
                return True
        self._reported = state_key(result)
        return True

    async def _write_label(self, plan: LabelPlan, live: str | None) -> tuple[bool, str | None]:
        """Carry out `plan`: (False, live) when the API failed, else (True, the label's value now)."""
        if not plan.write:
            if plan.action is LabelAction.LEAVE_FOREIGN:
                log.debug("label %s=%s is not ours; leaving it", names.GPU_CLIQUE_LABEL, live)
            return True, live
        body = render_label_apply(self._node_name, plan.value)
        # The client's stubs omit `_content_type`; without it the client would send a strategic merge patch.
        content_type: dict[str, Any] = {"_content_type": APPLY_CONTENT_TYPE}
        try:
            answer = await self._core.patch_node(
                self._node_name, body, field_manager=names.AGENT_FIELD_MANAGER, force=True, **content_type
            )
        except _API_ERRORS as err:
            log.warning("applying label on node %s failed: %s", self._node_name, _describe(err))
            return False, live
        after: str | None = (answer.metadata.labels or {}).get(names.GPU_CLIQUE_LABEL)
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
    if isinstance(err, ApiException):
        return f"{err.status} {err.reason}"
    return str(err) or type(err).__name__
