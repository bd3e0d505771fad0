"""The JSON codec of the API client and the object caches: the json module's or pydantic-core's.

pydantic-core's Rust codec decodes and encodes three to four times faster than the json module, which
matters to the controller: a 5,000-node domain's every watch event is its whole status, and one of its
reconciles reads 10,000 cached objects. It costs a process about 5 MiB to load, which the kubelet
plugin, on every GPU node and with a few small objects, need not pay. So the default is chosen when a
client or cache is made: pydantic-core's where the process has loaded it already (the controller's
settings and models are pydantic), the json module's otherwise. A program can also name its codec.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["FAST", "STDLIB", "Codec", "default_codec", "fast_codec"]


@dataclass(frozen=True)
class Codec:
    """Decoding and encoding of JSON documents; decoders raise ValueError for what is not JSON."""

    name: str
    # A response body or a watch event.
    decode: Callable[[bytes], Any]
    # An object decoded again and again (a cache's): only its keys, the few strings that every
    # object repeats, are worth interning.
    decode_cached: Callable[[bytes], Any]
    # Compact UTF-8 JSON.
    encode: Callable[[Any], bytes]


def _stdlib_encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


STDLIB = Codec("json", json.loads, json.loads, _stdlib_encode)
# The name of pydantic-core's codec, which `fast_codec` builds.
FAST = "pydantic_core"


@functools.cache
def fast_codec() -> Codec:
    """pydantic-core's codec (importing pydantic-core)."""
    import pydantic_core

    def decode_cached(data: bytes) -> Any:
        return pydantic_core.from_json(data, cache_strings="keys")

    return Codec(FAST, pydantic_core.from_json, decode_cached, pydantic_core.to_json)


def default_codec() -> Codec:
    """pydantic-core's codec where the process has loaded pydantic-core already, else the json module's."""
    return fast_codec() if FAST in sys.modules else STDLIB
