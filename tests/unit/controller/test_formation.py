"""The controller's formation time: creation to the first formed status, once per domain and process."""

from __future__ import annotations

import datetime

from prometheus_client import CollectorRegistry, Histogram

from computedomain.controller.metrics import Formation, formed, seconds_since

CREATED = "2025-03-01T10:00:00Z"
AT = datetime.datetime(2025, 3, 1, 10, 0, tzinfo=datetime.UTC).timestamp()


def clock() -> tuple[Formation, Histogram, CollectorRegistry]:
    registry = CollectorRegistry()
    histogram = Histogram("formation_seconds", "test", registry=registry)
    return Formation(histogram), histogram, registry


def count(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("formation_seconds_count") or 0.0


def test_a_domain_seen_unformed_is_observed_once_when_it_forms() -> None:
    formation, _, registry = clock()

    assert formation.see("a", CREATED, before=False, after=False, now=AT + 5) is None
    assert formation.see("a", CREATED, before=False, after=True, now=AT + 42) == 42.0
    assert count(registry) == 1
    assert registry.get_sample_value("formation_seconds_sum") == 42.0
    # Ready again later (a node came back), or the same status seen again: not a formation.
    assert formation.see("a", CREATED, before=True, after=True, now=AT + 90) is None
    assert formation.see("a", CREATED, before=False, after=True, now=AT + 120) is None
    assert count(registry) == 1


def test_a_domain_formed_before_this_process_saw_it_is_never_observed() -> None:
    formation, _, registry = clock()

    # A restarted controller's first look: the live status already says formed.
    assert formation.see("b", CREATED, before=True, after=True, now=AT + 3600) is None
    # It loses a node and forms again: still the formation of long ago, which nobody recorded.
    assert formation.see("b", CREATED, before=True, after=False, now=AT + 4000) is None
    assert formation.see("b", CREATED, before=False, after=True, now=AT + 4100) is None
    assert count(registry) == 0


def test_a_deleted_domain_is_forgotten() -> None:
    formation, _, registry = clock()
    formation.see("c", CREATED, before=False, after=True, now=AT + 1)
    formation.forget("c")
    # A domain of the same UID cannot come back; what matters is that nothing is kept for it.
    assert formation.see("c", CREATED, before=False, after=True, now=AT + 2) == 2.0
    assert count(registry) == 2


def test_formed_means_ready_with_a_node_joined() -> None:
    assert formed({"status": "Ready", "joinedNodes": 2})
    # numNodes 0 and nobody joined: Ready by NVIDIA's rule, but no IMEX domain formed.
    assert not formed({"status": "Ready", "joinedNodes": 0})
    assert not formed({"status": "NotReady", "joinedNodes": 3})
    assert not formed({})


def test_seconds_since_creation() -> None:
    assert seconds_since(CREATED, AT + 7.5) == 7.5
    # The API server's clock ahead of ours: never below zero.
    assert seconds_since(CREATED, AT - 3) == 0.0
    assert seconds_since("2025-03-01T10:00:00.250000+00:00", AT + 1) == 0.75
    assert seconds_since("", AT) is None
    assert seconds_since("yesterday", AT) is None
    # Without a zone it could be anyone's local time.
    assert seconds_since("2025-03-01T10:00:00", AT) is None
