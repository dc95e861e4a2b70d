"""TieredCache (L1 + Redis) against the usual hand-written Redis caching.

A real redis-server is started on a free loopback port for the module (the
tests' helper, ``tests/redis_server.py``); the benchmarks skip when the binary
is missing.  Values: a 768x512x3 uint8 array (1.1 MiB) and 1 KiB of bytes.

Operations: ``get`` served by L1; ``get`` from L2 (the L1 entry is dropped
before every call, so each call is a Redis GET plus decoding and the L1 fill);
``set`` (both tiers).  Peers:

- ``redis-py GET/SET + pickle``: ``pickle.loads(r.get(k))`` /
  ``r.set(k, pickle.dumps(v, protocol=5), px=...)``, no L1 (the same call in the
  L1 and L2 groups); paired with sync ``amulet_native``.
- ``amulet_native async``: AsyncTieredCache over ``redis.asyncio``, each call
  driven by ``loop.run_until_complete`` (paired with sync ``amulet_native``, so
  its ratio is the cost of the event loop round trip).
- ``cashews (redis)`` and ``cashews (redis, client_side)``: cashews' Redis
  backend (values pickled), the second with its client-side cache (an L1 kept
  coherent through Redis CLIENT TRACKING); driven the same way and paired with
  ``amulet_native async``.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import measure

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
from redis_server import RedisServer, redis_server_binary

import amulet_native as an

TTL = 600.0
VALUES = {
    "array 768x512x3 uint8": np.random.default_rng(0).integers(0, 256, (768, 512, 3), np.uint8),
    "bytes 1 KiB": bytes(range(256)) * 4,
}
OPS = ("get L1 hit", "get L2 hit (L1 miss)", "set both tiers")
SYNC = "amulet_native"
ASYNC = "amulet_native async"
REDIS_PY = "redis-py GET/SET + pickle"
CASHEWS = "cashews (redis)"
CASHEWS_CS = "cashews (redis, client_side)"
PEERS = (SYNC, ASYNC, REDIS_PY, CASHEWS, CASHEWS_CS)


def group_name(op: str, value: str) -> str:
    return f"tiered {op}: {value}"


def make_l1() -> Any:
    return an.Cache(max_items=256)


class Harness:
    """Every client of the module, on one server and one event loop."""

    def __init__(self, server: RedisServer) -> None:
        import redis
        import redis.asyncio as aredis
        from cashews import Cache as CashewsCache

        self.server = server
        self.loop = asyncio.new_event_loop()
        self.sync = an.TieredCache(make_l1(), server.url, prefix="bench:", ttl=TTL, timeout=5)
        self.raw = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5)

        async def make_async() -> an.AsyncTieredCache:
            return an.AsyncTieredCache(
                make_l1(), aredis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5),
                prefix="bench-async:", ttl=TTL,
            )

        self.async_tc = self.loop.run_until_complete(make_async())
        self.cashews = CashewsCache()
        self.cashews.setup(server.url)
        self.cashews_cs = CashewsCache()
        self.cashews_cs.setup(server.url, client_side=True)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.sync.close()
        self.raw.close()
        self.run(self.async_tc.aclose())
        self.run(self.cashews.close())
        self.run(self.cashews_cs.close())
        self.loop.close()

    def op(self, peer: str, op: str, value: Any, key: str) -> Callable[[Any], Any] | None:
        """fn(value) doing ``op`` for ``peer``, with the data in place; None if n/a."""
        if peer == SYNC:
            tc = self.sync
            tc.set(key, value)
            if op == "set both tiers":
                return lambda v: tc.set(key, v)
            if op == "get L1 hit":
                return lambda v: tc.get(key)
            rkey = tc.redis_key(key)
            return lambda v: (tc.l1.pop(rkey, None), tc.get(key))[1]
        if peer == ASYNC:
            atc = self.async_tc
            self.run(atc.aset(key, value))
            if op == "set both tiers":
                return lambda v: self.run(atc.aset(key, v))
            if op == "get L1 hit":
                return lambda v: self.run(atc.aget(key))
            arkey = atc.redis_key(key)
            return lambda v: (atc.l1.pop(arkey, None), self.run(atc.aget(key)))[1]
        if peer == REDIS_PY:
            r = self.raw
            rk = "redis-py:" + key
            r.set(rk, pickle.dumps(value, protocol=5), px=int(TTL * 1000))
            if op == "set both tiers":
                return lambda v: r.set(rk, pickle.dumps(v, protocol=5), px=int(TTL * 1000))
            return lambda v: pickle.loads(r.get(rk))  # type: ignore[arg-type]
        cache = self.cashews if peer == CASHEWS else self.cashews_cs
        ck = f"{peer}:{key}"
        self.run(cache.set(ck, value, expire=TTL))
        if op == "set both tiers":
            return lambda v: self.run(cache.set(ck, v, expire=TTL))
        if op == "get L2 hit (L1 miss)" and peer == CASHEWS_CS:
            return None  # its L1 cannot be bypassed for one key from outside
        return lambda v: self.run(cache.get(ck))


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp)) as server:
        h = Harness(server)
        try:
            yield h
        finally:
            h.close()


@pytest.mark.parametrize("value_name", list(VALUES))
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("peer", PEERS)
def test_tiered(benchmark: Any, harness: Harness, peer: str, op: str, value_name: str) -> None:
    value = VALUES[value_name]
    key = f"{op}:{value_name}"
    fn = harness.op(peer, op, value, key)
    if fn is None:
        pytest.skip(f"{peer}: not applicable to {op}")
    ref: Callable[[Any], Any] | None = None
    if peer in (ASYNC, REDIS_PY):
        ref = harness.op(SYNC, op, value, key)
    elif peer in (CASHEWS, CASHEWS_CS):
        ref = harness.op(ASYNC, op, value, key)
    out = measure(benchmark, fn, value, group=group_name(op, value_name), peer=peer,
                  kind="tiered", ref=ref)
    if op != "set both tiers":
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(out, value)
        else:
            assert out == value
    stats = harness.sync.stats()
    assert stats["l2_errors"] == stats["l2_timeouts"] == stats["l2_corrupt"] == 0
