"""Backoff doubles up to its cap with jitter; errors are sorted into transient and final."""

from __future__ import annotations

import aiohttp
import pytest

from computedomain.kube import KubeError, is_transient
from computedomain.kube.backoff import Backoff


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    backoff = Backoff(initial=1.0, maximum=4.0, jitter=0.0)
    assert [backoff.next() for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next() == 1.0


def test_jitter_spreads_delays_within_its_band() -> None:
    delays = [Backoff(initial=2.0, jitter=0.25).next() for _ in range(200)]
    assert all(1.5 <= d <= 2.5 for d in delays)
    assert len(set(delays)) > 100


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (KubeError(500, "etcd"), True),
        (KubeError(503, "unavailable"), True),
        (KubeError(429, "throttled"), True),
        (KubeError(409, "conflict"), True),
        (KubeError(0, "no answer"), True),
        (KubeError(403, "forbidden"), False),
        (KubeError(422, "invalid"), False),
        (KubeError(404, "gone"), False),
        (aiohttp.ServerDisconnectedError(), True),
        (aiohttp.ClientPayloadError("Response payload is not completed"), True),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (KeyError("x"), False),
    ],
)
def test_transient_errors_are_told_from_final_ones(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient
