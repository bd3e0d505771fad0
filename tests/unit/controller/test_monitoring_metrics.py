"""The controller's series that the chart's alerts read: each clique's channel pool (held, free, domains
waiting) and how long the domain not Ready longest has been so, per reason."""

from __future__ import annotations

import datetime
from typing import Any

from prometheus_client import CollectorRegistry

from computedomain.controller.metrics import NotReadyClock, PoolCollector, PoolSource, pool_figures
from computedomain.controller.plan.channels import Holding

CLIQUE = "c1a2.32766"
OTHER = "d9e8.1"
AT = datetime.datetime(2025, 3, 1, 10, 0, tzinfo=datetime.UTC).timestamp()


def stamp(seconds_before: float) -> str:
    moment = datetime.datetime.fromtimestamp(AT - seconds_before, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def status(state: str, reason: str = "", since: str = "") -> dict[str, Any]:
    ready = {"type": "Ready", "status": "True" if state == "Ready" and not reason else "False"}
    if reason:
        ready["reason"] = reason
    if since:
        ready["lastTransitionTime"] = since
    return {"status": state, "conditions": [ready]}


def test_the_pool_counts_distinct_held_channels_the_free_rest_and_the_waiting_domains() -> None:
    holdings = [
        Holding("a", CLIQUE, 1),
        Holding("b", CLIQUE, 2),
        # A stale second object naming channel 2 does not make the pool look fuller than it is.
        Holding("c", CLIQUE, 2),
        Holding("d", CLIQUE, None),
        Holding("e", CLIQUE, None),
        Holding("f", OTHER, None),
    ]
    # IMEX_CHANNELS=4: channels 1, 2 and 3 are given (0 never is).
    figures = pool_figures(holdings, [CLIQUE, "quiet.7", ""], channels=4)

    assert figures == {CLIQUE: (2, 1, 2), OTHER: (0, 3, 1), "quiet.7": (0, 3, 0)}


def test_a_channel_outside_the_pool_is_not_counted_as_held() -> None:
    # The pool shrank (IMEX_CHANNELS lowered) while a domain kept channel 9: the pool itself is full
    # only with channels it can give.
    assert pool_figures([Holding("a", CLIQUE, 9), Holding("b", CLIQUE, 1)], [], channels=3) == {
        CLIQUE: (1, 1, 0)
    }


def test_the_pool_collector_reports_only_while_it_has_a_source() -> None:
    registry = CollectorRegistry()
    collector = PoolCollector()
    registry.register(collector)
    sample = registry.get_sample_value

    assert sample("computedomain_channel_pool_channels", {"clique": CLIQUE, "state": "held"}) is None

    holdings = [Holding("a", CLIQUE, 1), Holding("b", CLIQUE, None)]
    collector.source = PoolSource(lambda: holdings, lambda: {"n1": CLIQUE, "n2": OTHER}, 3)
    assert sample("computedomain_channel_pool_channels", {"clique": CLIQUE, "state": "held"}) == 1
    assert sample("computedomain_channel_pool_channels", {"clique": CLIQUE, "state": "free"}) == 1
    assert sample("computedomain_channel_pool_waiting_domains", {"clique": CLIQUE}) == 1
    assert sample("computedomain_channel_pool_channels", {"clique": OTHER, "state": "free"}) == 2
    assert sample("computedomain_channel_pool_waiting_domains", {"clique": OTHER}) == 0

    # Read at scrape time: the channel given to the waiting domain shows at once.
    holdings[1] = Holding("b", CLIQUE, 2)
    assert sample("computedomain_channel_pool_channels", {"clique": CLIQUE, "state": "free"}) == 0
    assert sample("computedomain_channel_pool_waiting_domains", {"clique": CLIQUE}) == 0

    collector.source = None
    assert sample("computedomain_channel_pool_waiting_domains", {"clique": CLIQUE}) is None


def clock_registry() -> tuple[NotReadyClock, CollectorRegistry]:
    registry = CollectorRegistry()
    clock = NotReadyClock(clock=lambda: AT)
    registry.register(clock)
    return clock, registry


def age(registry: CollectorRegistry, reason: str) -> float | None:
    return registry.get_sample_value("computedomain_domain_not_ready_seconds", {"reason": reason})


def test_the_longest_not_ready_domain_of_each_reason_counts_from_its_ready_transition() -> None:
    clock, registry = clock_registry()

    clock.see("a", status("NotReady", "WaitingForNodes", stamp(600)), now=AT - 10)
    clock.see("b", status("NotReady", "WaitingForNodes", stamp(1200)), now=AT - 10)
    clock.see("c", status("NotReady", "ChannelPoolExhausted", stamp(30)), now=AT - 10)
    clock.see("d", status("Ready"), now=AT - 10)

    assert age(registry, "WaitingForNodes") == 1200
    assert age(registry, "ChannelPoolExhausted") == 30
    assert age(registry, "DomainReady") is None

    # The oldest one forms and the next oldest is what is left; a deleted domain leaves too.
    clock.see("b", status("Ready", since=stamp(1)), now=AT)
    assert age(registry, "WaitingForNodes") == 600
    clock.see("c", None, now=AT)
    assert age(registry, "ChannelPoolExhausted") is None


def test_a_domain_whose_ready_condition_is_false_counts_whatever_its_node_summary_says() -> None:
    clock, registry = clock_registry()
    # A domain of the other IMEX mode keeps the status it had, with Ready=False.
    clock.see("a", status("Ready", "ImexModeMismatch", stamp(90)), now=AT)
    assert age(registry, "ImexModeMismatch") == 90


def test_without_a_transition_time_the_age_counts_from_when_the_process_saw_it() -> None:
    clock, registry = clock_registry()

    clock.see("a", {"status": "NotReady"}, now=AT - 300)
    clock.see("a", {"status": "NotReady"}, now=AT - 100)
    assert age(registry, "Unknown") == 300

    # A new term: the ages of the last one are no longer this replica's to report.
    clock.clear()
    assert age(registry, "Unknown") is None
