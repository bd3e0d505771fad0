"""The one Event renderer and writer: names, namespaces and references for namespaced and cluster
objects; a failed post is logged, never raised."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from computedomain.kube import KubeError
from computedomain.kube.events import MESSAGE_LIMIT, Involved, Recorder, render_event

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
NODE = Involved(api_version="v1", kind="Node", name="gb200-0", uid="u-node")
DOMAIN = Involved.of(
    {
        "apiVersion": "resource.nvidia.com/v1beta1",
        "kind": "ComputeDomain",
        "metadata": {"name": "train", "namespace": "team-a", "uid": "u-1", "resourceVersion": "7"},
    }
)


def test_an_event_about_a_namespaced_object_lives_beside_it() -> None:
    event = render_event(DOMAIN, event_type="Warning", reason="R", message="m", component="c", now=NOW)
    assert event["metadata"]["namespace"] == "team-a"
    assert event["involvedObject"] == {
        "apiVersion": "resource.nvidia.com/v1beta1",
        "kind": "ComputeDomain",
        "name": "train",
        "uid": "u-1",
        "namespace": "team-a",
        "resourceVersion": "7",
    }
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2026-01-02T03:04:05Z"


def test_an_event_about_a_node_goes_to_the_given_namespace() -> None:
    event = render_event(
        NODE,
        event_type="Normal",
        reason="R",
        message="m",
        component="agent",
        now=NOW,
        namespace="computedomain-system",
        host="gb200-0",
    )
    assert event["metadata"]["namespace"] == "computedomain-system"
    assert event["involvedObject"]["namespace"] == "computedomain-system"
    assert event["source"] == {"component": "agent", "host": "gb200-0"}
    assert event["reportingInstance"] == "gb200-0"


def test_names_and_messages_stay_within_the_api_servers_limits() -> None:
    long = Involved(api_version="v1", kind="Node", name="n" * 253, uid="u")
    event = render_event(long, event_type="Normal", reason="R", message="x" * 5000, component="c", now=NOW)
    assert len(event["metadata"]["name"]) <= 253
    assert len(event["message"]) == MESSAGE_LIMIT


class _Unreachable:
    """A client whose every write fails as a restarting API server makes it fail."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def create(self, *_: Any) -> Any:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("Response payload is not completed"),
        TimeoutError(),
        KubeError(503, "unavailable"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_an_event_that_cannot_be_posted_never_fails_the_work(error: BaseException) -> None:
    event = {"reason": "DomainReady", "involvedObject": {"name": "cd"}}
    assert await Recorder().record(_Unreachable(error), event) is False  # type: ignore[arg-type]
