"""TieredCache / AsyncTieredCache against a real redis-server.

The server is started by the fixtures below (``tests/redis_server.py``: a free
loopback port, no persistence, stopped afterwards even when a test fails); the
tests skip only when the ``redis-server`` binary is missing.  The L1 comes from
``make_l1``: a native ``amulet_native.Cache``.
"""

from __future__ import annotations

import asyncio
import enum
import json
import math
import os
import pickle
import random
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pytest
import redis
import redis.asyncio as aredis
from conftest import switch_often
from hypothesis import given, settings
from hypothesis import strategies as st
from redis_server import RedisServer, redis_server_binary

import amulet_native as an
from amulet_native import tiered
from amulet_native.tiered import CorruptValue, decode_value, encode_key, encode_value

REPO_ROOT = Path(__file__).resolve().parent.parent

needs_redis = pytest.mark.skipif(
    redis_server_binary() is None,
    reason="redis-server is not installed (Debian package redis-server; `make` installs it)",
)


# ---- L1 -----------------------------------------------------------------------


def _make_l1(max_items: int = 1024) -> an.Cache[Any, Any]:
    return an.Cache(max_items=max_items)


@pytest.fixture
def make_l1() -> Callable[..., Any]:
    """The one place that chooses the L1 of every test."""
    return _make_l1


# ---- Redis --------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test alone (it gets killed, paused or restarted)."""
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    srv = RedisServer(tmp_path / "redis")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def raw(server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client of the shared server, emptied for each test."""
    client = server.client()
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


def _tc(server: RedisServer, l1: Any, **kw: Any) -> an.TieredCache:
    kw.setdefault("timeout", 2.0)
    return an.TieredCache(l1, server.url, **kw)


# ---- keys ---------------------------------------------------------------------


class Color(enum.IntEnum):
    RED = 1


def test_key_encoding_is_type_tagged_and_fixed() -> None:
    assert encode_key("a") == b"s1:a"
    assert encode_key("é") == b"s2:\xc3\xa9"
    assert encode_key(b"a") == b"b1:a"
    assert encode_key(-12) == b"i-12;"
    assert encode_key(None) == b"N"
    assert encode_key(True) == b"T" and encode_key(False) == b"F"
    assert encode_key(0.5) == b"f0x1.0000000000000p-1;"
    assert encode_key((1, ("a", None))) == b"(i1;(s1:aN))"
    assert encode_key(()) == b"()"
    keys = [1, True, 1.0, "1", b"1", (1,), ((1,),), None, "", b"", (), ("a", "b"), ("ab",),
            0.0, -0.0, float("inf"), 2**200, -(2**200), "\ud800"]
    encoded = [encode_key(k) for k in keys]
    assert len(set(encoded)) == len(keys)
    assert encode_key(Color.RED) == encode_key(1)  # subclasses encode like their value
    # lists (functools-style keys are list subclasses) and classes (typed keys)
    assert encode_key([1, "a"]) == b"[i1;s1:a]" != encode_key((1, "a"))
    assert encode_key((int, Color)) == b"(c12:builtins.intc17:test_tiered.Color)"
    huge = 1 << 50000  # beyond int->str digit limits
    assert encode_key(huge).startswith(b"h") and encode_key(huge) != encode_key(huge + 1)


def test_long_keys_are_hashed() -> None:
    k = ("x" * 200, 1)
    enc = encode_key(k)
    assert enc.startswith(b"h") and len(enc) == 65
    assert enc == encode_key(("x" * 200, 1)) and enc != encode_key(("x" * 200, 2))
    assert not encode_key("x" * 100).startswith(b"h")


def test_unsupported_keys_raise_typed_errors() -> None:
    for bad in ({"a": 1}, object(), {1}, 1j, (1, {2}), [object()]):
        with pytest.raises(an.SerializationError) as info:
            encode_key(bad)
        assert isinstance(info.value, TypeError)
        assert info.value.code == "serialize.key_type"
    deep: Any = ()
    for _ in range(20):
        deep = (deep,)
    with pytest.raises(an.SerializationError) as info:
        encode_key(deep)
    assert info.value.code == "serialize.key_depth"


def test_key_serializer() -> None:
    def ks(k: Any) -> str:
        return json.dumps(sorted(k.items()))

    assert encode_key({"b": 1, "a": 2}, key_serializer=ks) == encode_key(
        {"a": 2, "b": 1}, key_serializer=ks
    )
    assert encode_key(("p", {"a": 1}), key_serializer=ks).startswith(b"(s1:pk")
    assert encode_key("plain", key_serializer=ks) == b"s5:plain"  # only for other types
    with pytest.raises(an.SerializationError):
        encode_key({1}, key_serializer=cast(Any, lambda k: 42))


def test_keys_are_the_same_in_other_processes() -> None:
    keys = [("img", 3, 1.5, None, True, b"\x00\xff"), "é" * 100, -(2**70), ("x" * 300,)]
    mine = [encode_key(k).hex() for k in keys]
    code = textwrap.dedent(f"""
        from amulet_native.tiered import encode_key
        keys = {keys!r}
        print(" ".join(encode_key(k).hex() for k in keys))
    """)
    for seed in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=120, cwd=REPO_ROOT, check=True)
        assert out.stdout.split() == mine


# ---- values -------------------------------------------------------------------

DTYPES = ["?", "i1", "u1", "<i2", ">i2", "<u2", ">u2", "<i4", ">i4", "<u4", ">u4", "<i8",
          ">i8", "<u8", ">u8", "<f2", ">f2", "<f4", ">f4", "<f8", ">f8", "<c8", ">c8",
          "<c16", ">c16"]
SHAPES: list[tuple[int, ...]] = [(), (0,), (3, 0, 2), (7,), (2, 3, 4), (1,) * 32]


def _sample(dtype: str, shape: tuple[int, ...], seed: int = 0) -> npt.NDArray[Any]:
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    dt = np.dtype(dtype)
    if dt.kind == "b":
        flat = rng.integers(0, 2, n).astype(bool)
    elif dt.kind in "iu":
        info = np.iinfo(dt)
        flat = rng.integers(info.min, info.max, n, dtype=dt.newbyteorder("="), endpoint=True)
    elif dt.kind == "f":
        flat = rng.standard_normal(n) * 1000
    else:
        flat = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    return np.asarray(flat).astype(dt).reshape(shape)


@pytest.mark.parametrize("dtype", DTYPES)
def test_array_round_trip_every_dtype(dtype: str) -> None:
    for shape in SHAPES:
        arr = _sample(dtype, shape)
        payload, l1_value = encode_value(arr)
        for out in (decode_value(bytes(payload))[0], l1_value):
            assert out.dtype == arr.dtype and out.dtype.str == arr.dtype.str
            assert out.shape == arr.shape
            assert not out.flags.writeable
            np.testing.assert_array_equal(out, arr)


def test_array_special_values_and_layouts() -> None:
    f = np.array([np.nan, -0.0, np.inf, -np.inf, 5e-324], ">f8")
    out = decode_value(bytes(encode_value(f)[0]))[0]
    assert out.tobytes() == f.tobytes()  # bit-exact, NaN and -0.0 included
    base = np.arange(60, dtype=np.int32).reshape(3, 4, 5)
    for view in (base[:, ::2, 1:], base.T, base[::-1], np.asfortranarray(base)):
        assert not view.flags.c_contiguous or view is not base
        out = decode_value(bytes(encode_value(view)[0]))[0]
        np.testing.assert_array_equal(out, view)
        assert out.flags.c_contiguous
    # data starts 16-byte aligned in the payload (and so in Redis's bytes object)
    payload, _ = encode_value(np.zeros((2, 2), "<c16"))
    head_len = int.from_bytes(payload[6:8], "little")
    assert head_len % 16 == 0 and len(payload) == head_len + 64
    assert int.from_bytes(payload[16:24], "little") == 64


def test_l1_value_is_independent_of_the_callers_array() -> None:
    arr = np.arange(6, dtype=np.uint8)
    _, l1_value = encode_value(arr)
    arr[:] = 99
    np.testing.assert_array_equal(l1_value, np.arange(6, dtype=np.uint8))
    with pytest.raises(ValueError):
        l1_value[0] = 1


def test_scalar_and_text_values_round_trip() -> None:
    values: list[Any] = [b"", b"\x00\xff" * 100, "", "héllo \ud800", None, True, False, 0, -1,
                         2**64, -(10**300), 0.1, float("inf"), -0.0]
    for v in values:
        out, left = decode_value(bytes(encode_value(v)[0]))
        assert type(out) is type(v) and (out == v or (out is None and v is None))
        assert left is None
    for v in (bytearray(b"ab"), memoryview(b"abcd")[::2]):
        payload, l1_value = encode_value(v)
        assert decode_value(bytes(payload))[0] == bytes(v) == l1_value
    assert math.isnan(decode_value(bytes(encode_value(float("nan"))[0]))[0])


def test_unsupported_values_raise_typed_errors() -> None:
    cases: list[tuple[Any, str]] = [
        ({"a": 1}, "serialize.value_type"),
        ([1, 2], "serialize.value_type"),
        (object(), "serialize.value_type"),
        (np.float32(1.0), "serialize.value_type"),
        (np.ma.masked_array([1, 2], mask=[False, True]), "serialize.value_type"),
        (2**20000, "serialize.value_type"),
        (np.array([1, "a"], dtype=object), "serialize.dtype"),
        (np.array(["ab"]), "serialize.dtype"),
        (np.array([b"ab"]), "serialize.dtype"),
        (np.zeros(2, dtype="datetime64[s]"), "serialize.dtype"),
        (np.zeros(2, dtype=[("a", "i4")]), "serialize.dtype"),
        (np.zeros(2, dtype=np.longdouble), "serialize.dtype"),
        (np.zeros((1,) * 33), "serialize.ndim"),
    ]
    for value, code in cases:
        with pytest.raises(an.SerializationError) as info:
            encode_value(value)
        assert isinstance(info.value, TypeError) and info.value.code == code, value


def test_serializer_values() -> None:
    value = {"boxes": [(1, 2, 3, 4)], "label": "cat"}
    payload, l1_value = encode_value(value, serializer=pickle)
    assert l1_value is value
    assert decode_value(bytes(payload), serializer=pickle)[0] == value
    with pytest.raises(CorruptValue, match="serializer"):
        decode_value(bytes(payload))  # written with a serializer, read without one
    with pytest.raises(CorruptValue, match="loads failed"):
        decode_value(_forge(b"o", b"", pickle.dumps(value)[:-3]), serializer=pickle)


def test_expiry_is_carried_in_the_value() -> None:
    payload, _ = encode_value(b"x", expires_ms=10_000)
    assert decode_value(bytes(payload), now_ms=4_000)[1] == pytest.approx(6.0)
    assert decode_value(bytes(payload), now_ms=11_000)[1] == pytest.approx(-1.0)


# ---- malformed values ---------------------------------------------------------


def _forge(kind: bytes, extra: bytes, payload: bytes) -> bytes:
    """A payload with a valid header CRC around arbitrary contents."""
    head = tiered._header(kind, 0, len(payload), extra, align=16 if kind == b"a" else 1)
    return bytes(head) + payload


def _arr_extra(kind: bytes, order: bytes, size: int, shape: tuple[int, ...]) -> bytes:
    return tiered._ARR.pack(kind, order, size, len(shape)) + b"".join(
        d.to_bytes(8, "little") for d in shape
    )


def test_every_truncation_is_refused() -> None:
    for value in (np.arange(12, dtype="<i4").reshape(3, 4), "hello", b"bytes", 123, 1.5, True,
                  None, np.zeros((), "?")):
        full = bytes(encode_value(value)[0])
        decode_value(full)
        for cut in range(len(full)):
            with pytest.raises(CorruptValue):
                decode_value(full[:cut])


def test_seeded_bit_flips_never_yield_garbage() -> None:
    rng = random.Random(1234)
    arr = _sample("<f4", (4, 5, 3))
    full = bytes(encode_value(arr)[0])
    head_len = int.from_bytes(full[6:8], "little")
    header_flips = data_flips = 0
    for _ in range(3000):
        buf = bytearray(full)
        for _ in range(rng.choice((1, 1, 2, 8))):
            pos = rng.randrange(len(buf))
            buf[pos] ^= 1 << rng.randrange(8)
        touched_header = buf[:head_len] != full[:head_len]
        try:
            out, _ = decode_value(bytes(buf))
        except CorruptValue:
            header_flips += touched_header
            continue
        # Accepted: the header is intact (CRC), so shape and dtype are the original's.
        assert not touched_header
        assert out.shape == arr.shape and out.dtype == arr.dtype
        data_flips += 1
    assert header_flips > 100 and data_flips > 100


def test_forged_headers_with_valid_crc_are_refused() -> None:
    bad = [
        _forge(b"a", _arr_extra(b"O", b"|", 8, (1,)), bytes(8)),  # object dtype
        _forge(b"a", _arr_extra(b"f", b"<", 16, (1,)), bytes(16)),  # long double
        _forge(b"a", _arr_extra(b"i", b"|", 4, (1,)), bytes(4)),  # no byte order
        _forge(b"a", _arr_extra(b"u", b"<", 1, (1,)), bytes(1)),  # order on 1 byte
        _forge(b"a", _arr_extra(b"u", b"|", 1, (3,)), bytes(2)),  # short data
        _forge(b"a", _arr_extra(b"u", b"|", 1, (3,)), bytes(4)),  # trailing data
        _forge(b"a", _arr_extra(b"u", b"|", 1, (2**40, 2**40)), bytes(16)),  # huge
        _forge(b"a", _arr_extra(b"u", b"|", 1, (2**63, 0)), b""),  # dim out of range
        _forge(b"a", _arr_extra(b"u", b"|", 1, (0, 2**61, 2**61)), b""),  # overflowing
        _forge(b"a", _arr_extra(b"u", b"|", 1, (1,) * 33), bytes(1)),  # ndim
        _forge(b"a", _arr_extra(b"b", b"|", 1, (2,)), b"\x01\x02"),  # bool not 0/1
        _forge(b"a", b"", b""),  # no dtype
        _forge(b"s", b"", b"\xff\xfe"),  # not UTF-8
        _forge(b"i", b"", b" 12"),
        _forge(b"i", b"", b"1_000"),
        _forge(b"i", b"", b"9" * 5000),
        _forge(b"f", b"", bytes(4)),
        _forge(b"t", b"", b"\x02"),
        _forge(b"n", b"", b"x"),
        _forge(b"z", b"", b""),  # unknown kind
        _forge(b"s", b"\x00" * 4, b"abc"),  # header longer than the kind's
    ]
    for payload in bad:
        with pytest.raises(CorruptValue):
            decode_value(payload)
    good = bytearray(encode_value(b"x")[0])
    good[4] = 2  # a future layout version
    with pytest.raises(CorruptValue, match="version"):
        decode_value(bytes(good))
    arr = bytearray(encode_value(np.zeros(3, "u1"))[0])
    arr[-4] = 1  # header padding must be zero: covered by the CRC, so forge it
    with pytest.raises(CorruptValue):
        decode_value(bytes(arr))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_ever_raise_corrupt(data: bytes) -> None:
    for blob in (data, bytes(encode_value(np.zeros(2, "<i8"))[0])[:24] + data,
                 tiered.MAGIC + data):
        try:
            decode_value(blob)
        except CorruptValue:
            pass


# ---- TieredCache against Redis -------------------------------------------------


@needs_redis
def test_read_through_and_fill(server: RedisServer, raw: redis.Redis, make_l1: Any,
                               prefix: str) -> None:
    a = _tc(server, make_l1(), prefix=prefix)
    b = _tc(server, make_l1(), prefix=prefix)
    img = _sample("u1", (768, 512, 3))
    a.set(("img", 7), img)
    a.set("text", "héllo")
    assert raw.exists(prefix.encode() + encode_key(("img", 7)))
    out = b.get(("img", 7))
    assert out is not None and not out.flags.writeable
    np.testing.assert_array_equal(out, img)
    assert b.get("text") == "héllo"
    assert b.get("absent") is None and b.get("absent", "dflt") == "dflt"
    assert b.get(("img", 7)) is out  # now from b's L1
    s = b.stats()
    assert (s["l1_hits"], s["l1_misses"], s["l2_hits"], s["l2_misses"]) == (1, 4, 2, 2)
    assert s["l2_errors"] == s["l2_timeouts"] == s["l2_corrupt"] == 0
    assert s["l2_available"] and s["last_error"] is None
    assert a.get(("img", 7)) is not None and a.stats()["l1_hits"] == 1
    a.close()
    b.close()


@needs_redis
def test_ttl_applies_to_both_tiers(server: RedisServer, raw: redis.Redis, make_l1: Any,
                                   prefix: str) -> None:
    a = _tc(server, make_l1(), prefix=prefix, ttl=30)
    b = _tc(server, make_l1(), prefix=prefix)
    a.set("default", b"1")
    a.set("short", b"2", ttl=0.3)
    a.set("forever", b"3", ttl=math.inf)
    a.set("none", b"4", ttl=None)  # None: the cache's default, as @cached passes it
    names = ("default", "short", "forever", "none")
    pttl = {k: raw.pttl(prefix + encode_key(k).decode()) for k in names}
    assert 29_000 < pttl["default"] <= 30_000 and 29_000 < pttl["none"] <= 30_000
    assert 0 < pttl["short"] <= 300
    assert pttl["forever"] == -1
    assert b.get("short") == b"2"  # fills b's L1 with the ~0.3 s left
    time.sleep(0.45)
    assert a.get("short") is None and b.get("short") is None  # gone from both tiers
    assert b.get("default") == b"1" and b.get("forever") == b"3"
    with pytest.raises(an.ValidationError):
        a.set("x", b"1", ttl=0)
    with pytest.raises(an.ValidationError):
        a.set("x", b"1", ttl=float("nan"))


@needs_redis
def test_l1_ttl_caps_l1_lifetime(server: RedisServer, raw: redis.Redis, make_l1: Any,
                                 prefix: str) -> None:
    a = _tc(server, make_l1(), prefix=prefix)
    b = _tc(server, make_l1(), prefix=prefix, l1_ttl=0.2)
    a.set("k", b"old")
    assert b.get("k") == b"old"
    a.set("k", b"new")  # another worker replaces the entry
    assert b.get("k") == b"old"  # b's L1 still serves its copy...
    time.sleep(0.3)
    assert b.get("k") == b"new"  # ...for at most l1_ttl


@needs_redis
def test_delete_and_clear_touch_only_this_prefix(server: RedisServer, raw: redis.Redis,
                                                 make_l1: Any) -> None:
    pre = "app[1]*?\\:"  # glob characters are matched literally
    tc = _tc(server, make_l1(), prefix=pre)
    other = _tc(server, make_l1(), prefix="app[1]x:")
    raw.set("unrelated", b"keep")
    raw.set("app1:x", b"keep")
    for i in range(1200):  # more than one SCAN batch and one UNLINK batch
        tc.set(i, b"v")
    other.set(1, b"other")
    tc.delete(5)
    tc.delete("never-set")
    assert tc.get(5) is None and not raw.exists(pre + "i5;")
    assert tc.clear() == 1199
    assert tc.get(1) is None and tc.stats()["l2_misses"] >= 2
    assert raw.get("unrelated") == b"keep" and raw.get("app1:x") == b"keep"
    assert other.get(1) == b"other"
    assert raw.dbsize() == 3


@needs_redis
def test_corrupt_values_in_redis_are_counted_misses(server: RedisServer, raw: redis.Redis,
                                                    make_l1: Any, prefix: str) -> None:
    tc = _tc(server, make_l1(), prefix=prefix)
    good = bytes(encode_value(np.arange(10, dtype="<u2"))[0])
    raw.set(tc.redis_key("trunc"), good[:-1])
    raw.set(tc.redis_key("text"), b"not ours at all")
    raw.set(tc.redis_key("pickle"), pickle.dumps({"a": 1}))
    for k in ("trunc", "text", "pickle"):
        assert tc.get(k, "miss") == "miss"
    s = tc.stats()
    assert s["l2_corrupt"] == 3 and s["l2_hits"] == 0 and s["last_corrupt"]
    assert s["l2_available"]  # a bad value is not an outage
    raw.rpush(tc.redis_key("list"), b"x")  # WRONGTYPE error reply
    assert tc.get("list", "miss") == "miss"
    s = tc.stats()
    assert s["l2_errors"] == 1 and "WRONGTYPE" in str(s["last_error"]) and s["l2_available"]


@needs_redis
def test_serializer_through_redis(server: RedisServer, raw: redis.Redis, make_l1: Any,
                                  prefix: str) -> None:
    a = _tc(server, make_l1(), prefix=prefix, serializer=pickle)
    b = _tc(server, make_l1(), prefix=prefix, serializer=pickle)
    plain = _tc(server, make_l1(), prefix=prefix)
    a.set("d", {"x": [1, 2]})
    assert b.get("d") == {"x": [1, 2]}
    assert plain.get("d", "miss") == "miss" and plain.stats()["l2_corrupt"] == 1
    with pytest.raises(an.SerializationError) as info:
        plain.set("d", {"x": 1})
    assert info.value.code == "serialize.value_type"
    with pytest.raises(an.SerializationError):
        plain.set({1}, b"v")


@needs_redis
def test_constructor_validation(server: RedisServer, make_l1: Any) -> None:
    l1 = make_l1()
    with pytest.raises(an.ValidationError):
        an.TieredCache(l1, server.url, prefix="")
    with pytest.raises(an.ValidationError):
        an.TieredCache(l1, server.url, ttl=-1)
    with pytest.raises(an.ValidationError):
        an.TieredCache(l1, server.client(), timeout=0.1)
    with pytest.raises(an.ValidationError):
        an.TieredCache(l1, server.client(decode_responses=True))
    with pytest.raises(TypeError):
        an.TieredCache(l1, cast(Any, aredis.Redis(port=server.port)))
    with pytest.raises(TypeError):
        an.AsyncTieredCache(l1, cast(Any, server.client()))
    with pytest.raises(TypeError):
        an.TieredCache(l1, server.url, serializer=cast(Any, json.dumps))
    tc = an.TieredCache(l1, server.client(), prefix=b"bytes:")  # a client, as configured
    tc.set("k", b"v")
    assert tc.get("k") == b"v" and tc.redis_key("k") == b"bytes:s1:k"
    assert "bytes:" in repr(tc)


_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import amulet_native as an

    class L1(dict):
        def set(self, key, value, ttl=None):
            self[key] = value

    url, prefix, mode = sys.argv[1:4]
    tc = an.TieredCache(L1(), url, prefix=prefix, timeout=5)
    if mode == "write":
        tc.set(("arr", 1), np.arange(24, dtype=">f8").reshape(2, 3, 4))
        tc.set(("arr", 2), np.eye(3, dtype=bool)[:, ::2])
        tc.set(b"raw", bytes(range(256)))
        tc.set("text", "from child")
        print("ok")
    else:
        arr = tc.get(("mine", 1))
        print(json.dumps({
            "arr": arr.tolist(), "dtype": arr.dtype.str, "writeable": arr.flags.writeable,
            "bytes": tc.get(b"bytes").hex(), "text": tc.get("text"),
            "stats": tc.stats(),
        }))
""")


@needs_redis
def test_two_processes_share_entries(server: RedisServer, raw: redis.Redis, make_l1: Any,
                                     prefix: str) -> None:
    def child(mode: str) -> str:
        env = dict(os.environ, PYTHONHASHSEED=str(random.randrange(1, 2**31)))
        out = subprocess.run([sys.executable, "-c", _CHILD, server.url, prefix, mode], env=env,
                             capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, check=False)
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert child("write").strip() == "ok"
    tc = _tc(server, make_l1(), prefix=prefix)
    a1 = tc.get(("arr", 1))
    np.testing.assert_array_equal(a1, np.arange(24, dtype=">f8").reshape(2, 3, 4))
    assert a1.dtype.str == ">f8"
    np.testing.assert_array_equal(tc.get(("arr", 2)), np.eye(3, dtype=bool)[:, ::2])
    assert tc.get(b"raw") == bytes(range(256)) and tc.get("text") == "from child"

    tc.set(("mine", 1), np.arange(-5, 5, dtype="<i2").reshape(2, 5))
    tc.set(b"bytes", b"\x00\x01parent")
    tc.set("text", "from parent")
    got = json.loads(child("read"))
    assert got["arr"] == np.arange(-5, 5).reshape(2, 5).tolist() and got["dtype"] == "<i2"
    assert got["writeable"] is False
    assert bytes.fromhex(got["bytes"]) == b"\x00\x01parent" and got["text"] == "from parent"
    assert got["stats"]["l2_hits"] == 3 and got["stats"]["l2_corrupt"] == 0


@needs_redis
def test_killed_server_degrades_to_l1_and_recovers(own_server: RedisServer,
                                                   make_l1: Any) -> None:
    tc = an.TieredCache(make_l1(), own_server.url, timeout=0.5, backoff=0.3)
    tc.set("cached", b"in both tiers")
    own_server.kill()  # SIGKILL: connections reset, then refused

    assert tc.get("cached") == b"in both tiers"  # L1 keeps serving
    assert tc.get("uncached", "dflt") == "dflt"  # fails over to the default, no raise
    tc.set("new", b"written during the outage")
    assert tc.get("new") == b"written during the outage"
    tc.delete("cached")
    assert tc.clear() == 0
    s = tc.stats()
    assert s["l2_errors"] >= 1 and s["last_error"] and "Connection" in s["last_error"]
    assert not s["l2_available"] and s["l2_skipped"] >= 1  # back-off: L2 not even tried
    errors_before = s["l2_errors"] + s["l2_timeouts"]
    for _ in range(50):
        tc.get("uncached")
    s = tc.stats()
    assert s["l2_errors"] + s["l2_timeouts"] == errors_before and s["l2_skipped"] >= 50

    time.sleep(0.35)  # back-off over: the next call tries Redis again (still down)
    tc.get("uncached")
    assert tc.stats()["l2_errors"] + tc.stats()["l2_timeouts"] == errors_before + 1

    own_server.start()  # same port
    writer = own_server.client()
    writer.set(tc.redis_key("after"), bytes(encode_value(b"written after restart")[0]))
    time.sleep(0.35)
    assert tc.get("after") == b"written after restart"  # L2 used again: reconnected
    s = tc.stats()
    assert s["l2_available"] and s["l2_hits"] == 1
    tc.set("again", b"v")
    assert writer.exists(tc.redis_key("again"))
    writer.close()
    tc.close()


@needs_redis
def test_slow_server_takes_the_timeout_path(own_server: RedisServer, make_l1: Any) -> None:
    tc = an.TieredCache(make_l1(), own_server.url, timeout=0.1, backoff=0.2)
    tc.set("k", b"v")
    tc.l1.clear()
    admin = own_server.client()
    admin.execute_command("CLIENT", "PAUSE", 3000, "ALL")  # every command waits 3 s
    try:
        assert tc.get("k", "dflt") == "dflt"
        s = tc.stats()
        assert s["l2_timeouts"] == 1 and s["l2_errors"] == 0 and not s["l2_available"]
        assert "Timeout" in str(s["last_error"])
        tc.set("k2", b"v2")  # during the back-off: L1 only, no second timeout
        assert tc.get("k2") == b"v2" and tc.stats()["l2_timeouts"] == 1
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
    time.sleep(0.25)
    assert tc.get("k") == b"v" and tc.stats()["l2_hits"] == 1
    admin.close()
    tc.close()


@needs_redis
def test_threads_share_one_cache(server: RedisServer, raw: redis.Redis, make_l1: Any,
                                 prefix: str) -> None:
    tc = _tc(server, make_l1(max_items=16), prefix=prefix)
    gets_per_thread, threads = 150, 6
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(gets_per_thread):
                k = rng.randrange(40)
                if rng.random() < 0.3:
                    tc.set(k, np.full(8, k, dtype=np.int16))
                out = tc.get(k)
                assert out is None or (out.dtype == np.int16 and (out == k).all())
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    with switch_often():
        pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    assert not errors, errors[0]
    s = tc.stats()
    assert s["l1_hits"] + s["l1_misses"] == gets_per_thread * threads
    assert s["l1_misses"] == s["l2_hits"] + s["l2_misses"]
    assert s["l2_errors"] == s["l2_corrupt"] == 0


@needs_redis
def test_sync_cache_async_methods(server: RedisServer, raw: redis.Redis, make_l1: Any,
                                  prefix: str) -> None:
    tc = _tc(server, make_l1(), prefix=prefix)
    other = _tc(server, make_l1(), prefix=prefix)

    async def main() -> None:
        await tc.aset("k", np.ones((2, 2), np.float32))
        out = await other.aget("k")
        np.testing.assert_array_equal(out, np.ones((2, 2), np.float32))
        assert await other.aget("k") is out
        await tc.adelete("k")
        assert await tc.aget("k", "gone") == "gone"
        await tc.aset("j", b"1")
        assert await tc.aclear() == 1

    asyncio.run(main())
    assert other.stats()["l2_hits"] == 1 and other.stats()["l1_hits"] == 1


# ---- AsyncTieredCache -----------------------------------------------------------


@needs_redis
def test_async_cache_round_trip_and_sharing(server: RedisServer, raw: redis.Redis,
                                            make_l1: Any, prefix: str) -> None:
    sync = _tc(server, make_l1(), prefix=prefix)
    sync.set("from-sync", np.arange(5, dtype=">u4"))

    async def main() -> None:
        tc = an.AsyncTieredCache(make_l1(), server.url, prefix=prefix, ttl=60, timeout=2)
        out = await tc.aget("from-sync")
        np.testing.assert_array_equal(out, np.arange(5))
        assert out.dtype.str == ">u4" and not out.flags.writeable
        assert await tc.aget("from-sync") is out
        await tc.aset(("a", 1), "async text")
        await tc.aset("short", b"x", ttl=0.2)
        assert 0 < await tc.redis.pttl(tc.redis_key("short")) <= 200
        assert await tc.aget("missing", 0) == 0
        await tc.adelete("from-sync")
        s = tc.stats()
        assert (s["l1_hits"], s["l2_hits"], s["l2_misses"]) == (1, 1, 1)
        with pytest.raises(an.SerializationError):
            await tc.aset("bad", object())
        client = aredis.Redis(port=server.port)
        tc2 = an.AsyncTieredCache(make_l1(), client, prefix=prefix)
        assert await tc2.aget(("a", 1)) == "async text"
        assert await tc2.aclear() == 2
        await tc.aclose()
        await client.aclose()

    asyncio.run(main())
    assert sync.get("from-sync") is not None  # sync's own L1 still has it
    sync.l1.clear()
    assert sync.get("from-sync") is None and raw.dbsize() == 0


@needs_redis
def test_async_cache_survives_a_killed_server(own_server: RedisServer, make_l1: Any) -> None:
    async def main() -> None:
        tc = an.AsyncTieredCache(make_l1(), own_server.url, timeout=0.5, backoff=0.3)
        await tc.aset("k", b"v")
        own_server.kill()
        assert await tc.aget("k") == b"v"
        assert await tc.aget("other", "dflt") == "dflt"
        await tc.aset("n", b"1")
        await tc.adelete("k")
        assert await tc.aclear() == 0
        s = tc.stats()
        assert s["l2_errors"] >= 1 and not s["l2_available"] and s["l2_skipped"] >= 1
        own_server.start()
        w = aredis.Redis(port=own_server.port)
        await w.set(tc.redis_key("after"), bytes(encode_value("back")[0]))
        await asyncio.sleep(0.35)
        assert await tc.aget("after") == "back" and tc.stats()["l2_hits"] == 1
        await w.aclose()
        await tc.aclose()

    asyncio.run(main())


@needs_redis
def test_async_slow_server_times_out(own_server: RedisServer, make_l1: Any) -> None:
    admin = own_server.client()

    async def main() -> None:
        tc = an.AsyncTieredCache(make_l1(), own_server.url, timeout=0.1, backoff=5)
        await tc.aset("k", b"v")
        tc.l1.clear()
        admin.execute_command("CLIENT", "PAUSE", 3000, "ALL")
        try:
            assert await tc.aget("k", "dflt") == "dflt"
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
        s = tc.stats()
        assert s["l2_timeouts"] == 1 and not s["l2_available"]
        await tc.aclose()

    asyncio.run(main())
    admin.close()


# ---- the @cached protocol ---------------------------------------------------------


@needs_redis
def test_cached_decorator_uses_the_tiered_cache(server: RedisServer, raw: redis.Redis,
                                                make_l1: Any, prefix: str) -> None:
    cached = an.cached
    tc = _tc(server, make_l1(), prefix=prefix)
    calls: list[int] = []

    def _square(x: int) -> npt.NDArray[np.int64]:
        calls.append(x)
        return np.array([x * x])

    async def _double(x: int) -> bytes:
        calls.append(-x)
        return b"%d" % (2 * x)

    square: Callable[[int], npt.NDArray[np.int64]] = cached(cache=tc)(_square)
    double: Callable[[int], Any] = cached(cache=tc)(_double)

    assert int(square(3)[0]) == 9 and int(square(3)[0]) == 9
    assert asyncio.run(double(4)) == b"8" and asyncio.run(double(4)) == b"8"
    assert calls == [3, -4]
    assert raw.dbsize() == 2  # both results reached Redis
    s = tc.stats()
    assert s["l1_hits"] >= 2 and s["l2_errors"] == 0


@needs_redis
def test_cached_with_keyword_arguments(server: RedisServer, raw: redis.Redis, make_l1: Any,
                                       prefix: str) -> None:
    """@cached keys of keyword calls hold a marker object; encode_key refused it
    (SerializationError on every call of f(x=...) with a TieredCache)."""
    calls: list[tuple[int, int]] = []

    def _area(w: int, h: int = 1) -> int:
        calls.append((w, h))
        return w * h

    area = an.cached(cache=_tc(server, make_l1(), prefix=prefix))(_area)
    assert area(3, h=4) == 12 and area(3, h=4) == 12 and area(w=3, h=4) == 12
    assert calls == [(3, 4), (3, 4)]  # f(3, h=4) and f(w=3, h=4) are distinct keys
    assert raw.dbsize() == 2
    # a fresh L1 (another worker) finds the entry in Redis under the same key
    other = an.cached(cache=_tc(server, make_l1(), prefix=prefix))(_area)
    assert other(3, h=4) == 12 and calls == [(3, 4), (3, 4)]
    key = an._core.make_key((3,), {"h": 4}, False)
    assert encode_key(key) == b"(i3;Ks1:hi4;)"


@needs_redis
def test_cached_cold_miss_reads_redis_once(server: RedisServer, raw: redis.Redis, make_l1: Any,
                                           prefix: str) -> None:
    """A cold @cached call used to GET the key twice (before and after taking
    the single-flight slot): two round trips where one does."""
    tc = _tc(server, make_l1(), prefix=prefix)

    def _inc(x: int) -> int:
        return x + 1

    async def _ainc(x: int) -> int:
        return x + 1

    inc = an.cached(cache=tc)(_inc)
    ainc = an.cached(cache=tc)(_ainc)

    def gets() -> int:
        stats = raw.info("commandstats").get("cmdstat_get", {"calls": 0})
        return int(stats["calls"])

    raw.config_resetstat()
    assert inc(1) == 2
    assert gets() == 1 and tc.stats()["l1_misses"] == 1
    assert asyncio.run(ainc(10)) == 11
    assert gets() == 2 and tc.stats()["l1_misses"] == 2
    assert inc(1) == 2 and asyncio.run(ainc(10)) == 11 and gets() == 2  # L1 hits
