"""Health monitoring: checks with timeouts, caches, weights and thresholds;
live/ready/startup reports as ``application/health+json``.

A check is any sync or async callable (or one of the built-ins below).  It may
return nothing (pass), a bool, "pass"/"warn"/"fail", a number (compared with the
check's ``warn``/``crit`` thresholds) or an :class:`Observation`; raising, or
running past its timeout, makes it a ``fail`` with the error as output: a
report never fails because a check did.  Checks run concurrently, each at most
once per ``ttl`` seconds (a slow dependency is not called by every probe) and
never twice at once (a hung check is reported, not piled up)::

    from amulet_native import health

    monitor = health.HealthMonitor(service_id="upload-api", version="1.4.0")
    monitor.add_check("redis:responseTime", health.redis_ping(REDIS_URL), ttl=2.0)
    monitor.add_check("memory:utilization", health.memory_pressure(), kind="liveness")
    monitor.add_check("model:loaded", lambda: model is not None, kind="startup")

    report = await monitor.report("ready", verbose=True)
    report.http_status, report.to_json()      # 200 | 503, the health+json body
    app.mount("/readyz", monitor.asgi("ready"))  # ?verbose, ?exclude=redis

Kubernetes semantics: ``live`` runs only liveness checks (no dependencies: an
outage of Redis must not restart every pod); ``ready`` runs the readiness
checks and fails while draining or before start-up completed; ``startup``
runs the start-up checks until they pass once (or ``mark_started()``).  Each
report has an overall status, a 0-100 weighted score and a level (EXCELLENT,
GOOD, WARNING, CRITICAL, FAILED); every check keeps a bounded history with a
trend, and status transitions raise alerts (callbacks, acknowledgement).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as _dt
import enum
import functools
import importlib
import inspect
import itertools
import json
import math
import shutil
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import parse_qs

from .errors import ValidationError

__all__ = [
    "HEALTH_JSON",
    "Alert",
    "BuiltinCheck",
    "CheckResult",
    "HealthMonitor",
    "HealthReport",
    "Level",
    "Observation",
    "circuit_breakers",
    "disk_space",
    "event_loop_lag",
    "memory_pressure",
    "object_pools",
    "queue_depth",
    "redis_ping",
]

HEALTH_JSON = "application/health+json"

Status = Literal["pass", "warn", "fail"]
Kind = Literal["liveness", "readiness", "startup"]
_RANK: dict[str, int] = {"pass": 0, "warn": 1, "fail": 2}
_SCORE: dict[str, float] = {"pass": 100.0, "warn": 50.0, "fail": 0.0}
_KINDS: dict[str, tuple[str, ...]] = {
    "live": ("liveness",),
    "liveness": ("liveness",),
    "ready": ("readiness",),
    "readiness": ("readiness",),
    "startup": ("startup",),
    "all": ("liveness", "readiness", "startup"),
}


class Level(str, enum.Enum):
    """The original system's health level, from the score and the status."""

    EXCELLENT = "EXCELLENT"
    GOOD = "GOOD"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"
    FAILED = "FAILED"


def level_for(status: str, score: float) -> Level:
    """FAILED when the status is fail; else by score: >= 90 EXCELLENT, >= 75
    GOOD, >= 50 WARNING, below CRITICAL."""
    if status == "fail":
        return Level.FAILED
    if score >= 90:
        return Level.EXCELLENT
    if score >= 75:
        return Level.GOOD
    if score >= 50:
        return Level.WARNING
    return Level.CRITICAL


@dataclass(frozen=True)
class Observation:
    """What a check may return: a measured ``value`` (compared with the check's
    thresholds), an explicit ``status`` (the worse of the two wins), ``output``
    text and the ``unit`` of the value."""

    value: float | int | str | None = None
    status: Status | None = None
    output: str = ""
    unit: str | None = None


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome at ``time`` (wall-clock epoch seconds)."""

    name: str
    status: Status
    observed_value: float | int | str | None
    observed_unit: str | None
    time: float
    output: str
    duration: float
    cached: bool = False
    component_type: str | None = None

    @functools.cached_property
    def iso_time(self) -> str:
        """``time`` as RFC 3339 UTC (computed once)."""
        return _iso(self.time)

    def to_json(self) -> dict[str, Any]:
        """The draft-inadarei check object."""
        out: dict[str, Any] = {}
        if self.component_type:
            out["componentType"] = self.component_type
        if self.observed_value is not None:
            out["observedValue"] = self.observed_value
        if self.observed_unit:
            out["observedUnit"] = self.observed_unit
        out["status"] = self.status
        out["time"] = self.iso_time
        if self.output:
            out["output"] = self.output
        return out


@dataclass
class Alert:
    """A status transition of one check (or of a report, ``check="overall:ready"``)."""

    id: int
    check: str
    previous: Status | None
    current: Status
    time: float
    output: str
    acknowledged: bool = False


@dataclass(frozen=True)
class HealthReport:
    """The result of :meth:`HealthMonitor.report`."""

    kind: str
    status: Status
    score: float
    level: Level
    checks: tuple[CheckResult, ...]
    time: float
    verbose: bool = False
    service_id: str | None = None
    version: str | None = None
    description: str | None = None

    @property
    def http_status(self) -> int:
        """200 for pass and warn, 503 for fail."""
        return 503 if self.status == "fail" else 200

    content_type = HEALTH_JSON

    def to_json(self) -> dict[str, Any]:
        """The application/health+json body (draft-inadarei-api-health-check):
        ``status``, ``checks`` keyed ``component:measurement`` (every check when
        verbose, else only those not passing), ``output`` when not passing,
        and the extensions ``score``, ``level`` and ``kind``."""
        out: dict[str, Any] = {"status": self.status}
        if self.version:
            out["version"] = self.version
        if self.service_id:
            out["serviceId"] = self.service_id
        if self.description:
            out["description"] = self.description
        bad = [c for c in self.checks if c.status != "pass"]
        if bad:
            out["output"] = "; ".join(f"{c.name}: {c.output or c.status}" for c in bad)[:2000]
        shown = self.checks if self.verbose else tuple(bad)
        if shown:
            checks: dict[str, list[dict[str, Any]]] = {}
            for c in shown:
                checks.setdefault(c.name, []).append(c.to_json())
            out["checks"] = checks
        out["score"] = round(self.score, 1)
        out["level"] = self.level.value
        out["kind"] = self.kind
        return out

    def body(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat().replace("+00:00", "Z")


# ---- built-in checks ----------------------------------------------------------


class BuiltinCheck:
    """A check callable with its defaults (thresholds, unit, component type) and
    whether it probes a dependency (not allowed in liveness checks)."""

    def __init__(
        self,
        fn: Callable[[], Any],
        *,
        warn: float | None = None,
        crit: float | None = None,
        unit: str | None = None,
        component_type: str | None = None,
        dependency: bool = False,
    ) -> None:
        self.fn = fn
        self.warn = warn
        self.crit = crit
        self.unit = unit
        self.component_type = component_type
        self.dependency = dependency
        self.is_async = inspect.iscoroutinefunction(fn)

    def __call__(self) -> Any:
        return self.fn()


def memory_pressure(monitor: Any = None) -> BuiltinCheck:
    """Memory use in percent of the tightest limit (cgroup, system or the process
    limit) from :class:`amulet_native.MemoryMonitor`; warn/fail at its
    warning/critical thresholds."""
    from .memory import MemoryMonitor

    mon = MemoryMonitor() if monitor is None else monitor

    def check() -> Observation:
        p = mon.pressure()
        return Observation(
            round(p.ratio * 100, 2),
            unit="percent",
            output=f"{p.source}: {p.used} of {p.limit} bytes",
        )

    return BuiltinCheck(
        check,
        warn=mon.warning * 100,
        crit=mon.critical * 100,
        unit="percent",
        component_type="system",
    )


def circuit_breakers(names: Iterable[str] | None = None) -> BuiltinCheck:
    """The circuit breakers of ``amulet_native.resilience.breakers()``: fail
    while any (of ``names``, default all) is open, warn while one is half-open;
    the value is the number not closed."""
    wanted = None if names is None else set(names)

    def check() -> Observation:
        try:
            resilience = importlib.import_module("amulet_native.resilience")
            registry = resilience.breakers()
        except (ImportError, AttributeError):
            return Observation(
                status="warn",
                output="circuit breaker registry unavailable: amulet_native.resilience "
                "(breakers()) is not part of this build",
            )
        items = (
            registry.items()
            if isinstance(registry, Mapping)
            else ((getattr(b, "name", str(i)), b) for i, b in enumerate(registry))
        )
        opened, half = [], []
        for name, breaker in items:
            if wanted is not None and name not in wanted:
                continue
            raw = getattr(breaker, "state", "")
            state = str(getattr(raw, "name", None) or raw).lower()  # CircuitState is an IntEnum
            if "half" in state:
                half.append(name)
            elif "open" in state:
                opened.append(name)
        status: Status = "fail" if opened else "warn" if half else "pass"
        parts = [f"open: {', '.join(opened)}"] if opened else []
        parts += [f"half-open: {', '.join(half)}"] if half else []
        return Observation(len(opened) + len(half), status=status, output="; ".join(parts))

    return BuiltinCheck(check, component_type="component")


def object_pools(*pools: Any) -> BuiltinCheck:
    """ObjectPool/AsyncObjectPool states: fail when one is FAILED, warn when
    one is DEGRADED; the value is the number not HEALTHY."""

    def check() -> Observation:
        bad: list[str] = []
        status: Status = "pass"
        for i, pool in enumerate(pools):
            state = str(getattr(pool.state, "value", pool.state)).lower()
            if state == "failed":
                status = "fail"
            elif state == "degraded" and status == "pass":
                status = "warn"
            if state != "healthy":
                bad.append(f"pool {i}: {state}")
        return Observation(len(bad), status=status, output="; ".join(bad))

    return BuiltinCheck(check, component_type="component")


def queue_depth(
    source: Any, *, warn: float | None = None, crit: float | None = None
) -> BuiltinCheck:
    """The depth of a queue: ``source.qsize()``, ``len(source)`` or ``source()``."""

    def check() -> int:
        if hasattr(source, "qsize"):
            return int(source.qsize())
        if callable(source):
            return int(source())
        return len(source)

    return BuiltinCheck(check, warn=warn, crit=crit, unit="items", component_type="component")


def redis_ping(
    target: Any, *, warn: float | None = 100.0, crit: float | None = 1000.0
) -> BuiltinCheck:
    """PING round trip in ms to a ``redis://`` URL or a redis.asyncio client (a
    dependency: readiness only)."""
    state: dict[str, Any] = {}

    async def check() -> Observation:
        client = target
        if isinstance(target, str):
            loop = asyncio.get_running_loop()
            if state.get("loop") is not loop:
                import redis.asyncio as aredis

                state["client"] = aredis.Redis.from_url(
                    target, socket_timeout=2.0, socket_connect_timeout=2.0
                )
                state["loop"] = loop
            client = state["client"]
        t0 = time.perf_counter()
        await client.ping()
        return Observation(round((time.perf_counter() - t0) * 1000, 3), unit="ms")

    return BuiltinCheck(
        check, warn=warn, crit=crit, unit="ms", component_type="datastore", dependency=True
    )


def disk_space(path: str = "/", *, warn: float = 85.0, crit: float = 95.0) -> BuiltinCheck:
    """Used space of the filesystem holding ``path``, in percent."""

    def check() -> Observation:
        u = shutil.disk_usage(path)
        return Observation(
            round(u.used / u.total * 100, 2) if u.total else 0.0,
            output=f"{path}: {u.free} bytes free",
        )

    return BuiltinCheck(check, warn=warn, crit=crit, unit="percent", component_type="system")


def event_loop_lag(*, warn: float = 100.0, crit: float = 1000.0) -> BuiltinCheck:
    """How late a callback scheduled now runs on the event loop, in ms."""

    async def check() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(0)
        return round((loop.time() - t0) * 1000, 3)

    return BuiltinCheck(check, warn=warn, crit=crit, unit="ms", component_type="system")


# ---- the monitor --------------------------------------------------------------


@dataclass
class _Check:
    name: str
    fn: Callable[[], Any]
    is_async: bool
    kind: str
    timeout: float
    ttl: float
    weight: float
    warn: float | None
    crit: float | None
    unit: str | None
    critical: bool
    component_type: str | None
    history: deque[CheckResult]
    last: CheckResult | None = None
    last_cached: CheckResult | None = None  # last, marked cached (made once)
    last_at: float = -math.inf
    last_status: Status | None = None
    inflight: Any = None  # concurrent.futures.Future (sync) or asyncio.Task (async)
    inflight_loop: Any = None
    inflight_since: float = 0.0


def _seconds(field_name: str, v: Any, *, allow_zero: bool = True) -> float:
    if (
        isinstance(v, bool)
        or not isinstance(v, (int, float))
        or not math.isfinite(v)
        or v < 0
        or (v == 0 and not allow_zero)
    ):
        raise ValidationError(
            f"{field_name} must be finite seconds {'>=' if allow_zero else '>'} 0, got {v!r}",
            code="health.config",
            field=field_name,
        )
    return float(v)


class HealthMonitor:
    """Registered checks and the live/ready/startup reports built from them.

    ``clock`` (monotonic seconds: TTLs, timeouts of hung checks) and ``wall``
    (epoch seconds: result times) are injectable for tests; ``history`` bounds
    the results kept per check; ``timeout`` is the default per-check timeout.
    """

    def __init__(
        self,
        *,
        service_id: str | None = None,
        version: str | None = None,
        description: str | None = None,
        timeout: float = 5.0,
        history: int = 60,
        require_start: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        max_threads: int = 8,
    ) -> None:
        self.service_id = service_id
        self.version = version
        self.description = description
        self.timeout = _seconds("timeout", timeout, allow_zero=False)
        if type(history) is not int or history < 1:
            raise ValidationError(
                "history must be an int >= 1", code="health.config", field="history"
            )
        self.history_size = history
        self.require_start = require_start
        self._clock = clock
        self._wall = wall
        self._checks: dict[str, _Check] = {}
        self._draining = False
        self._started = False
        self._alerts: deque[Alert] = deque(maxlen=1000)
        self._alert_ids = itertools.count(1)
        self._callbacks: list[Callable[[Alert], Any]] = []
        self._pending: set[asyncio.Task[Any]] = set()
        self._overall: dict[str, Status] = {}
        self._lock = threading.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_threads, thread_name_prefix="amulet-health"
        )
        self.callback_errors = 0

    # -- configuration --

    def add_check(
        self,
        name: str,
        fn: Callable[[], Any],
        *,
        kind: Kind = "readiness",
        timeout: float | None = None,
        ttl: float = 0.0,
        weight: float = 1.0,
        warn: float | None = None,
        crit: float | None = None,
        unit: str | None = None,
        critical: bool = True,
        component_type: str | None = None,
    ) -> None:
        """Register ``fn`` under ``name`` (``component:measurement``, e.g.
        ``"redis:responseTime"``).  ``ttl`` caches its result, ``weight`` counts
        it in the score, ``warn``/``crit`` grade a numeric value (higher is
        worse, or lower when crit < warn); a non-``critical`` check that fails
        only makes the report warn."""
        if not isinstance(name, str) or not name or len(name) > 200:
            raise ValidationError(
                "check name must be a non-empty str", code="health.config", field="name"
            )
        if name in self._checks:
            raise ValidationError(
                f"a check named {name!r} exists", code="health.config", field="name"
            )
        if not callable(fn):
            raise ValidationError("fn must be callable", code="health.config", field="fn")
        if kind not in ("liveness", "readiness", "startup"):
            raise ValidationError(
                f'kind must be "liveness", "readiness" or "startup", got {kind!r}',
                code="health.config",
                field="kind",
            )
        builtin = fn if isinstance(fn, BuiltinCheck) else None
        if builtin is not None and builtin.dependency and kind == "liveness":
            raise ValidationError(
                f"{name!r} probes a dependency: liveness checks must not (an outage would "
                "restart every instance); register it as readiness",
                code="health.liveness_dependency",
                field="kind",
            )
        warn = builtin.warn if (warn is None and builtin is not None) else warn
        crit = builtin.crit if (crit is None and builtin is not None) else crit
        for fname, v in (("warn", warn), ("crit", crit)):
            if v is not None and (
                isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
            ):
                raise ValidationError(
                    f"{fname} must be a finite number", code="health.config", field=fname
                )
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not (math.isfinite(weight) and weight >= 0)
        ):
            raise ValidationError(
                "weight must be a finite number >= 0", code="health.config", field="weight"
            )
        is_async = (
            builtin.is_async
            if builtin is not None
            else (
                inspect.iscoroutinefunction(fn)
                or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004
            )
        )
        self._checks[name] = _Check(
            name=name,
            fn=builtin.fn if builtin is not None else fn,
            is_async=is_async,
            kind=kind,
            timeout=self.timeout
            if timeout is None
            else _seconds("timeout", timeout, allow_zero=False),
            ttl=_seconds("ttl", ttl),
            weight=float(weight),
            warn=warn,
            crit=crit,
            unit=unit if unit is not None else (builtin.unit if builtin is not None else None),
            critical=critical,
            component_type=component_type
            if component_type is not None
            else (builtin.component_type if builtin is not None else None),
            history=deque(maxlen=self.history_size),
        )

    def remove_check(self, name: str) -> None:
        self._checks.pop(name, None)

    @property
    def checks(self) -> list[str]:
        return list(self._checks)

    def set_draining(self, draining: bool = True) -> None:
        """While draining, readiness fails (the load balancer stops sending)."""
        self._draining = bool(draining)

    def mark_started(self) -> None:
        """Start-up is complete: startup reports pass without running their
        checks again, and readiness no longer waits for it."""
        self._started = True

    @property
    def started(self) -> bool:
        return self._started

    @property
    def draining(self) -> bool:
        return self._draining

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- alerts --

    def on_alert(self, callback: Callable[[Alert], Any]) -> None:
        """Call ``callback(alert)`` (sync, or async: scheduled) on every transition."""
        self._callbacks.append(callback)

    def alerts(self, *, include_acknowledged: bool = False) -> list[Alert]:
        return [a for a in self._alerts if include_acknowledged or not a.acknowledged]

    def acknowledge(self, alert_id: int) -> bool:
        """Mark an alert acknowledged; False when there is no such alert."""
        for a in self._alerts:
            if a.id == alert_id:
                a.acknowledged = True
                return True
        return False

    def _transition(
        self, check: str, previous: Status | None, current: Status, output: str
    ) -> None:
        alert = Alert(next(self._alert_ids), check, previous, current, self._wall(), output)
        self._alerts.append(alert)
        for cb in list(self._callbacks):
            try:
                r = cb(alert)
                if inspect.isawaitable(r):
                    task = asyncio.ensure_future(r)
                    self._pending.add(task)
                    task.add_done_callback(self._callback_done)
            except Exception:  # noqa: BLE001 - a callback never breaks a probe
                self.callback_errors += 1

    def _callback_done(self, task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.callback_errors += 1

    # -- history and trend --

    def history(self, name: str) -> list[CheckResult]:
        """The check's fresh results, oldest first (at most ``history``)."""
        return list(self._checks[name].history)

    def trend(self, name: str, window: int = 10) -> str:
        """ "improving", "degrading", "stable" or "unknown" over the last
        ``window`` results: by status first, then by the measured values
        against the direction of the thresholds."""
        c = self._checks[name]
        recent = list(c.history)[-window:]
        if len(recent) < 2:
            return "unknown"
        half = len(recent) // 2
        old, new = recent[:half], recent[half:]
        s_old = sum(_SCORE[r.status] for r in old) / len(old)
        s_new = sum(_SCORE[r.status] for r in new) / len(new)
        if abs(s_new - s_old) >= 10:
            return "improving" if s_new > s_old else "degrading"
        values = [r.observed_value for r in recent]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            nums = [float(v) for v in values]  # type: ignore[arg-type]
            n = len(nums)
            mx = (n - 1) / 2
            my = sum(nums) / n
            slope = sum((i - mx) * (y - my) for i, y in enumerate(nums)) / sum(
                (i - mx) ** 2 for i in range(n)
            )
            scale = max(abs(my), abs(c.warn or 0), abs(c.crit or 0), 1e-12)
            if abs(slope) * n / scale >= 0.1:
                higher_worse = not (c.warn is not None and c.crit is not None and c.crit < c.warn)
                return "degrading" if (slope > 0) == higher_worse else "improving"
        return "stable"

    # -- running checks --

    def _grade(self, c: _Check, value: Any) -> tuple[Status, Any, str | None, str]:
        """(status, observed value, unit, output) of a check's return value."""
        unit, output, status = c.unit, "", None
        if isinstance(value, Observation):
            status, output = value.status, value.output
            unit = value.unit or unit
            value = value.value
        elif isinstance(value, Mapping):
            status = value.get("status")
            output = str(value.get("output", ""))
            unit = value.get("observedUnit", unit)
            value = value.get("observedValue")
        elif value is None or value is True:
            return "pass", None, unit, ""
        elif value is False:
            return "fail", None, unit, "check returned False"
        elif isinstance(value, str) and value in _RANK:
            return value, None, unit, ""  # type: ignore[return-value]
        if status is not None and status not in _RANK:
            return "fail", None, unit, f"check returned an unknown status {status!r}"
        graded: Status = status or "pass"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isnan(value):
                return "fail", None, unit, "check measured NaN"
            graded = _worse(graded, _threshold(value, c.warn, c.crit))
        elif value is not None and not isinstance(value, str):
            return "fail", None, unit, f"unexpected check result of type {type(value).__name__}"
        return graded, value, unit, output

    def _start(self, c: _Check, loop: asyncio.AbstractEventLoop) -> Any:
        """The in-flight run of c (started now unless one is still running)."""
        running = c.inflight is not None and not c.inflight.done()
        if running and (not c.is_async or c.inflight_loop is loop):
            return c.inflight
        c.inflight_since = self._clock()
        if c.is_async:
            c.inflight = loop.create_task(_call_async(c.fn))
            c.inflight_loop = loop
        else:
            c.inflight = self._executor.submit(_call_sync, c.fn)
        return c.inflight

    async def _run(self, c: _Check) -> CheckResult:
        now = self._clock()
        if c.last_cached is not None and now - c.last_at < c.ttl:
            return c.last_cached
        loop = asyncio.get_running_loop()
        run = self._start(c, loop)
        waited = self._clock() - c.inflight_since
        budget = c.timeout - waited
        t0 = time.perf_counter()
        try:
            if budget <= 0:
                raise TimeoutError
            fut = run if c.is_async else asyncio.wrap_future(run)
            value = await asyncio.wait_for(asyncio.shield(fut), budget)
            status, observed, unit, output = self._grade(c, value)
        except (TimeoutError, asyncio.TimeoutError):
            status, observed, unit = "fail", None, c.unit
            output = f"timed out after {c.timeout:g} s"
            if waited > 0:
                output += " (still running since an earlier probe)"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failing check is a result
            status, observed, unit = "fail", None, c.unit
            output = f"{type(exc).__name__}: {exc}"[:500]
        result = CheckResult(
            name=c.name,
            status=status,
            observed_value=observed,
            observed_unit=unit,
            time=self._wall(),
            output=output,
            duration=time.perf_counter() - t0,
            component_type=c.component_type,
        )
        c.last, c.last_at = result, self._clock()
        c.last_cached = replace(result, cached=True)
        c.history.append(result)
        if status != c.last_status and not (c.last_status is None and status == "pass"):
            self._transition(c.name, c.last_status, status, output)
        c.last_status = status
        return result

    async def report(
        self,
        kind: str = "ready",
        *,
        verbose: bool = False,
        exclude: Iterable[str] = (),
    ) -> HealthReport:
        """Run the checks of ``kind`` ("live", "ready", "startup" or "all")
        concurrently and build the report.  ``exclude`` skips checks by name or
        by component (the part before ":").  Never raises for a check."""
        if kind not in _KINDS:
            raise ValidationError(
                f'kind must be "live", "ready", "startup" or "all", got {kind!r}',
                code="health.kind",
                field="kind",
            )
        skip = {exclude} if isinstance(exclude, str) else set(exclude)
        kinds = _KINDS[kind]
        chosen = [
            c
            for c in self._checks.values()
            if c.kind in kinds and c.name not in skip and c.name.split(":", 1)[0] not in skip
        ]
        startup_done = kind in ("startup",) and self._started
        if startup_done:
            results = [c.last for c in chosen if c.last is not None]
        else:
            # cached results inline; only the checks due run, concurrently
            clock_now = self._clock()
            slots: list[CheckResult | None] = [
                c.last_cached
                if c.last_cached is not None and clock_now - c.last_at < c.ttl
                else None
                for c in chosen
            ]
            due = [i for i, r in enumerate(slots) if r is None]
            if due:
                fresh = await asyncio.gather(*(self._run(chosen[i]) for i in due))
                for i, r in zip(due, fresh, strict=True):
                    slots[i] = r
            results = [r for r in slots if r is not None]
        weights = {c.name: (c.weight, c.critical) for c in chosen}
        synthetic: list[CheckResult] = []
        now = self._wall()
        if kinds == ("readiness",) or kind == "all":
            if self._draining:
                synthetic.append(
                    _synthetic("server:draining", "fail", "draining: not accepting", now)
                )
            if self._needs_start() and not self._started:
                synthetic.append(_synthetic("server:started", "fail", "start-up not complete", now))
        counted = [(r, *weights.get(r.name, (1.0, True))) for r in results + synthetic]
        status: Status = "pass"
        for r, _w, critical in counted:
            status = _worse(status, r.status if critical or r.status != "fail" else "warn")
        total = sum(w for _r, w, _c in counted)
        score = sum(_SCORE[r.status] * w for r, w, _c in counted) / total if total > 0 else 100.0
        if kind == "startup" and status == "pass" and not self._started and chosen:
            self._started = True  # the start-up checks passed once
        previous = self._overall.get(kind)
        if previous != status and not (previous is None and status == "pass"):
            self._transition(f"overall:{kind}", previous, status, "")
        self._overall[kind] = status
        return HealthReport(
            kind=kind,
            status=status,
            score=score,
            level=level_for(status, score),
            checks=tuple(results + synthetic),
            time=now,
            verbose=verbose,
            service_id=self.service_id,
            version=self.version,
            description=self.description,
        )

    def _needs_start(self) -> bool:
        return self.require_start or any(c.kind == "startup" for c in self._checks.values())

    def report_sync(self, kind: str = "ready", **kwargs: Any) -> HealthReport:
        """:meth:`report` from synchronous code (runs its own event loop)."""
        return asyncio.run(self.report(kind, **kwargs))

    # -- ASGI --

    def asgi(self, kind: str = "ready") -> Callable[..., Awaitable[None]]:
        """A pure ASGI endpoint serving the ``kind`` report as
        application/health+json: ``?verbose`` lists every check, ``?exclude=name``
        (repeatable) skips checks.  200 for pass/warn, 503 for fail."""
        if kind not in _KINDS:
            raise ValidationError(f"unknown kind {kind!r}", code="health.kind", field="kind")

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope.get("type") != "http":
                return
            query = parse_qs(
                scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True
            )
            verbose = "verbose" in query and query["verbose"][-1].lower() not in ("0", "false")
            try:
                report = await self.report(kind, verbose=verbose, exclude=query.get("exclude", []))
                status, body = report.http_status, report.body()
            except Exception as exc:  # noqa: BLE001 - the probe answers whatever happens
                status = 503
                body = json.dumps(
                    {"status": "fail", "output": f"{type(exc).__name__}: {exc}"}
                ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", HEALTH_JSON.encode()),
                        (b"cache-control", b"no-store"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})

        return app


def _call_sync(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except StopIteration as exc:  # cannot cross a Future: it would hang the probe
        raise RuntimeError("check raised StopIteration") from exc


async def _call_async(fn: Callable[[], Any]) -> Any:
    try:
        return await fn()
    except StopIteration as exc:
        raise RuntimeError("check raised StopIteration") from exc


def _synthetic(name: str, status: Status, output: str, now: float) -> CheckResult:
    return CheckResult(name, status, None, None, now, output, 0.0, component_type="system")


def _worse(a: Status, b: Status) -> Status:
    return a if _RANK[a] >= _RANK[b] else b


def _threshold(value: float, warn: float | None, crit: float | None) -> Status:
    lower_worse = warn is not None and crit is not None and crit < warn
    if lower_worse:
        assert warn is not None and crit is not None
        if value <= crit:
            return "fail"
        return "warn" if value <= warn else "pass"
    if crit is not None and value >= crit:
        return "fail"
    if warn is not None and value >= warn:
        return "warn"
    return "pass"
