"""A cache of objects kept as compact JSON.

A parsed Kubernetes object costs five to eight times its JSON size in Python dicts and strings, and a
controller caches thousands of them while reading each only when its own domain is reconciled. Kept
as compact UTF-8 JSON, an object costs its encoded size, decoding one costs microseconds, and the
memory a cache holds is known exactly (`size`), which the programs export as a metric. An object of
2 KiB or more (a DaemonSet, a full clique object, a large domain) is also deflated, to about a
third: its JSON repeats the same keys and values, and inflating it costs a few microseconds. The JSON
codec is `kube.codec`'s: pydantic-core's in the controller, the json module's in the kubelet plugin.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from computedomain.kube.codec import Codec, default_codec
from computedomain.objects import Object

# Objects this large are deflated; smaller ones gain too little for the time.
DEFLATE_FROM = 2048
# A zlib stream's first byte (deflate, 32 KiB window); JSON objects start with "{".
_ZLIB_HEADER = 0x78


def encode(obj: Object, codec: Codec | None = None) -> bytes:
    """An object as compact UTF-8 JSON, by `codec` (else the process's default, see `kube.codec`)."""
    return (codec or default_codec()).encode(obj)


class Store:
    """Objects by key; each `get` returns a fresh copy the caller may change."""

    def __init__(self, codec: Codec | None = None) -> None:
        self._codec = codec or default_codec()
        self._data: dict[str, bytes] = {}
        self._size = 0

    @property
    def size(self) -> int:
        """Bytes of encoded objects held."""
        return self._size

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def get(self, key: str) -> Object | None:
        """The object under `key`, decoded, or None."""
        data = self._data.get(key)
        return None if data is None else self._decode(data)

    def __getitem__(self, key: str) -> Object:
        return self._decode(self._data[key])

    def put(self, key: str, obj: Object) -> None:
        """Store `obj` under `key` (replacing what was there)."""
        data = self._codec.encode(obj)
        if len(data) >= DEFLATE_FROM:
            data = zlib.compress(data, 1)
        self._size += len(data) - len(self._data.get(key, b""))
        self._data[key] = data

    def pop(self, key: str) -> Object | None:
        """Remove and return the object under `key` (None if there was none)."""
        data = self._data.pop(key, None)
        if data is None:
            return None
        self._size -= len(data)
        return self._decode(data)

    def values(self) -> Iterator[Object]:
        """Every object, decoded one at a time."""
        return (self._decode(data) for data in list(self._data.values()))

    def items(self) -> Iterator[tuple[str, Object]]:
        """Every (key, object) pair, decoded one at a time."""
        return ((key, self._decode(data)) for key, data in list(self._data.items()))

    def clear(self) -> None:
        """Forget everything."""
        self._data.clear()
        self._size = 0

    def _decode(self, data: bytes) -> Object:
        if data[0] == _ZLIB_HEADER:
            data = zlib.decompress(data)
        obj: Object = self._codec.decode_cached(data)
        return obj
