"""The JSON codec of the client and the caches: either codec reads and writes the same objects, and a
process without pydantic-core loaded gets the json module's."""

from __future__ import annotations

import ssl
import sys

import pytest

from computedomain.kube.client import Kube
from computedomain.kube.codec import FAST, STDLIB, Codec, default_codec, fast_codec
from computedomain.kube.config import Connection
from computedomain.kube.errors import UndecodableResponse
from computedomain.kube.store import DEFLATE_FROM, Store

OBJECT = {
    "metadata": {"name": "cd-1", "labels": {"resource.nvidia.com/computeDomain": "0c9d"}},
    "status": {"nodes": [{"name": f"gb200-n{i:04}", "ipAddress": "10.0.0.1", "index": i} for i in range(60)]},
    "spec": {"note": "naïve ☃", "ratio": 0.5, "flag": True, "none": None},
}
CODECS = [STDLIB, fast_codec()]


@pytest.mark.parametrize("codec", CODECS, ids=lambda codec: codec.name)
def test_both_codecs_round_trip_the_same_compact_json(codec: Codec) -> None:
    encoded = codec.encode(OBJECT)
    assert encoded == fast_codec().encode(OBJECT)
    assert codec.decode(encoded) == codec.decode_cached(encoded) == OBJECT
    with pytest.raises(ValueError, match=r"(?i)eof|unterminated|expecting|delimiter"):
        codec.decode(encoded[:40])


@pytest.mark.parametrize("codec", CODECS, ids=lambda codec: codec.name)
def test_a_store_keeps_objects_with_its_codec(codec: Codec) -> None:
    store = Store(codec)
    store.put("small", {"metadata": {"name": "x"}})
    store.put("large", OBJECT)
    assert len(codec.encode(OBJECT)) >= DEFLATE_FROM
    assert store.get("small") == {"metadata": {"name": "x"}}
    assert store["large"] == OBJECT
    assert store.pop("large") == OBJECT


@pytest.mark.parametrize("codec", CODECS, ids=lambda codec: codec.name)
def test_the_client_decodes_with_its_codec(codec: Codec) -> None:
    kube = Kube(Connection("https://127.0.0.1:6443", ssl.create_default_context()), codec=codec)
    assert kube.codec is codec
    assert kube._decode(codec.encode(OBJECT)) == OBJECT
    with pytest.raises(UndecodableResponse):
        kube._decode(b'{"kind": "Sta')


def test_the_default_follows_what_the_process_has_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert FAST in sys.modules  # this test process has pydantic loaded, as the controller has
    assert default_codec().name == FAST
    monkeypatch.delitem(sys.modules, FAST)
    assert default_codec() is STDLIB
    assert Kube(Connection("https://127.0.0.1:6443", ssl.create_default_context())).codec is STDLIB
