"""The Event recorder: repeats are counted on one object, similar Events are folded into one, as
client-go's EventCorrelator does; a write that failed is not counted and never raised, and the next
occurrence sets the object right (created again when it is gone, patched when an earlier create
landed unanswered)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from computedomain.kube import EVENTS, Kube, KubeError, Object
from computedomain.kube.events import (
    COMBINED_PREFIX,
    MESSAGE_LIMIT,
    SIMILAR_LIMIT,
    SIMILAR_WINDOW,
    Correlator,
    Involved,
    Recorder,
    render_event,
)
from support.fakekube import FakeKube

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
POD = Involved(api_version="v1", kind="Pod", name="worker-0", uid="u-pod", namespace="team-a")
NAMESPACE = "team-a"


class Clock:
    """Seconds that a test moves on by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def event(message: str = "waiting", at: int = 0, reason: str = "Waiting", host: str = "node-a") -> Object:
    """The plugin's kind of Event about POD, rendered `at` seconds after T0."""
    return render_event(
        POD,
        event_type="Normal",
        reason=reason,
        message=message,
        component="plugin",
        now=T0 + timedelta(seconds=at),
        host=host,
    )


def stamp(at: int) -> str:
    return (T0 + timedelta(seconds=at)).strftime("%Y-%m-%dT%H:%M:%SZ")


def occur(correlator: Correlator, posted: Object) -> Any:
    key, body = correlator.aggregate(posted)
    return correlator.observe(key, body)


# --- the correlation, without I/O -----------------------------------------------------------------


def test_a_repeat_patches_the_first_object_with_its_count_and_last_time() -> None:
    """The second occurrence is a patch of count 2 and the new lastTimestamp on the first's name;
    its full Event keeps the first time."""
    correlator = Correlator(clock=Clock())
    first = occur(correlator, event(at=0))
    assert first.patch is None
    assert first.event["count"] == 1
    correlator.delivered(first)

    second = occur(correlator, event(at=30))
    assert second.patch == {"count": 2, "lastTimestamp": stamp(30), "message": "waiting"}
    # The whole Event (for a create, should the object be gone) is the series as it stands.
    assert second.event["metadata"]["name"] == first.event["metadata"]["name"]
    assert (second.event["firstTimestamp"], second.event["lastTimestamp"]) == (stamp(0), stamp(30))
    assert second.key == first.key


def test_another_message_host_reason_or_object_is_another_event() -> None:
    """Each field of the key makes its own series; none of them disturbs the first."""
    correlator = Correlator(clock=Clock())
    base = occur(correlator, event())
    correlator.delivered(base)
    other_pod = render_event(
        Involved(api_version="v1", kind="Pod", name="worker-1", uid="u-pod-1", namespace=NAMESPACE),
        event_type="Normal",
        reason="Waiting",
        message="waiting",
        component="plugin",
        now=T0,
        host="node-a",
    )
    for different in (event("other"), event(host="node-b"), event(reason="Other"), other_pod):
        write = occur(correlator, different)
        assert write.patch is None, different
        assert write.key != base.key
    # The first one is still remembered.
    assert occur(correlator, event(at=5)).patch is not None


def test_the_tenth_distinct_message_of_a_group_within_the_window_starts_a_combined_event() -> None:
    """Nine distinct messages are Events of their own; the tenth starts the combined Event, on which
    every later one of the group is counted, its message following the latest."""
    clock = Clock()
    correlator = Correlator(clock=clock)
    keys = set()
    for i in range(SIMILAR_LIMIT - 1):
        clock.now += 60
        write = occur(correlator, event(f"attempt {i}", at=i))
        assert write.event["message"] == f"attempt {i}"
        assert write.patch is None
        correlator.delivered(write)
        keys.add(write.key)
    assert len(keys) == SIMILAR_LIMIT - 1

    clock.now += 60
    combined = occur(correlator, event("attempt 9", at=9))
    assert combined.event["message"] == COMBINED_PREFIX + "attempt 9"
    assert combined.key not in keys
    assert (combined.event["count"], combined.patch) == (1, None)
    correlator.delivered(combined)

    # Every later Event of the group, even a message seen before, counts on the combined one, whose
    # message follows the latest.
    for i, message in enumerate(("attempt 10", "attempt 0", "attempt 11"), start=2):
        clock.now += 60
        write = occur(correlator, event(message, at=100 + i))
        assert write.key == combined.key
        assert write.patch == {
            "count": i,
            "lastTimestamp": stamp(100 + i),
            "message": COMBINED_PREFIX + message,
        }


def test_similar_events_spread_wider_than_the_window_are_never_combined() -> None:
    """Distinct messages more than the window apart never add up to a combined Event."""
    clock = Clock()
    correlator = Correlator(clock=clock)
    for i in range(3 * SIMILAR_LIMIT):
        clock.now += SIMILAR_WINDOW + 1
        assert not occur(correlator, event(f"attempt {i}")).event["message"].startswith(COMBINED_PREFIX)


def test_a_combined_group_that_stays_quiet_for_the_window_starts_over() -> None:
    """A combined group stays combined while busy, and posts plain Events again after a quiet window."""
    clock = Clock()
    correlator = Correlator(clock=clock)
    for i in range(SIMILAR_LIMIT):
        write = occur(correlator, event(f"attempt {i}"))
    assert write.event["message"].startswith(COMBINED_PREFIX)
    clock.now += SIMILAR_WINDOW - 1
    assert occur(correlator, event("again")).event["message"].startswith(COMBINED_PREFIX)
    clock.now += SIMILAR_WINDOW + 1
    assert occur(correlator, event("quiet since")).event["message"] == "quiet since"


def test_a_combined_message_keeps_to_the_limit() -> None:
    """The prefix does not push a combined message past the API's limit."""
    correlator = Correlator(clock=Clock())
    for i in range(SIMILAR_LIMIT):
        write = occur(correlator, event(f"{i}" + "x" * 2000))
    assert len(write.event["message"]) == MESSAGE_LIMIT
    assert write.event["message"].startswith(COMBINED_PREFIX + "9x")


def test_a_failed_write_is_not_counted_and_the_series_keeps_its_name() -> None:
    """A failed create or patch is taken back from the count; the retry reuses the series' name."""
    correlator = Correlator(clock=Clock())
    lost = occur(correlator, event(at=0))
    correlator.failed(lost)
    # Tried again (or repeated): created under the same name, counted once.
    retried = occur(correlator, event(at=10))
    assert retried.patch is None
    assert retried.event["metadata"]["name"] == lost.event["metadata"]["name"]
    assert retried.event["count"] == 1
    correlator.delivered(retried)

    unanswered = occur(correlator, event(at=20))
    assert unanswered.patch is not None
    assert unanswered.patch["count"] == 2
    correlator.failed(unanswered)
    assert occur(correlator, event(at=30)).patch == {
        "count": 2,
        "lastTimestamp": stamp(30),
        "message": "waiting",
    }


def test_a_missing_object_is_created_again_with_the_count_so_far() -> None:
    """After a 404 the series is created again, with its first time and its count so far."""
    correlator = Correlator(clock=Clock())
    for at in range(3):
        write = occur(correlator, event(at=at))
        correlator.delivered(write)
    gone = occur(correlator, event(at=3600))
    correlator.missing(gone)
    again = occur(correlator, event(at=3700))
    assert again.patch is None
    assert (again.event["count"], again.event["firstTimestamp"]) == (5, stamp(0))


def test_the_memory_is_bounded_and_forgets_the_least_recently_used() -> None:
    """Beyond its size the memory drops the least recently used series, which then starts over."""
    correlator = Correlator(clock=Clock(), size=2)
    for message in ("a", "b"):
        correlator.delivered(occur(correlator, event(message)))
    correlator.delivered(occur(correlator, event("a", at=1)))  # "a" used last: "b" goes first
    correlator.delivered(occur(correlator, event("c")))
    assert occur(correlator, event("a", at=2)).patch is not None
    assert occur(correlator, event("b", at=2)).patch is None


# --- the recorder, on an in-memory API server ------------------------------------------------------


def stored(kube: FakeKube) -> list[Object]:
    return kube.of_kind(EVENTS)


async def test_repeats_make_one_object_with_their_count() -> None:
    """Four repeats are one create and three patches of one object."""
    kube = FakeKube()
    recorder = Recorder(Correlator(clock=Clock()))
    for at in range(4):
        assert await recorder.record(cast(Kube, kube), event(at=at * 10))
    [only] = stored(kube)
    assert (only["count"], only["firstTimestamp"], only["lastTimestamp"]) == (4, stamp(0), stamp(30))
    assert [w.verb for w in kube.take_writes()] == ["create", "patch", "patch", "patch"]


@pytest.mark.parametrize(
    "error",
    [KubeError(503, "unavailable"), KubeError(403, "forbidden"), TimeoutError(), ConnectionResetError()],
    ids=lambda e: getattr(e, "status", None) or type(e).__name__,
)
async def test_a_failed_write_is_logged_and_the_next_occurrence_sets_the_count_right(
    error: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed repeat is logged, returns False, is not counted; the next one patches the right count."""
    kube = FakeKube()
    recorder = Recorder(Correlator(clock=Clock()))
    assert await recorder.record(cast(Kube, kube), event(at=0))

    async def broken(*_: Any, **__: Any) -> Object:
        raise error

    patch = kube.patch
    kube.patch = broken  # type: ignore[method-assign]
    assert await recorder.record(cast(Kube, kube), event(at=10)) is False
    assert "could not post event Waiting about worker-0" in caplog.text
    kube.patch = patch  # type: ignore[method-assign]
    assert await recorder.record(cast(Kube, kube), event(at=20))
    [only] = stored(kube)
    assert (only["count"], only["lastTimestamp"]) == (2, stamp(20))


async def test_a_create_whose_answer_was_lost_is_patched_not_duplicated() -> None:
    """A create that landed but answered with an error is found by its name (409) and patched, with
    the count of what was delivered."""
    kube = FakeKube()
    recorder = Recorder(Correlator(clock=Clock()))
    created = kube.create

    async def lost_answer(kind: Any, obj: Object) -> Object:
        await created(kind, obj)
        raise TimeoutError

    kube.create = lost_answer  # type: ignore[method-assign]
    assert await recorder.record(cast(Kube, kube), event(at=0)) is False
    kube.create = created  # type: ignore[method-assign]
    assert await recorder.record(cast(Kube, kube), event(at=10))
    [only] = stored(kube)
    assert (only["count"], only["lastTimestamp"]) == (1, stamp(10))
    assert await recorder.record(cast(Kube, kube), event(at=20))
    assert stored(kube)[0]["count"] == 2


async def test_an_expired_event_is_created_again() -> None:
    """A repeat whose object was deleted creates it again with the count so far."""
    kube = FakeKube()
    recorder = Recorder(Correlator(clock=Clock()))
    for at in (0, 10):
        await recorder.record(cast(Kube, kube), event(at=at))
    [first] = stored(kube)
    await kube.delete(EVENTS, first["metadata"]["name"], NAMESPACE)
    assert await recorder.record(cast(Kube, kube), event(at=4000))
    [again] = stored(kube)
    assert (again["count"], again["firstTimestamp"], again["lastTimestamp"]) == (3, stamp(0), stamp(4000))
    assert [w.verb for w in kube.take_writes()][-2:] == ["patch", "create"]


async def test_concurrent_repeats_are_written_in_order() -> None:
    """Twenty concurrent repeats over slow writes end as one object of count 20 and the last time;
    no lock is left behind."""
    kube = FakeKube()
    create, patch = kube.create, kube.patch

    # Writes that take a while, as over a network: the others arrive meanwhile.
    async def slow_create(kind: Any, obj: Object) -> Object:
        for _ in range(5):
            await asyncio.sleep(0)
        return await create(kind, obj)

    async def slow_patch(*args: Any, **kwargs: Any) -> Object:
        await asyncio.sleep(0)
        return await patch(*args, **kwargs)

    kube.create, kube.patch = slow_create, slow_patch  # type: ignore[method-assign]
    recorder = Recorder(Correlator(clock=Clock()))
    results = await asyncio.gather(*(recorder.record(cast(Kube, kube), event(at=at)) for at in range(20)))
    assert all(results)
    [only] = stored(kube)
    assert (only["count"], only["lastTimestamp"]) == (20, stamp(19))
    assert recorder._locks == {}
