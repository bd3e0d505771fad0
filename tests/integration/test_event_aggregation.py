"""The Event recorder against a real API server: repeats are one object whose count and last time
move (merge patches the server accepts), an Event deleted meanwhile (as Events expire) is created
again and counted on, and an object's many similar Events are folded into one combined Event."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from cdtestbed.connection import connection_of
from computedomain.kube import EVENTS, Kube, Object
from computedomain.kube.events import COMBINED_PREFIX, SIMILAR_LIMIT, Involved, Recorder, render_event

pytestmark = pytest.mark.cluster

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
COMPONENT = "event-aggregation-test"


@pytest_asyncio.fixture
async def writes() -> list[str]:
    """The verbs of the writes `kube` made, in order."""
    return []


@pytest_asyncio.fixture
async def kube(api: client.ApiClient, writes: list[str]) -> AsyncIterator[Kube]:
    kube = Kube(connection_of(api), field_manager=COMPONENT, on_write=writes.append)
    yield kube
    await kube.close()


@pytest_asyncio.fixture
async def subject(api: client.ApiClient, namespace: str) -> Involved:
    """A real object for the Events to be about (a ConfigMap: nothing else acts on it)."""
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="subject"))
    created = await client.CoreV1Api(api).create_namespaced_config_map(namespace, body)
    return Involved(
        api_version="v1", kind="ConfigMap", name="subject", uid=created.metadata.uid, namespace=namespace
    )


def event(subject: Involved, message: str, at: int) -> Object:
    return render_event(
        subject,
        event_type="Normal",
        reason="Waiting",
        message=message,
        component=COMPONENT,
        now=T0 + timedelta(seconds=at),
        host="node-a",
    )


def stamp(at: int) -> str:
    return (T0 + timedelta(seconds=at)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def stored(kube: Kube, subject: Involved) -> list[Object]:
    items, _ = await kube.list(EVENTS, subject.namespace, field_selector=f"involvedObject.uid={subject.uid}")
    return sorted(items, key=lambda e: e["metadata"]["creationTimestamp"])


async def test_repeats_are_one_event_with_a_count_even_across_its_deletion(
    kube: Kube, subject: Involved, writes: list[str]
) -> None:
    """Five repeats leave one Event with count 5, its first time and the fifth's time. Deleted (as
    the API server expires Events after an hour), the next repeat creates it again with the count so
    far, and the repeat after that counts on the new object."""
    recorder = Recorder()
    for i in range(5):
        assert await recorder.record(kube, event(subject, "waiting for the daemon", at=60 * i))
    [first] = await stored(kube, subject)
    assert (first["count"], first["firstTimestamp"], first["lastTimestamp"]) == (5, stamp(0), stamp(240))
    assert first["message"] == "waiting for the daemon"
    assert writes == ["post"] + ["patch"] * 4

    await kube.delete(EVENTS, first["metadata"]["name"], subject.namespace)
    assert await recorder.record(kube, event(subject, "waiting for the daemon", at=3600))
    [again] = await stored(kube, subject)
    assert again["metadata"]["uid"] != first["metadata"]["uid"]
    assert (again["count"], again["firstTimestamp"], again["lastTimestamp"]) == (6, stamp(0), stamp(3600))
    # The delete, the repeat's patch that found nothing, and the create.
    assert writes[5:] == ["delete", "patch", "post"]

    assert await recorder.record(kube, event(subject, "waiting for the daemon", at=3660))
    [counted] = await stored(kube, subject)
    assert counted["metadata"]["uid"] == again["metadata"]["uid"]
    assert (counted["count"], counted["lastTimestamp"]) == (7, stamp(3660))


async def test_many_distinct_messages_are_folded_into_one_combined_event(
    kube: Kube, subject: Involved
) -> None:
    """Twelve Events of one object and reason with twelve messages, all within ten minutes: the first
    nine are Events of their own; the tenth starts one combined Event, which the eleventh and twelfth
    count on (its message follows the latest)."""
    recorder = Recorder()
    total = SIMILAR_LIMIT + 2
    for i in range(total):
        assert await recorder.record(kube, event(subject, f"attempt {i}: no daemon", at=i))
    events = await stored(kube, subject)
    own = [e for e in events if not e["message"].startswith(COMBINED_PREFIX)]
    combined = [e for e in events if e["message"].startswith(COMBINED_PREFIX)]
    assert sorted(e["message"] for e in own) == sorted(
        f"attempt {i}: no daemon" for i in range(SIMILAR_LIMIT - 1)
    )
    assert all(e["count"] == 1 for e in own)
    [folded] = combined
    assert folded["message"] == f"{COMBINED_PREFIX}attempt {total - 1}: no daemon"
    assert (folded["count"], folded["firstTimestamp"], folded["lastTimestamp"]) == (
        3,
        stamp(SIMILAR_LIMIT - 1),
        stamp(total - 1),
    )
