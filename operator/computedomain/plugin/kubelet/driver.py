"""What the kubelet's DRA calls need from a driver: prepare and unprepare of claims, and its devices.

Both calls are per claim: a claim's answer is its devices or an error for that claim alone. A prepare
gets the kubelet's deadline and must answer every claim before it, so that the kubelet reads the
driver's own message instead of a DeadlineExceeded for the whole call.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

# The kubelet gives each NodePrepareResources call 45 s; an answer must be on its way before then.
KUBELET_CALL_SECONDS = 45.0
# Time kept back from the kubelet's deadline to build and send the answer.
ANSWER_MARGIN = 2.0


@dataclass(frozen=True)
class ClaimRef:
    """A claim as the kubelet names it."""

    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class PreparedDevice(Protocol):
    """One device of a prepared claim, as the kubelet receives it."""

    @property
    def request(self) -> str:
        """The claim's request the device was allocated for."""
        ...

    @property
    def pool(self) -> str:
        """The pool of the device."""
        ...

    @property
    def device(self) -> str:
        """The device's name in its pool."""
        ...

    @property
    def cdi_device_ids(self) -> tuple[str, ...]:
        """The CDI devices the container runtime applies for it."""
        ...


@dataclass(frozen=True)
class Prepared:
    """The answer for one claim: its devices, or an error (then the kubelet calls again)."""

    devices: Sequence[PreparedDevice] = ()
    error: str = ""


class Driver(Protocol):
    """A DRA driver as the framework serves it to the kubelet."""

    async def prepare(self, claims: Sequence[ClaimRef], deadline: float) -> Mapping[str, Prepared]:
        """Prepare every claim; one answer per claim UID, all of them by `deadline` (`time.monotonic`)."""
        ...

    async def unprepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, str]:
        """Unprepare every claim; an error message per claim UID ('' when done)."""
        ...

    def devices(self) -> Sequence[str]:
        """The names of the devices of this node's pool (the health stream reports each)."""
        ...


def answer_deadline(time_remaining: float | None, now: float | None = None) -> float:
    """The `time.monotonic` time by which a driver must have answered a call with `time_remaining`
    seconds left (the kubelet's 45 s when the call says nothing), less the time to send the answer."""
    remaining = KUBELET_CALL_SECONDS if time_remaining is None else max(time_remaining, 0.0)
    start = time.monotonic() if now is None else now
    return start + remaining - min(ANSWER_MARGIN, remaining / 4)
