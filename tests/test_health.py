"""amulet_native.health: every status path, thresholds, timeouts, hanging and
raising checks, TTL caching, concurrency, score/level, history/trend, alerts,
live/ready/startup semantics, application/health+json and the ASGI endpoint.

Time is injected (``clock=``/``wall=``) where a test depends on it; hanging
checks are released at the end of each test, and no test asserts on elapsed
time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import queue
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_server import RedisServer, redis_server_binary

from amulet_native import MemoryMonitor, ObjectPool, ValidationError, health
from amulet_native.health import HEALTH_JSON, HealthMonitor, Level, Observation


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def monitor(clock: Clock) -> Iterator[HealthMonitor]:
    m = HealthMonitor(clock=clock, wall=lambda: 1_700_000_000.0, timeout=5.0)
    yield m
    m.close()


def run(m: HealthMonitor, kind: str = "ready", **kw: Any) -> health.HealthReport:
    return asyncio.run(m.report(kind, **kw))


def statuses(report: health.HealthReport) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


# ---- status paths -------------------------------------------------------------


async def _async_warn() -> str:
    return "warn"


@pytest.mark.parametrize(
    ("fn", "want", "value"),
    [
        (lambda: None, "pass", None),
        (lambda: True, "pass", None),
        (lambda: False, "fail", None),
        (lambda: "warn", "warn", None),
        (lambda: "fail", "fail", None),
        (_async_warn, "warn", None),
        (lambda: Observation(3, status="warn", output="hm"), "warn", 3),
        (lambda: {"status": "pass", "observedValue": 7, "observedUnit": "ms"}, "pass", 7),
        (lambda: {"status": "bogus"}, "fail", None),
        (lambda: float("nan"), "fail", None),
        (lambda: object(), "fail", None),
        (lambda: 1 / 0, "fail", None),
    ],
)
def test_return_values_grade(monitor: HealthMonitor, fn: Any, want: str, value: Any) -> None:
    monitor.add_check("c:x", fn)
    r = run(monitor, verbose=True)
    assert r.checks[0].status == want and r.checks[0].observed_value == value
    assert r.status == want
    assert r.http_status == (503 if want == "fail" else 200)


def test_stop_iteration_is_a_fail_not_a_hang(monitor: HealthMonitor) -> None:
    empty: Iterator[int] = iter([])

    async def anext_() -> int:
        return next(empty)

    monitor.add_check("sync:x", lambda: next(empty), timeout=60)
    monitor.add_check("async:x", anext_, timeout=60)
    r = run(monitor)
    assert all("StopIteration" in c.output for c in r.checks) and r.status == "fail"


def test_raising_check_is_a_fail_with_its_error(monitor: HealthMonitor) -> None:
    def boom() -> None:
        raise ConnectionError("db unreachable")

    async def aboom() -> None:
        raise RuntimeError("kaput")

    monitor.add_check("db:connection", boom)
    monitor.add_check("cache:connection", aboom)
    r = run(monitor)
    outputs = {c.name: c.output for c in r.checks}
    assert outputs == {
        "db:connection": "ConnectionError: db unreachable",
        "cache:connection": "RuntimeError: kaput",
    }
    assert r.status == "fail" and r.level is Level.FAILED and r.score == 0


@pytest.mark.parametrize(
    ("value", "warn", "crit", "want"),
    [
        (10, 80, 95, "pass"),
        (80, 80, 95, "warn"),
        (95, 80, 95, "fail"),
        (99, None, 95, "fail"),
        (90, 80, None, "warn"),
        # lower is worse when crit < warn (e.g. free space, hit ratio)
        (50, 20, 10, "pass"),
        (20, 20, 10, "warn"),
        (5, 20, 10, "fail"),
    ],
)
def test_thresholds(
    monitor: HealthMonitor, value: float, warn: float | None, crit: float | None, want: str
) -> None:
    monitor.add_check("disk:free", lambda: value, warn=warn, crit=crit, unit="percent")
    r = run(monitor, verbose=True)
    c = r.checks[0]
    assert (c.status, c.observed_value, c.observed_unit) == (want, value, "percent")


def test_explicit_status_and_threshold_take_the_worse(monitor: HealthMonitor) -> None:
    monitor.add_check("q:depth", lambda: Observation(500, status="warn"), warn=10, crit=100)
    assert run(monitor).status == "fail"


def test_non_critical_fail_only_warns(monitor: HealthMonitor) -> None:
    monitor.add_check("optional:thing", lambda: False, critical=False)
    monitor.add_check("core:thing", lambda: True)
    r = run(monitor)
    assert r.status == "warn" and r.http_status == 200


# ---- timeouts and hangs -------------------------------------------------------


def test_hanging_checks_fail_and_are_not_piled_up(monitor: HealthMonitor, clock: Clock) -> None:
    release = threading.Event()
    calls = {"sync": 0, "async": 0}

    def hang() -> None:
        calls["sync"] += 1
        release.wait(30)

    async def ahang() -> None:
        calls["async"] += 1
        await asyncio.Event().wait()

    monitor.add_check("sync:hang", hang, timeout=0.05)
    monitor.add_check("async:hang", ahang, timeout=0.05)
    monitor.add_check("fine:one", lambda: True)
    try:
        r = run(monitor)
        assert statuses(r) == {"sync:hang": "fail", "async:hang": "fail", "fine:one": "pass"}
        assert all("timed out after 0.05 s" in c.output for c in r.checks if c.status == "fail")
        # the sync check is still running: the next probe reports it at once
        clock.t += 1.0
        r2 = run(monitor)
        out = {c.name: c.output for c in r2.checks}
        assert "still running" in out["sync:hang"]
        assert calls["sync"] == 1
    finally:
        release.set()


def test_checks_run_concurrently(monitor: HealthMonitor) -> None:
    barrier = threading.Barrier(3, timeout=10)
    a_in, b_in = asyncio.Event(), asyncio.Event()

    async def a() -> bool:
        a_in.set()
        await asyncio.wait_for(b_in.wait(), 10)
        return True

    async def b() -> bool:
        b_in.set()
        await asyncio.wait_for(a_in.wait(), 10)
        return True

    for i in range(3):
        monitor.add_check(f"sync:{i}", lambda: barrier.wait() >= 0, timeout=20)
    monitor.add_check("async:a", a, timeout=20)
    monitor.add_check("async:b", b, timeout=20)
    # sequential execution would time out the barrier and the events
    assert run(monitor).status == "pass"


def test_ttl_caches_results(monitor: HealthMonitor, clock: Clock) -> None:
    calls = []
    monitor.add_check("slow:dep", lambda: calls.append(1), ttl=10.0)
    run(monitor)
    clock.t += 5
    r = run(monitor)
    assert len(calls) == 1 and r.checks[0].cached
    clock.t += 5
    r = run(monitor)
    assert len(calls) == 2 and not r.checks[0].cached


# ---- score, level, history, trend ---------------------------------------------


@pytest.mark.parametrize(
    ("results", "weights", "score", "level", "status"),
    [
        (["pass"] * 4, [1, 1, 1, 1], 100.0, Level.EXCELLENT, "pass"),
        (["pass", "pass", "pass", "warn"], [1, 1, 1, 1], 87.5, Level.GOOD, "warn"),
        (["pass", "warn"], [1, 1], 75.0, Level.GOOD, "warn"),
        (["warn", "warn"], [1, 1], 50.0, Level.WARNING, "warn"),
        (["pass", "warn"], [1, 9], 55.0, Level.WARNING, "warn"),
        (["warn", "fail"], [3, 1], 37.5, Level.FAILED, "fail"),
        (["pass", "pass"], [1, 0], 100.0, Level.EXCELLENT, "pass"),
    ],
)
def test_score_and_level(
    monitor: HealthMonitor,
    results: list[str],
    weights: list[float],
    score: float,
    level: Level,
    status: str,
) -> None:
    for i, (res, w) in enumerate(zip(results, weights, strict=True)):
        monitor.add_check(f"c:{i}", functools.partial(str, res), weight=w)
    r = run(monitor)
    assert (r.score, r.level, r.status) == (score, level, status)


def test_critical_level_without_fail(monitor: HealthMonitor) -> None:
    monitor.add_check("a:x", lambda: "warn")
    monitor.add_check("b:x", lambda: False, critical=False)
    r = run(monitor)
    assert r.status == "warn" and r.score == 25.0 and r.level is Level.CRITICAL


def test_history_is_bounded_and_trends(clock: Clock) -> None:
    m = HealthMonitor(clock=clock, history=5)
    values = iter([10, 20, 30, 40, 50, 60, 70, 80])
    m.add_check("q:depth", lambda: next(values), warn=100, crit=200)
    for _ in range(8):
        run(m)
    hist = m.history("q:depth")
    assert [h.observed_value for h in hist] == [40, 50, 60, 70, 80]
    assert m.trend("q:depth") == "degrading"  # rising toward the thresholds
    m.remove_check("q:depth")

    states = iter(["fail", "fail", "warn", "pass", "pass", "pass"])
    m.add_check("dep:x", lambda: next(states))
    for _ in range(6):
        run(m)
    assert m.trend("dep:x") == "improving"
    m.remove_check("dep:x")
    m.add_check("flat:x", lambda: 5.0)
    for _ in range(4):
        run(m)
    assert m.trend("flat:x") == "stable"
    m.add_check("new:x", lambda: 1)
    assert m.trend("new:x") == "unknown"
    m.close()


# ---- alerts -------------------------------------------------------------------


def test_alerts_on_transitions(monitor: HealthMonitor) -> None:
    seq = iter(["pass", "pass", "warn", "fail", "fail", "pass"])
    seen: list[tuple[str, str | None, str]] = []
    async_seen: list[int] = []

    async def acb(alert: health.Alert) -> None:
        async_seen.append(alert.id)

    def bad_cb(alert: health.Alert) -> None:
        raise RuntimeError("callback bug")

    monitor.on_alert(lambda a: seen.append((a.check, a.previous, a.current)))
    monitor.on_alert(acb)
    monitor.on_alert(bad_cb)
    monitor.add_check("dep:x", lambda: next(seq))

    async def probes() -> None:
        for _ in range(6):
            await monitor.report("ready")
        await asyncio.sleep(0)  # let the async callbacks run

    asyncio.run(probes())
    assert [s for s in seen if s[0] == "dep:x"] == [
        ("dep:x", "pass", "warn"),
        ("dep:x", "warn", "fail"),
        ("dep:x", "fail", "pass"),
    ]
    assert ("overall:ready", "pass", "warn") in seen
    assert len(async_seen) == len(seen)
    assert monitor.callback_errors == len(seen)
    active = monitor.alerts()
    assert len(active) == len(seen)
    assert monitor.acknowledge(active[0].id) and not monitor.acknowledge(10**9)
    assert len(monitor.alerts()) == len(seen) - 1
    assert len(monitor.alerts(include_acknowledged=True)) == len(seen)


# ---- kinds --------------------------------------------------------------------


def test_live_ready_startup(monitor: HealthMonitor) -> None:
    loaded = {"model": False}
    monitor.add_check("process:alive", lambda: True, kind="liveness")
    monitor.add_check("redis:ping", lambda: False, kind="readiness")
    monitor.add_check("model:loaded", lambda: loaded["model"], kind="startup")

    live = run(monitor, "live")
    assert live.status == "pass" and [c.name for c in live.checks] == ["process:alive"]

    ready = run(monitor, "ready")
    assert statuses(ready) == {"redis:ping": "fail", "server:started": "fail"}

    assert run(monitor, "startup").status == "fail"
    loaded["model"] = True
    assert run(monitor, "startup").status == "pass" and monitor.started
    loaded["model"] = False  # start-up checks do not run again once passed
    assert run(monitor, "startup").status == "pass"

    ready = run(monitor, "ready", exclude=["redis"])
    assert ready.status == "pass" and ready.checks == ()
    monitor.set_draining(True)
    ready = run(monitor, "ready", exclude=["redis:ping"])
    assert statuses(ready) == {"server:draining": "fail"}
    assert run(monitor, "live").status == "pass"  # draining never restarts a pod
    monitor.set_draining(False)
    assert len(run(monitor, "all").checks) == 3


def test_require_start_and_mark_started(clock: Clock) -> None:
    m = HealthMonitor(clock=clock, require_start=True)
    assert run(m, "ready").status == "fail"
    m.mark_started()
    assert run(m, "ready").status == "pass"
    m.close()


def test_liveness_refuses_dependency_checks(monitor: HealthMonitor) -> None:
    with pytest.raises(ValidationError) as info:
        monitor.add_check("redis:responseTime", health.redis_ping("redis://x"), kind="liveness")
    assert info.value.code == "health.liveness_dependency"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "sometimes"},
        {"timeout": 0},
        {"timeout": float("nan")},
        {"ttl": -1},
        {"weight": -1},
        {"warn": float("inf")},
    ],
)
def test_bad_check_config(monitor: HealthMonitor, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        monitor.add_check("c:x", lambda: True, **kwargs)
    assert info.value.code == "health.config"


def test_bad_report_kind(monitor: HealthMonitor) -> None:
    with pytest.raises(ValidationError):
        run(monitor, "sideways")
    with pytest.raises(ValidationError):
        monitor.add_check("c:x", "not callable")  # type: ignore[arg-type]
    monitor.add_check("c:x", lambda: True)
    with pytest.raises(ValidationError):
        monitor.add_check("c:x", lambda: True)


# ---- application/health+json --------------------------------------------------


def test_health_json_fields(clock: Clock) -> None:
    m = HealthMonitor(clock=clock, service_id="upload-api", version="1.4", description="uploads")
    m.add_check("memory:utilization", lambda: 42.5, unit="percent", warn=80, crit=95)
    m.add_check("redis:responseTime", lambda: Observation(120.0, unit="ms"), warn=100, crit=1000)
    m.add_check("disk:utilization", lambda: 10, component_type="system")

    body = run(m, verbose=True).to_json()
    assert body["status"] == "warn"
    assert body["serviceId"] == "upload-api" and body["version"] == "1.4"
    assert body["description"] == "uploads"
    assert body["output"].startswith("redis:responseTime")
    assert set(body["checks"]) == {"memory:utilization", "redis:responseTime", "disk:utilization"}
    mem = body["checks"]["memory:utilization"][0]
    assert mem["observedValue"] == 42.5 and mem["observedUnit"] == "percent"
    assert mem["status"] == "pass"
    assert dt.datetime.fromisoformat(mem["time"].replace("Z", "+00:00")).tzinfo is not None
    assert body["checks"]["disk:utilization"][0]["componentType"] == "system"
    assert body["checks"]["redis:responseTime"][0]["status"] == "warn"
    assert body["level"] == "GOOD" and 0 <= body["score"] <= 100
    assert json.loads(run(m).body())["checks"].keys() == {"redis:responseTime"}  # not verbose
    excluded = run(m, exclude="redis", verbose=True).to_json()
    assert excluded["status"] == "pass" and "redis:responseTime" not in excluded["checks"]
    assert "output" not in excluded
    m.close()


async def _asgi_get(app: Any, query: bytes) -> tuple[int, dict[bytes, bytes], dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    await app({"type": "http", "method": "GET", "path": "/", "query_string": query}, receive, send)
    start, body = sent
    return start["status"], dict(start["headers"]), json.loads(body["body"])


def test_asgi_endpoint(monitor: HealthMonitor) -> None:
    monitor.add_check("db:ping", lambda: False)
    monitor.add_check("cache:ping", lambda: True)
    app = monitor.asgi("ready")
    status, hdrs, body = asyncio.run(_asgi_get(app, b"verbose"))
    assert status == 503 and hdrs[b"content-type"] == HEALTH_JSON.encode()
    assert set(body["checks"]) == {"db:ping", "cache:ping"}
    status, _, body = asyncio.run(_asgi_get(app, b"exclude=db&exclude=other"))
    assert status == 200 and body["status"] == "pass" and "checks" not in body


# ---- built-in checks ----------------------------------------------------------


def test_builtin_checks(monitor: HealthMonitor, tmp_path: Path) -> None:
    q: queue.Queue[int] = queue.Queue()
    for i in range(7):
        q.put(i)
    pool = ObjectPool(lambda: object(), max_size=2)
    monitor.add_check("memory:utilization", health.memory_pressure(MemoryMonitor(0.999, 1.0)))
    monitor.add_check("disk:utilization", health.disk_space(str(tmp_path), warn=100, crit=100))
    monitor.add_check("eventloop:lag", health.event_loop_lag(), kind="liveness")
    monitor.add_check("queue:depth", health.queue_depth(q, warn=5, crit=50))
    monitor.add_check("pool:state", health.object_pools(pool))
    monitor.add_check("circuit:state", health.circuit_breakers())
    r = run(monitor, "all", verbose=True)
    got = {c.name: c for c in r.checks}
    assert got["memory:utilization"].observed_unit == "percent"
    assert 0 < float(got["memory:utilization"].observed_value or 0) < 100
    assert got["disk:utilization"].status == "pass"
    assert got["eventloop:lag"].observed_unit == "ms" and got["eventloop:lag"].status == "pass"
    assert got["queue:depth"].status == "warn" and got["queue:depth"].observed_value == 7
    assert got["pool:state"].status == "pass" and got["pool:state"].observed_value == 0
    circuit = got["circuit:state"]
    try:
        import amulet_native.resilience  # noqa: F401
    except ImportError:
        assert circuit.status == "warn" and "resilience" in circuit.output
    else:
        assert circuit.status in ("pass", "warn", "fail")
    pool.close()


@pytest.mark.skipif(redis_server_binary() is None, reason="redis-server is not installed")
def test_redis_ping(monitor: HealthMonitor, tmp_path: Path) -> None:
    srv = RedisServer(tmp_path / "redis").start()
    try:
        monitor.add_check("redis:responseTime", health.redis_ping(srv.url, warn=None, crit=None))
        r = run(monitor, verbose=True)
        assert r.status == "pass" and r.checks[0].observed_unit == "ms"
        srv.kill()
        r = run(monitor)
        assert r.status == "fail" and r.checks[0].output
    finally:
        srv.stop()


def test_circuit_breakers_from_the_registry(
    monitor: HealthMonitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry shape of amulet_native.resilience (branch resilience):
    ``breakers() -> {name: breaker}`` with an IntEnum ``state``.  The module is
    stood in for here only because that branch is not merged into this one."""
    import enum
    import types

    class CircuitState(enum.IntEnum):
        CLOSED = 0
        OPEN = 1
        HALF_OPEN = 2
        FORCED_OPEN = 3

    registry: dict[str, Any] = {}
    fake = types.ModuleType("amulet_native.resilience")
    fake.breakers = lambda: dict(registry)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "amulet_native.resilience", fake)
    monitor.add_check("circuit:state", health.circuit_breakers())
    monitor.add_check("circuit:model", health.circuit_breakers(["model"]))

    def breaker(state: CircuitState) -> Any:
        return types.SimpleNamespace(state=state)

    registry.update(db=breaker(CircuitState.CLOSED), model=breaker(CircuitState.CLOSED))
    assert run(monitor).status == "pass"
    registry["db"] = breaker(CircuitState.HALF_OPEN)
    r = run(monitor, verbose=True)
    assert statuses(r) == {"circuit:state": "warn", "circuit:model": "pass"}
    registry["model"] = breaker(CircuitState.FORCED_OPEN)
    r = run(monitor, verbose=True)
    assert statuses(r) == {"circuit:state": "fail", "circuit:model": "fail"}
    assert {c.name: c.observed_value for c in r.checks} == {"circuit:state": 2, "circuit:model": 1}
    assert "open: model" in r.checks[0].output and "half-open: db" in r.checks[0].output
