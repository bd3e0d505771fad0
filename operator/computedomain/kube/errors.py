"""The one error type of every API call, carrying the API server's own message."""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import json
import math

import aiohttp

# The cause the API server gives when it refuses new objects in a namespace being deleted.
NAMESPACE_TERMINATING = "NamespaceTerminating"
# Statuses worth retrying as they are: conflicts, throttling, and the server's own failures.
_TRANSIENT_STATUSES = frozenset({409, 429, 500, 502, 503, 504})


class KubeError(Exception):
    """An API request failed; `status` is the HTTP status and the message is the server's.

    `retry_after` is how many seconds the server asked us to wait before trying again (its
    `Retry-After` header or its Status's `details.retryAfterSeconds`), or None when it did not say.
    """

    def __init__(
        self,
        status: int,
        message: str,
        reason: str = "",
        causes: tuple[str, ...] = (),
        kind: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
        # The resource the Status is about (e.g. "computedomains" for a missing domain).
        self.kind = kind
        # The types of the Status's `details.causes`, e.g. NamespaceTerminating.
        self.causes = causes

    @property
    def namespace_terminating(self) -> bool:
        """The write was refused because its namespace is being deleted."""
        return NAMESPACE_TERMINATING in self.causes

    @classmethod
    def from_response(
        cls, status: int, reason: str, body: bytes | str | None, retry_after: float | None = None
    ) -> KubeError:
        """Build the error from a failed response's status line and `Status` body; `retry_after`
        is the response's `Retry-After` in seconds, which the body's `retryAfterSeconds` fills in
        when absent."""
        message, kind = str(reason or ""), ""
        causes: tuple[str, ...] = ()
        status_reason = ""
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        if text:
            try:
                decoded = json.loads(text)
                message = decoded.get("message", message)
                status_reason = decoded.get("reason", "")
                details = decoded.get("details") or {}
                # A cause's type travels as `reason`.
                causes = tuple(str(c.get("reason", "")) for c in details.get("causes") or [])
                kind = str(details.get("kind", ""))
                if retry_after is None:
                    retry_after = retry_after_seconds(details.get("retryAfterSeconds"))
            except (ValueError, AttributeError):
                message = text
        return cls(int(status or 0), message, status_reason, causes, kind, retry_after)


def retry_after_seconds(value: object) -> float | None:
    """A `Retry-After` value (seconds, or an HTTP date) as seconds from now; None when absent or
    unreadable. A date in the past counts as 0."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return None
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


class WatchExpired(KubeError):
    """A watch's resourceVersion is too old to resume from (410 Gone): list again, then watch."""

    def __init__(self, message: str = "too old resource version") -> None:
        super().__init__(410, message, "Expired")


class UndecodableResponse(ValueError):
    """The API server's answer (a body or a watch event) is not JSON.

    A ValueError as the decoder's own error is, for callers that catch that; unlike other ValueErrors
    it is transient, since a response cut short by a dropped connection or a restarting server is
    the usual cause.
    """


def is_transient(error: BaseException) -> bool:
    """True for failures that a retry with backoff can cure: a cut connection or response, a timeout,
    a restarting API server, throttling or a conflict; False for refusals (400, 403, 404, 422...) and
    for everything else, a pydantic ValidationError included: an object our models reject is a bug
    that asking again will not cure."""
    if isinstance(error, KubeError):
        return error.status in _TRANSIENT_STATUSES or error.status == 0
    return isinstance(error, (aiohttp.ClientError, OSError, asyncio.TimeoutError, UndecodableResponse))
