"""NodeLabeler's requests on the wire, against a small stand-in for the API server's Node endpoints.

The stand-in records every request and imitates just enough of server-side apply for one label; the
labeler's behaviour against a real API server is covered by the cluster tests.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client

from cdtestbed.connection import connection_of
from computedomain.agent.labeler import NodeLabeler, node_event
from computedomain.agent.nodeplan import EventSpec
from computedomain.api import names
from computedomain.kube import Kube
from computedomain.nvml.clique import CliqueResult, Reason

NODE = "gb200-r1-n03"
# The agent's own namespace, as the chart's DaemonSet passes it (POD_NAMESPACE).
AGENT_NAMESPACE = "gpu-operator"
CLIQUE = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22.32766"
FOUND = CliqueResult(CLIQUE, Reason.CLIQUE_FOUND, f"GPUs 0, 1, 2, 3 in NVLink clique {CLIQUE}", [], 4)
FAILED = CliqueResult(None, Reason.REGISTRATION_FAILED, "GPU 3: failed with status 999", ["GPU 3: failed"])
NO_FABRIC = CliqueResult(None, Reason.NO_FABRIC, "none of the 4 GPUs is in a multi-node NVLink fabric")


@dataclass
class FakeNodeApi:
    """One Node; records PATCH and Event requests."""

    labels: dict[str, str] = field(default_factory=lambda: {"kubernetes.io/hostname": NODE})
    agent_owns: bool = False
    patches: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    event_namespaces: list[str] = field(default_factory=list)
    fail_patch: bool = False
    fail_events: bool = False

    def node(self) -> dict[str, Any]:
        managed = [
            {"manager": "kubelet", "operation": "Update", "fieldsV1": {"f:metadata": {"f:labels": {}}}}
        ]
        if self.agent_owns:
            fields: dict[str, Any] = {"f:metadata": {"f:labels": {f"f:{names.GPU_CLIQUE_LABEL}": {}}}}
            managed.append({"manager": names.AGENT_FIELD_MANAGER, "operation": "Apply", "fieldsV1": fields})
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE,
                "uid": "node-uid-1",
                "labels": dict(self.labels),
                "managedFields": managed,
            },
        }

    async def get(self, request: web.Request) -> web.Response:
        assert request.match_info["name"] == NODE
        return web.json_response(self.node())

    async def patch(self, request: web.Request) -> web.Response:
        body = json.loads(await request.text())
        self.patches.append(
            {"content_type": request.content_type, "query": dict(request.query), "body": body}
        )
        if self.fail_patch:
            return web.json_response({"kind": "Status", "code": 500}, status=500)
        applied = (body.get("metadata") or {}).get("labels") or {}
        if names.GPU_CLIQUE_LABEL in applied:
            self.labels[names.GPU_CLIQUE_LABEL] = applied[names.GPU_CLIQUE_LABEL]
            self.agent_owns = True
        elif self.agent_owns:
            self.labels.pop(names.GPU_CLIQUE_LABEL, None)
            self.agent_owns = False
        return web.json_response(self.node())

    async def post_event(self, request: web.Request) -> web.Response:
        if self.fail_events:
            return web.json_response({"kind": "Status", "code": 403, "message": "forbidden"}, status=403)
        body = json.loads(await request.text())
        self.events.append(body)
        self.event_namespaces.append(request.match_info["namespace"])
        return web.json_response(body, status=201)


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakeNodeApi, Kube]]:
    fake = FakeNodeApi()
    app = web.Application()
    app.router.add_get("/api/v1/nodes/{name}", fake.get)
    app.router.add_patch("/api/v1/nodes/{name}", fake.patch)
    app.router.add_post("/api/v1/namespaces/{namespace}/events", fake.post_event)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
    async with client.ApiClient(configuration) as api_client:
        kube = Kube(connection_of(api_client), field_manager=names.AGENT_FIELD_MANAGER)
        yield fake, kube
        await kube.close()
    await runner.cleanup()


def labeler(kube: Kube) -> NodeLabeler:
    return NodeLabeler(kube, NODE, AGENT_NAMESPACE, clock=lambda: datetime(2025, 3, 1, tzinfo=UTC))


async def test_sets_the_label_by_server_side_apply_then_stays_quiet(
    api: tuple[FakeNodeApi, Kube],
) -> None:
    fake, api_client = api
    agent = labeler(api_client)

    assert await agent.sync(FOUND)
    assert await agent.sync(FOUND)

    assert len(fake.patches) == 1
    patch = fake.patches[0]
    assert patch["content_type"] == "application/apply-patch+yaml"
    assert patch["query"]["fieldManager"] == names.AGENT_FIELD_MANAGER
    # The client spells it `True`; the API server reads any value but "0"/"false" as true.
    assert patch["query"]["force"].lower() == "true"
    assert patch["body"] == {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": NODE, "labels": {names.GPU_CLIQUE_LABEL: CLIQUE}},
    }
    assert fake.labels[names.GPU_CLIQUE_LABEL] == CLIQUE
    assert [e["reason"] for e in fake.events] == ["NVLinkCliqueDetected"]
    event = fake.events[0]
    assert event["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Node",
        "name": NODE,
        "uid": "node-uid-1",
        "namespace": AGENT_NAMESPACE,
    }
    assert event["type"] == "Normal"
    # A Node has no namespace: the Event goes to the agent's own, where its RBAC lets it post.
    assert event["metadata"]["namespace"] == AGENT_NAMESPACE
    assert fake.event_namespaces == [AGENT_NAMESPACE]


async def test_removes_only_its_own_label_and_warns_once(api: tuple[FakeNodeApi, Kube]) -> None:
    fake, api_client = api
    fake.labels[names.GPU_CLIQUE_LABEL] = CLIQUE
    fake.agent_owns = True
    agent = labeler(api_client)

    assert await agent.sync(FOUND)
    assert fake.patches == []
    assert fake.events == []

    assert await agent.sync(FAILED)
    assert await agent.sync(FAILED)

    assert [p["body"] for p in fake.patches] == [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}
    ]
    assert names.GPU_CLIQUE_LABEL not in fake.labels
    assert fake.labels["kubernetes.io/hostname"] == NODE
    assert [(e["type"], e["reason"]) for e in fake.events] == [("Warning", "NVLinkCliqueInvalid")]


async def test_leaves_a_label_it_does_not_own(api: tuple[FakeNodeApi, Kube]) -> None:
    fake, api_client = api
    fake.labels[names.GPU_CLIQUE_LABEL] = CLIQUE

    assert await labeler(api_client).sync(NO_FABRIC)

    assert fake.patches == []
    assert fake.labels[names.GPU_CLIQUE_LABEL] == CLIQUE


async def test_failed_write_reports_false_and_posts_nothing(
    api: tuple[FakeNodeApi, Kube],
) -> None:
    fake, api_client = api
    fake.fail_patch = True

    assert not await labeler(api_client).sync(FOUND)

    assert len(fake.patches) == 1
    assert fake.events == []


async def test_refused_event_is_posted_again_at_the_next_check(api: tuple[FakeNodeApi, Kube]) -> None:
    fake, api_client = api
    fake.fail_events = True
    agent = labeler(api_client)

    assert await agent.sync(FAILED)
    assert fake.events == []

    fake.fail_events = False
    assert await agent.sync(FAILED)
    assert await agent.sync(FAILED)
    assert [e["reason"] for e in fake.events] == ["NVLinkCliqueInvalid"]
    assert fake.patches == []


def test_node_event_names_the_node_and_is_valid_core_v1() -> None:
    now = datetime(2025, 3, 1, 12, 30, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    spec = EventSpec("Warning", "NVLinkCliqueInvalid", "x" * 5000)
    event = node_event("gb200-r1-n03", "3f0c-uid", spec, now, AGENT_NAMESPACE)
    assert event["metadata"]["namespace"] == AGENT_NAMESPACE
    assert event["metadata"]["name"].startswith("gb200-r1-n03.")
    # The API server takes an Event outside `default` only if its reference names the same namespace.
    assert event["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Node",
        "name": "gb200-r1-n03",
        "uid": "3f0c-uid",
        "namespace": AGENT_NAMESPACE,
    }
    assert (event["type"], event["reason"]) == ("Warning", "NVLinkCliqueInvalid")
    assert len(event["message"]) == 1024
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2025-03-01T10:30:05Z"
    assert event["source"] == {"component": names.AGENT_FIELD_MANAGER, "host": "gb200-r1-n03"}
    assert (event["reportingComponent"], event["reportingInstance"]) == (names.AGENT_FIELD_MANAGER, NODE)
    assert event["count"] == 1


def test_node_event_names_differ_in_time_and_fit_an_object_name() -> None:
    spec = EventSpec("Normal", "NVLinkCliqueDetected", "m")
    now = datetime(2025, 3, 1, tzinfo=UTC)
    first = node_event("n", "u", spec, now, AGENT_NAMESPACE)["metadata"]["name"]
    second = node_event("n", "u", spec, now + timedelta(microseconds=1), AGENT_NAMESPACE)["metadata"]["name"]
    assert first != second
    assert len(node_event("a" * 253, "u", spec, now, AGENT_NAMESPACE)["metadata"]["name"]) <= 253
