"""RedisStore against a real redis-server (tests/redis_server.py): the same
decisions as in process, one EVALSHA per check, TTLs set by the script, 4
processes sharing one limit, SCRIPT FLUSH and a killed and restarted server
(the NOSCRIPT path), on_store_error and its counter, the async client."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis_server import RedisServer, redis_server_binary

from amulet_native.ratelimit import Policy, RateLimiter, RedisStore

REPO_ROOT = Path(__file__).resolve().parent.parent

needs_redis = pytest.mark.skipif(
    redis_server_binary() is None,
    reason="redis-server is not installed (Debian package redis-server; `make` installs it)",
)
pytestmark = needs_redis


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as srv:
        yield srv


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as srv:
        yield srv


@pytest.fixture
def raw(server: RedisServer) -> Iterator[redis.Redis]:
    client = server.client()
    yield client
    client.close()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


def _calls(client: redis.Redis, command: str) -> int:
    stats = client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def test_decisions_match_the_memory_store(server: RedisServer, prefix: str) -> None:
    store = RedisStore(server.url, prefix=prefix, timeout=2.0)
    limiter = RateLimiter(["5/hour", "3/minute;burst=3"], store=store)
    memory = RateLimiter(["5/hour", "3/minute;burst=3"])
    for _ in range(5):
        d, m = limiter.check("k"), memory.check("k")
        assert (d.allowed, d.remaining, d.policy, d.limit) == (
            m.allowed,
            m.remaining,
            m.policy,
            m.limit,
        )
        assert d.reset_after == pytest.approx(m.reset_after, abs=0.5)
        assert d.retry_after == pytest.approx(m.retry_after, abs=0.5)
        assert d.remaining >= 0 and d.retry_after >= 0 and d.reset_after >= 0
    assert limiter.store_errors == 0
    store.close()


def test_ttl_is_set_by_the_script_and_peek_writes_nothing(
    server: RedisServer, raw: redis.Redis, prefix: str
) -> None:
    store = RedisStore(server.url, prefix=prefix, timeout=2.0)
    limiter = RateLimiter("10/minute", store=store)
    limiter.peek("p")
    assert raw.keys(f"{prefix}*") == []
    limiter.check("k", cost=3)
    key = f"{prefix}{{k}}:10/minute".encode()
    ttl = raw.pttl(key)
    assert 0 < ttl <= 18_000  # 3 requests at 6 s each
    limiter.reset("k")
    assert raw.exists(key) == 0
    store.close()


def test_one_evalsha_per_check(server: RedisServer, raw: redis.Redis, prefix: str) -> None:
    store = RedisStore(server.url, prefix=prefix, timeout=2.0)
    limiter = RateLimiter(["100/second", "1000/hour"], store=store)
    limiter.check("warm")
    before = {c: _calls(raw, c) for c in ("evalsha", "eval", "script|load", "get", "set")}
    for i in range(50):
        limiter.check(f"k{i % 5}")
    after = {c: _calls(raw, c) for c in ("evalsha", "eval", "script|load", "get", "set")}
    assert after["evalsha"] - before["evalsha"] == 50
    assert after["eval"] == before["eval"] and after["script|load"] == before["script|load"]
    # inside the script: one GET and one SET per policy
    assert after["get"] - before["get"] == 100 and after["set"] - before["set"] == 100
    store.close()


def test_script_flush_takes_the_noscript_path(
    server: RedisServer, raw: redis.Redis, prefix: str
) -> None:
    store = RedisStore(server.url, prefix=prefix, timeout=2.0)
    limiter = RateLimiter("3/hour", store=store)
    assert limiter.check("k").remaining == 2
    raw.script_flush()
    loads = _calls(raw, "script|load")
    assert limiter.check("k").remaining == 1
    assert _calls(raw, "script|load") == loads + 1
    assert limiter.store_errors == 0
    store.close()


_CHILD = textwrap.dedent(
    """
    import sys, time
    from amulet_native.ratelimit import RateLimiter, RedisStore
    url, prefix, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    limiter = RateLimiter("500/day", store=RedisStore(url, prefix=prefix, timeout=5.0))
    while time.time() < start:
        time.sleep(0.001)
    admitted = sum(limiter.check("shared").allowed for _ in range(300))
    print(admitted, limiter.store_errors)
    """
)


def test_four_processes_admit_exactly_the_limit(server: RedisServer, prefix: str) -> None:
    start = time.time() + 1.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, server.url, prefix, str(start)],
            cwd=REPO_ROOT,
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        admitted, errors = map(int, out.split())
        assert errors == 0
        results.append(admitted)
    assert sum(results) == 500


def test_killed_and_restarted_server(own_server: RedisServer) -> None:
    store = RedisStore(own_server.url, timeout=0.5, retry_interval=0.2)
    allow = RateLimiter("3/hour", store=store)
    deny = RateLimiter("3/hour;name=strict", store=store, on_store_error="deny")
    assert allow.check("k").remaining == 2
    assert deny.check("k").remaining == 2

    own_server.kill()
    down = [allow.check("k") for _ in range(5)]
    assert all(d.allowed for d in down)  # fail open
    refused = [deny.check("k") for _ in range(5)]
    assert not any(d.allowed for d in refused) and all(d.retry_after > 0 for d in refused)
    assert allow.store_errors == 5 and deny.store_errors == 5

    own_server.start()  # same port, empty: no script cached, no TATs
    time.sleep(store.retry_interval)  # the store skips Redis for this long after a failure
    d = allow.check("k")
    assert allow.store_errors == 5  # a real decision: Redis is used again
    assert d.remaining == 2  # the restarted server lost the old TAT
    assert deny.check("k").remaining == 2 and deny.store_errors == 5
    store.close()


def test_async_client(server: RedisServer, prefix: str) -> None:
    store = RedisStore(server.url, prefix=prefix, timeout=2.0)
    limiter = RateLimiter("2/hour", store=store)

    async def main() -> list[int]:
        got = [(await limiter.acheck("a")).remaining, (await limiter.apeek("a", 0)).remaining]
        got.append(int((await limiter.acheck("a")).allowed))
        got.append(int((await limiter.acheck("a")).allowed))
        # the loop ends with the client still connected
        return got

    assert asyncio.run(main()) == [1, 1, 1, 0]
    # sync and async share the keys; another event loop gets its own client

    async def again() -> bool:
        try:
            return (await limiter.acheck("a")).allowed
        finally:
            await store.aclose()

    assert asyncio.run(again()) is False
    assert limiter.store_errors == 0
    assert not limiter.check("a").allowed
    store.close()


def test_async_store_error_is_counted(tmp_path: Path) -> None:
    if redis_server_binary() is None:
        pytest.skip("no redis-server")
    srv = RedisServer(tmp_path / "r")  # never started: connection refused
    store = RedisStore(srv.url, timeout=0.2)
    limiter = RateLimiter("1/hour", store=store, on_store_error="deny")

    async def main() -> bool:
        return (await limiter.acheck("k")).allowed

    assert asyncio.run(main()) is False
    assert limiter.store_errors == 1


def test_bad_store_arguments() -> None:
    from amulet_native import ValidationError

    with pytest.raises(ValidationError):
        RedisStore("http://example.com")
    with pytest.raises(ValidationError):
        RedisStore("redis://x", timeout=-1)
    with pytest.raises(ValidationError):
        RateLimiter("1/second", store=RedisStore("redis://x"), clock=time.monotonic)


@pytest.mark.parametrize(
    "policy",
    [
        # 10 MB/s of uploads: T = 100 ns
        Policy("upload", limit=10_000_000, period=1.0, unit="content-bytes"),
        # T = 1500 ns: not a whole number of microseconds
        Policy("odd", limit=666_667, period=1.0),
    ],
)
def test_sub_microsecond_intervals_keep_the_stated_rate(
    server: RedisServer, prefix: str, policy: Policy
) -> None:
    """review-12: the script counted in whole microseconds, T rounded up: a
    10 MB/s byte quota was enforced as 1 MB/s in Redis (10 MB/s in memory),
    666667/s as 500000/s.  It now counts in nanoseconds like the C core."""
    store = RedisStore(server.url, prefix=prefix, timeout=2.0)
    limiter = RateLimiter([policy], store=store)
    memory = RateLimiter([policy])
    for cost in (1000, 1, 4321):
        d, m = limiter.check("k", cost), memory.check("k", cost)
        assert d.allowed and m.allowed
    # the fresh key's reset_after is exactly the booked cost times T
    fresh_d, fresh_m = limiter.peek("fresh", 1000), memory.peek("fresh", 1000)
    assert fresh_d.reset_after == pytest.approx(fresh_m.reset_after, rel=1e-9)
    assert fresh_d.reset_after == pytest.approx(1000 * policy.interval_ns / 1e9, rel=1e-9)
    assert fresh_d.remaining == fresh_m.remaining
    store.close()


def test_reset_on_a_dead_server_is_a_typed_error(tmp_path: Path) -> None:
    """review-12: reset() on an unreachable Redis raised redis' own
    ConnectionError (not an AmuletError), bypassing the store's down marker."""
    from amulet_native import NetworkError

    srv = RedisServer(tmp_path / "r")  # never started
    store = RedisStore(srv.url, timeout=0.2)
    limiter = RateLimiter("1/hour", store=store)
    with pytest.raises(NetworkError) as info:
        limiter.reset("k")
    assert info.value.code == "ratelimit.store"
    store.close()


def test_foreign_or_future_tat_is_bounded(
    server: RedisServer, raw: redis.Redis, prefix: str
) -> None:
    """review-12: a TAT far ahead (Redis' clock stepped back after a failover)
    locked the key out until the clock caught up, and a non-numeric value made
    the script error, which marked the whole store down (every key then
    followed on_store_error).  Now: one burst window at most, garbage = fresh."""
    store = RedisStore(server.url, prefix=prefix, timeout=2.0)
    limiter = RateLimiter("10/second", store=store, on_store_error="deny")
    key = f"{prefix}{{k}}:10/second".encode()
    raw.set(key, "99999999999999999999")  # year 5138
    d = limiter.check("k")
    assert not d.allowed and 0 < d.retry_after <= 1.0 and d.reset_after <= 1.0
    assert int(raw.get(key) or 0) < 99999999999999999999  # pulled back to now + tau
    raw.set(key, "not a time")
    assert limiter.check("k").allowed and limiter.store_errors == 0
    store.close()


def test_store_error_decisions_agree_with_their_headers(tmp_path: Path) -> None:
    """review-12: the fallback decisions said reset_after=0: a denial sent
    ``RateLimit: ...;r=0;t=0`` and an X-RateLimit-Reset of now together with
    ``Retry-After: 1``, and an allowance booked cost units that reset in 0 s."""
    from amulet_native.ratelimit import headers

    srv = RedisServer(tmp_path / "r")  # never started
    store = RedisStore(srv.url, timeout=0.2)
    deny = RateLimiter("5/second", store=store, on_store_error="deny")
    allow = RateLimiter("5/second", store=store)
    d = deny.check("k")
    h = headers(d, now=1000.0)
    assert not d.allowed and d.reset_after >= d.retry_after > 0
    assert int(h["X-RateLimit-Reset"]) >= 1000 + int(h["Retry-After"])
    assert h["RateLimit"].endswith(f"t={h['Retry-After']}")
    a = allow.check("k", 2)
    assert a.allowed and a.remaining == 3 and a.reset_after == pytest.approx(0.4)
    assert deny.store_errors == 1 and allow.store_errors == 1
