"""Decide whether a live object already holds everything a rendered manifest asks for."""

from __future__ import annotations

from typing import Any


def contains(live: Any, desired: Any) -> bool:
    """True when every field of `desired` is present in `live` with the same value.

    Fields the API server adds (defaults, status, metadata it owns) are ignored; lists must match
    element by element, since the order of containers, env vars and tolerations is meaningful. An
    empty rendered list or map matches an absent field: the API server drops empty ones (a domain's
    `status.nodes` once every node left), and applying them again would change nothing.
    """
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        return all(
            contains(live[key], value) if key in live else _empty_collection(value)
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return False
        return all(contains(a, b) for a, b in zip(live, desired, strict=True))
    return bool(live == desired)


def _empty_collection(value: Any) -> bool:
    return isinstance(value, (dict, list)) and not value
