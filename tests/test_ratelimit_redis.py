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

from amulet_native.ratelimit import RateLimiter, RedisStore

REPO_ROOT = Path(__file__).resolve().parent.parent

needs_redis = pytest.mark.skipif(
    redis_server_binary() is None,
    reason="redis-server is not installed (Debian package redis-server; `make` installs it)",
)
pytestmark = needs_redis


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path / "redis")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


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
