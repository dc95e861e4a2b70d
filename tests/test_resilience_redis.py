"""RedisBreakerStore against a real redis-server (tests/redis_server.py): two
processes share one breaker's state and open time, names are namespaced, and
a killed Redis leaves every breaker working on local state (counted)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_server import RedisServer, redis_server_binary

from amulet_native import resilience as rs
from amulet_native.errors import CircuitOpenError
from amulet_native.resilience import CircuitState

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    redis_server_binary() is None,
    reason="redis-server is not installed (Debian package redis-server)",
)

CHILD = r"""
import json, sys
from amulet_native import resilience as rs
url, prefix, action = sys.argv[1], sys.argv[2], sys.argv[3]
store = rs.RedisBreakerStore(url, prefix=prefix, sync_interval=0)
b = rs.CircuitBreaker("payments", window=4, minimum_calls=4, wait_in_open=60, store=store)
other = rs.CircuitBreaker("search", window=4, minimum_calls=4, wait_in_open=60, store=store)
out = {"state": b.state.name, "other": other.state.name}
try:
    b.call(lambda: 1)
    out["call"] = "ok"
except rs.CircuitOpenError as e:
    out["call"] = "open"
    out["retry_after"] = e.retry_after
if action == "reset":
    b.reset()
out["errors"] = store.errors
print(json.dumps(out))
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as srv:
        yield srv


def child(server: RedisServer, prefix: str, action: str = "look") -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, server.url, prefix, action],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def st(b: rs.CircuitBreaker) -> CircuitState:
    return b.state  # a call, so the checker does not narrow the property


def trip(b: rs.CircuitBreaker) -> None:
    for _ in range(4):
        with pytest.raises(ZeroDivisionError):
            b.call(lambda: 1 / 0)
        if st(b) == CircuitState.OPEN:
            return


def test_two_processes_share_one_breaker(server: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    store = rs.RedisBreakerStore(server.url, prefix=prefix, sync_interval=0)
    b = rs.CircuitBreaker("payments", window=4, minimum_calls=4, wait_in_open=60, store=store)
    trip(b)
    assert st(b) == CircuitState.OPEN
    raw = server.client()
    assert raw.hget(f"{prefix}payments", "state") == b"1"
    assert not raw.exists(f"{prefix}search")
    seen = child(server, prefix)
    assert seen["state"] == "OPEN" and seen["call"] == "open"
    assert seen["other"] == "CLOSED"  # another name, another key
    # the open time is shared: the child's wait ends when ours does
    assert 0 < float(str(seen["retry_after"])) <= 60.0
    assert abs(float(str(seen["retry_after"])) - (b.retry_after or 0)) < 10
    # the other process closes it; we follow on our next look
    seen = child(server, prefix, "reset")
    assert seen["errors"] == 0
    assert st(b) == CircuitState.CLOSED
    assert b.call(lambda: 2) == 2
    raw.close()


def test_redis_killed_mid_test_keeps_local_state(server: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    store = rs.RedisBreakerStore(server.url, prefix=prefix, sync_interval=0, socket_timeout=0.5)
    b = rs.CircuitBreaker("inference", window=4, minimum_calls=4, wait_in_open=60, store=store)
    assert b.call(lambda: 1) == 1
    server.kill()
    # still works, and trips, on local state; every Redis failure is counted
    assert b.call(lambda: 1) == 1
    trip(b)
    assert st(b) == CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        b.call(lambda: 1)
    errors = b.metrics().store_errors
    assert errors > 0 and store.errors == errors
    # Redis comes back (empty): the next transition is shared again
    server.start()
    b.reset()
    assert st(b) == CircuitState.CLOSED  # a look publishes what Redis missed
    raw = server.client()
    assert raw.hget(f"{prefix}inference", "state") == b"0"
    trip(b)
    assert raw.hget(f"{prefix}inference", "state") == b"1"
    raw.close()
