"""Memory budgets per request, a process memory guard, pressure monitoring, GC.

``memory_limit`` gives a block of code (a request handler, one asyncio task) its
own memory budget.  It covers

* every NumPy array allocated inside the scope (a NEP 49 memory handler: NumPy
  keeps the current handler in a context variable, so the scope follows the
  thread / asyncio task that entered it), and
* amulet_native's own native buffers: decode outputs are checked against the
  budget *before* anything is allocated (a 20000x20000 JPEG in a 100 MB scope
  is refused after reading its header), and the decoders' working memory
  (libpng/zlib, staging buffers, libjpeg's progressive coefficient buffers) is
  charged too, also from ``decode_many``'s worker threads.

Memory that Python objects (lists, bytes, dicts) or other native libraries
allocate is *not* covered: it does not go through NumPy's data allocator.

Example::

    import numpy as np
    import amulet_native as an

    with an.memory_limit(mb=100) as usage:
        img = an.decode(upload)                  # MemoryLimitError if it cannot fit
        work = np.empty((4096, 4096), np.float32)
    print(usage.peak, usage.current)             # bytes; current drops as arrays die

Where the budget applies:

* nested scopes only tighten: an inner scope charges itself and every
  enclosing scope, so an inner limit larger than what the outer one has left
  is effectively the outer one;
* ``asyncio.to_thread`` copies the context, so the work runs inside the scope;
* ``loop.run_in_executor`` and ``threading.Thread`` do **not** copy the
  context: that work is not budgeted unless you wrap it,
  ``loop.run_in_executor(None, contextvars.copy_context().run, fn)``;
* an array keeps the budget it was charged to: freeing it after the scope
  exited still credits that scope (``usage.current`` returns to 0), and it
  never charges a scope it merely passes through.

When NumPy itself is refused it raises its own ``MemoryError``; leaving the
scope turns that into :class:`MemoryLimitError` with ``requested``, ``limit``
and ``in_use`` (only NumPy's error for the refused size: a MemoryError with
another cause passes through untouched, even after a caught refusal).  If you catch NumPy's error inside the scope, ``usage.refused``
has the same numbers.
"""

from __future__ import annotations

import contextvars
import functools
import gc
import inspect
import itertools
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar, cast, overload

from . import _core
from .errors import AmuletError, MemoryLimitError, ProcessingError, ValidationError

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs 3.11

__all__ = [
    "GCAction",
    "GCStats",
    "GarbageCollectionManager",
    "MemoryMonitor",
    "MemoryPressure",
    "MemoryRefusal",
    "MemorySnapshot",
    "MemoryUsage",
    "MonitorWatch",
    "PressureLevel",
    "get_process_memory_limit",
    "memory_efficient_operation",
    "memory_limit",
    "memory_limit_context",
    "set_process_memory_limit",
]

_log = logging.getLogger("amulet_native.memory")

F = TypeVar("F", bound=Callable[..., Any])
_MIB = 1024 * 1024


def _to_bytes(max_bytes: int | None, mb: float | None, what: str) -> int | None:
    if max_bytes is not None and mb is not None:
        raise ValidationError(f"{what}: give max_bytes or mb, not both", field="mb")
    if mb is not None:
        if (isinstance(mb, bool) or not isinstance(mb, (int, float)) or not mb > 0
                or not mb * _MIB < 2**63):  # inf used to escape as OverflowError
            raise ValidationError(
                f"{what}: mb must be a positive number below 2**43, got {mb!r}", field="mb"
            )
        max_bytes = max(int(mb * _MIB), 1)
    if max_bytes is None:
        return None
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
        raise ValidationError(
            f"{what}: max_bytes must be an int, got {type(max_bytes).__name__}",
            field="max_bytes",
        )
    if not 0 < max_bytes < 2**63:
        raise ValidationError(
            f"{what}: max_bytes must be in [1, 2**63), got {max_bytes}", field="max_bytes"
        )
    return max_bytes


# ---- memory_limit --------------------------------------------------------------


class MemoryRefusal(NamedTuple):
    """The numbers of a refused allocation."""

    requested: int
    """Bytes asked for."""
    limit: int
    """The limit that refused (this scope's or an enclosing scope's)."""
    in_use: int
    """Bytes charged to that scope at the time."""
    depth: int
    """0 when this scope's own limit refused, 1 for its enclosing scope, ..."""


class MemoryUsage:
    """Live readings of one ``memory_limit`` scope; still valid after it exits
    (``current`` keeps falling as the arrays it charged are freed)."""

    __slots__ = ("_budget",)

    def __init__(self, budget: _core.Budget) -> None:
        self._budget = budget

    @property
    def current(self) -> int:
        """Bytes charged to the scope now (including nested scopes)."""
        return self._budget.in_use

    @property
    def peak(self) -> int:
        """The largest ``current`` seen."""
        return self._budget.peak

    @property
    def limit(self) -> int | None:
        """This scope's own limit in bytes (None: unlimited, accounting only)."""
        return self._budget.limit

    @property
    def refusals(self) -> int:
        """How many allocations the scope refused."""
        return self._budget.refusals

    @property
    def refused(self) -> MemoryRefusal | None:
        """The last refused allocation, or None."""
        last = self._budget.last_refusal
        return None if last is None else MemoryRefusal(*last)

    def __repr__(self) -> str:
        return (
            f"MemoryUsage(current={self.current}, peak={self.peak}, limit={self.limit}, "
            f"refusals={self.refusals})"
        )


class _Frame(NamedTuple):
    usage: MemoryUsage
    previous: object


_ids = itertools.count()


#: The messages of the plain MemoryErrors NumPy raises when a realloc is refused
#: (ndarray.resize; text parsing in fromstring/loadtxt raises one without args).
_NUMPY_REALLOC_MESSAGES = ((), ("cannot allocate memory for array",))


def _caused_by(exc: MemoryError, refused: MemoryRefusal) -> bool:
    """Whether ``exc`` is NumPy reporting the refusal ``refused`` (the last one
    of the scope).  A refusal the caller caught earlier must not relabel a later,
    unrelated MemoryError (system OOM, ``bytearray(2**62)``, one raised by hand).

    NumPy's array-creation error carries the size it asked for, which must be
    the refused size; its realloc paths raise a bare MemoryError with one of
    two known messages.  Anything else is somebody else's MemoryError."""
    total = getattr(exc, "_total_size", None)
    numpy_error = type(exc).__module__.partition(".")[0] == "numpy"  # _ArrayMemoryError
    if numpy_error and isinstance(total, int):
        return refused.requested in (total, max(total, 1))
    return type(exc) is MemoryError and exc.args in _NUMPY_REALLOC_MESSAGES


class memory_limit:
    """A memory budget for the current thread or asyncio task.

    ``with memory_limit(max_bytes) as usage:`` or ``with memory_limit(mb=100):``;
    without a limit it only measures.  Also a decorator for sync and async
    functions (each call gets a fresh scope)::

        @an.memory_limit(mb=256)
        async def handle(upload: bytes) -> bytes: ...

    An allocation that would pass the limit raises :class:`MemoryLimitError`
    (``.requested``, ``.limit``, ``.in_use``; code ``"memory.limit"``).  The
    same object may be entered by several threads or tasks at once: each gets
    its own budget.
    """

    def __init__(self, max_bytes: int | None = None, *, mb: float | None = None) -> None:
        self.max_bytes = _to_bytes(max_bytes, mb, "memory_limit")
        self._frames: contextvars.ContextVar[tuple[_Frame, ...]] = contextvars.ContextVar(
            f"amulet_native.memory_limit.{next(_ids)}"
        )

    def __repr__(self) -> str:
        return f"memory_limit(max_bytes={self.max_bytes})"

    def __enter__(self) -> MemoryUsage:
        budget, previous = _core.budget_enter(self.max_bytes or 0)
        usage = MemoryUsage(budget)
        self._frames.set((*self._frames.get(()), _Frame(usage, previous)))
        return usage

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        frames = self._frames.get(())
        if not frames:
            raise RuntimeError("memory_limit exited in a context where it was not entered")
        frame = frames[-1]
        self._frames.set(frames[:-1])
        _core.budget_exit(frame.previous)
        if isinstance(exc, MemoryError) and not isinstance(exc, AmuletError):
            refused = frame.usage.refused
            if refused is not None and _caused_by(exc, refused):
                # NumPy's own MemoryError after our handler said no.
                raise MemoryLimitError(
                    f"allocation of {refused.requested} bytes would pass the memory budget "
                    f"of {refused.limit} bytes (in use: {refused.in_use})",
                    code="memory.limit",
                    requested=refused.requested,
                    limit=refused.limit,
                    in_use=refused.in_use,
                    context={"limit_kind": "budget"},
                ) from exc

    def __call__(self, func: F) -> F:
        if not callable(func):
            raise TypeError(f"memory_limit decorates a function, got {type(func).__name__}")
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            # The scope would end when the generator object is created, before
            # its body runs: its allocations would silently go unbudgeted.
            raise TypeError(
                f"memory_limit cannot decorate the generator function {func.__qualname__}: "
                "enter the scope around the loop that consumes it instead"
            )
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self:
                    return await cast(Callable[..., Awaitable[Any]], func)(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return cast(F, wrapper)


def memory_limit_context(mb: float) -> memory_limit:
    """``memory_limit(mb=mb)``: the original system's spelling,
    ``with memory_limit_context(100): ...``."""
    return memory_limit(mb=mb)


@overload
def memory_efficient_operation(func: F, /) -> F: ...
@overload
def memory_efficient_operation(
    *, max_bytes: int | None = None, mb: float | None = None
) -> Callable[[F], F]: ...
def memory_efficient_operation(
    func: F | None = None, /, *, max_bytes: int | None = None, mb: float | None = None
) -> F | Callable[[F], F]:
    """Decorator (the original system's name): run each call of a sync or async
    function in its own ``memory_limit`` scope.  Bare (``@memory_efficient_operation``)
    it only accounts; with ``mb=``/``max_bytes=`` it enforces a budget::

        @an.memory_efficient_operation(mb=512)
        def render(data: bytes) -> np.ndarray: ...
    """
    limit = memory_limit(max_bytes, mb=mb)
    return limit(func) if func is not None else limit


def current_usage() -> MemoryUsage | None:
    """The innermost ``memory_limit`` scope of this thread/task, or None."""
    budget = _core.current_budget()
    return None if budget is None else MemoryUsage(budget)


# ---- process limit -------------------------------------------------------------


def set_process_memory_limit(max_bytes: int | None = None, *, mb: float | None = None) -> None:
    """Refuse amulet_native's own large allocations (decode outputs, native
    buffers of at least 1 MiB) when the resident set size plus the request
    would pass this limit.  Refusals raise :class:`MemoryLimitError` with code
    ``"memory.process_limit"`` (``context["limit_kind"] == "process"``,
    ``in_use`` = RSS).  ``None`` removes the limit.  It is process-wide and
    does not limit NumPy or Python allocations made by other code."""
    limit = _to_bytes(max_bytes, mb, "set_process_memory_limit")
    _core.set_process_memory_limit(limit or 0)


def get_process_memory_limit() -> int | None:
    """The process memory limit in bytes, or None."""
    return _core.get_process_memory_limit() or None


# ---- MemoryMonitor ---------------------------------------------------------------


class PressureLevel(IntEnum):
    """Memory pressure, ordered: ``level >= PressureLevel.WARNING`` works."""

    NORMAL = 0
    WARNING = 1
    CRITICAL = 2


@dataclass(frozen=True)
class MemorySnapshot:
    """One reading of process and system memory (bytes)."""

    rss: int
    """Resident set size of this process (VmRSS)."""
    peak_rss: int
    """Largest RSS so far (VmHWM)."""
    total: int
    """Physical memory (MemTotal)."""
    available: int
    """Memory available without swapping (MemAvailable)."""
    cgroup_version: int
    """1 or 2 when a memory cgroup was found, else 0."""
    cgroup_limit: int | None
    """The cgroup memory limit (None: unlimited, unknown or no cgroup)."""
    cgroup_usage: int | None
    """The cgroup's current usage (None when unknown or no cgroup)."""
    cgroup_problem: str | None
    """Why the cgroup numbers are unknown (malformed files), else None."""
    effective_limit: int
    """What this process can use: the cgroup limit if there is one, else physical memory."""
    cgroup_working_set: int | None = None
    """``cgroup_usage`` minus the reclaimable page cache (``inactive_file`` in
    ``memory.stat``): what the kernel cannot simply drop before an OOM kill.
    Equal to ``cgroup_usage`` when ``memory.stat`` is unreadable."""


@dataclass(frozen=True)
class MemoryPressure:
    """A pressure reading: ``ratio = used / limit`` of the tightest source."""

    level: PressureLevel
    ratio: float
    used: int
    limit: int
    source: str
    """"cgroup" (usage vs the cgroup limit), "system" (MemTotal - MemAvailable vs
    MemTotal) or "process" (RSS vs set_process_memory_limit)."""
    snapshot: MemorySnapshot


def _validate_thresholds(warning: float, critical: float) -> None:
    for name, v in (("warning", warning), ("critical", critical)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v <= 1.0:
            raise ValidationError(f"{name} must be a ratio in (0, 1], got {v!r}", field=name)
    if warning > critical:
        raise ValidationError(
            f"warning ({warning}) must not be above critical ({critical})", field="warning"
        )


class MemoryMonitor:
    """Process, system and container memory, read from ``/proc`` and the cgroup
    files (no psutil).  ``root`` stands for ``/`` (tests point it at fixture
    trees).

    ``pressure()`` takes the largest of these usage ratios, so it reacts to
    whichever limit is closest:

    * ``cgroup``: the cgroup's working set (``memory.current`` / v1
      ``memory.usage_in_bytes`` minus the reclaimable page cache,
      ``inactive_file`` in ``memory.stat``, as the kubelet counts it) over its
      limit, when the process runs in a memory-limited cgroup.  Raw usage
      would sit near the limit in any container that reads files, because
      the kernel fills the cgroup with page cache until it reaches the limit;
    * ``system``: ``MemTotal - MemAvailable`` over ``MemTotal``;
    * ``process``: RSS over :func:`set_process_memory_limit`, when one is set.

    Example::

        monitor = an.MemoryMonitor(warning=0.8, critical=0.9)
        if monitor.pressure().level >= an.PressureLevel.CRITICAL:
            return Response(status_code=503)
        with monitor.watch(5.0, lambda prev, r: log.warning("memory %s", r.level.name)):
            serve()
    """

    def __init__(
        self,
        warning: float = 0.8,
        critical: float = 0.9,
        *,
        root: str | os.PathLike[str] = "/",
    ) -> None:
        _validate_thresholds(warning, critical)
        self.warning = float(warning)
        self.critical = float(critical)
        self.root = os.fspath(root)

    def __repr__(self) -> str:
        return f"MemoryMonitor(warning={self.warning}, critical={self.critical}, root={self.root!r})"

    def snapshot(self) -> MemorySnapshot:
        """Read everything now.  Raises ProcessingError (code ``"system.meminfo"``)
        when /proc is missing or malformed; a malformed cgroup only makes the
        cgroup numbers None (``cgroup_problem`` says why)."""
        rss, peak, total, available = _core.read_procmem(self.root)
        version, known, limit, usage, _path, problem, inactive = _core.read_cgroup(self.root)
        cg_limit = limit if known else None
        working_set = None
        if known:
            working_set = usage - min(inactive, usage) if inactive is not None else usage
        effective = min(cg_limit, total) if cg_limit is not None else total
        return MemorySnapshot(
            rss=rss,
            peak_rss=peak,
            total=total,
            available=available,
            cgroup_version=version,
            cgroup_limit=cg_limit,
            cgroup_usage=usage if known else None,
            cgroup_problem=problem or None,
            effective_limit=effective,
            cgroup_working_set=working_set,
        )

    def level_for(self, ratio: float) -> PressureLevel:
        """The level of a usage ratio under this monitor's thresholds."""
        if ratio >= self.critical:
            return PressureLevel.CRITICAL
        if ratio >= self.warning:
            return PressureLevel.WARNING
        return PressureLevel.NORMAL

    def pressure(self) -> MemoryPressure:
        """The current pressure level with the numbers behind it."""
        snap = self.snapshot()
        candidates: list[tuple[float, int, int, str]] = []
        if snap.total > 0:
            used = max(snap.total - snap.available, 0)
            candidates.append((used / snap.total, used, snap.total, "system"))
        if snap.cgroup_limit is not None and snap.cgroup_working_set is not None:
            lim = max(snap.cgroup_limit, 1)
            ws = snap.cgroup_working_set
            candidates.append((ws / lim, ws, lim, "cgroup"))
        plimit = get_process_memory_limit()
        if plimit is not None:
            candidates.append((snap.rss / plimit, snap.rss, plimit, "process"))
        if not candidates:
            raise ProcessingError("no memory reading (MemTotal is 0)", code="system.meminfo")
        ratio, used, limit, source = max(candidates, key=lambda c: c[0])
        return MemoryPressure(self.level_for(ratio), ratio, used, limit, source, snap)

    def watch(
        self,
        interval: float,
        on_change: Callable[[PressureLevel, MemoryPressure], object],
    ) -> MonitorWatch:
        """Start a daemon thread that reads ``pressure()`` every ``interval``
        seconds and calls ``on_change(previous_level, reading)`` whenever the
        level changes (starting from NORMAL, so a process already under
        pressure hears about it at once).  Exceptions from the callback are
        logged to the ``amulet_native.memory`` logger and counted, never fatal.
        Returns a handle: ``stop()`` it, or use it as a context manager."""
        return MonitorWatch(self, interval, on_change)


def _check_interval(interval: float) -> float:
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval > 0:
        raise ValidationError(
            f"interval must be a positive number of seconds, got {interval!r}", field="interval"
        )
    return float(interval)


class _Ticker:
    """A daemon thread running ``tick()`` every interval until stopped."""

    def __init__(self, name: str, interval: float, tick: Callable[[], None]) -> None:
        self._interval = _check_interval(interval)
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._tick()
            self._stop.wait(self._interval)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)


class MonitorWatch:
    """A running ``MemoryMonitor.watch``: ``level`` (the last one seen),
    ``errors`` (callback/reading failures so far), ``stop()``."""

    def __init__(
        self,
        monitor: MemoryMonitor,
        interval: float,
        on_change: Callable[[PressureLevel, MemoryPressure], object],
    ) -> None:
        if not callable(on_change):
            raise TypeError("on_change must be callable")
        self.monitor = monitor
        self.level = PressureLevel.NORMAL
        self.errors = 0
        self.readings = 0
        self._on_change = on_change
        self._ticker = _Ticker("amulet-memory-watch", interval, self._tick)

    def _tick(self) -> None:
        try:
            reading = self.monitor.pressure()
            self.readings += 1
            previous, self.level = self.level, reading.level
            if reading.level != previous:
                self._on_change(previous, reading)
        except Exception:  # noqa: BLE001 - a watcher must survive its callback; logged
            self.errors += 1
            _log.exception("memory watch: reading or on_change callback failed")

    @property
    def running(self) -> bool:
        return self._ticker.running

    def stop(self) -> None:
        """Stop the thread and wait for it (safe to call twice, or from the callback)."""
        self._ticker.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- GarbageCollectionManager -------------------------------------------------------


class Shrinkable(Protocol):
    """Anything with ``shrink(fraction) -> bytes freed`` (e.g. ImageCache)."""

    def shrink(self, fraction: float, /) -> int: ...


@dataclass(frozen=True)
class GCAction:
    """What one ``GarbageCollectionManager.check()`` did."""

    level: PressureLevel
    collected: int | None
    """Objects ``gc.collect()`` found unreachable (None: it did not run)."""
    bytes_freed: int
    """Bytes the registered caches reported freeing."""
    caches_shrunk: int
    fraction: float
    """The fraction each cache was asked to drop (0.0 when nothing ran)."""


@dataclass(frozen=True)
class GCStats:
    """Totals of a GarbageCollectionManager."""

    checks: int
    collections: int
    objects_collected: int
    bytes_freed: int
    errors: int
    last_level: PressureLevel | None
    caches: int


class GarbageCollectionManager:
    """Runs ``gc.collect()`` and shrinks registered caches when memory pressure
    reaches ``collect_on`` ("warning" or "critical").  At WARNING each cache is
    asked to drop ``warning_fraction`` of its bytes, at CRITICAL
    ``critical_fraction``.  Caches are held weakly.

    Example::

        gcm = an.GarbageCollectionManager(an.MemoryMonitor(), collect_on="warning")
        gcm.register(image_cache)          # anything with shrink(fraction) -> int
        gcm.start(interval=5.0)            # or call gcm.check() yourself
        ...
        gcm.stop(); print(gcm.stats)
    """

    def __init__(
        self,
        monitor: MemoryMonitor | None = None,
        *,
        collect_on: str | PressureLevel = "warning",
        warning_fraction: float = 0.25,
        critical_fraction: float = 0.5,
    ) -> None:
        if isinstance(collect_on, str):
            names = {"warning": PressureLevel.WARNING, "critical": PressureLevel.CRITICAL}
            if collect_on not in names:
                raise ValidationError(
                    f"collect_on must be 'warning' or 'critical', got {collect_on!r}",
                    field="collect_on",
                )
            collect_on = names[collect_on]
        elif not isinstance(collect_on, PressureLevel) or collect_on == PressureLevel.NORMAL:
            raise ValidationError(
                f"collect_on must be 'warning' or 'critical', got {collect_on!r}",
                field="collect_on",
            )
        for name, f in (("warning_fraction", warning_fraction),
                        ("critical_fraction", critical_fraction)):
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f <= 1.0:
                raise ValidationError(f"{name} must be in (0, 1], got {f!r}", field=name)
        self.monitor = monitor if monitor is not None else MemoryMonitor()
        self.collect_on = collect_on
        self.warning_fraction = float(warning_fraction)
        self.critical_fraction = float(critical_fraction)
        self._lock = threading.Lock()
        self._caches: dict[int, weakref.ref[Any]] = {}
        self._checks = self._collections = self._objects = self._freed = self._errors = 0
        self._last: PressureLevel | None = None
        self._ticker: _Ticker | None = None

    def register(self, cache: Shrinkable) -> None:
        """Shrink ``cache`` under pressure (held weakly: registering does not keep
        it alive).  TypeError if it has no ``shrink`` method or cannot be weakly
        referenced."""
        if not callable(getattr(cache, "shrink", None)):
            raise TypeError(f"{type(cache).__name__} has no shrink(fraction) method")
        key = id(cache)

        def forget(_: object, key: int = key) -> None:
            with self._lock:
                self._caches.pop(key, None)

        ref = weakref.ref(cache, forget)  # TypeError when not weak-referenceable
        with self._lock:
            self._caches[key] = ref

    def unregister(self, cache: Shrinkable) -> None:
        with self._lock:
            ref = self._caches.get(id(cache))
            if ref is not None and ref() is cache:
                del self._caches[id(cache)]

    def _live_caches(self) -> list[Shrinkable]:
        with self._lock:
            refs = list(self._caches.values())
        return [c for c in (r() for r in refs) if c is not None]

    def check(self) -> GCAction:
        """Read the pressure once and, at ``collect_on`` or above, collect garbage
        and shrink the caches.  Returns what it did."""
        reading = self.monitor.pressure()
        level = reading.level
        collected: int | None = None
        freed = shrunk = errors = 0
        fraction = 0.0
        if level >= self.collect_on:
            collected = gc.collect()
            fraction = (
                self.critical_fraction if level >= PressureLevel.CRITICAL
                else self.warning_fraction
            )
            for cache in self._live_caches():
                try:
                    got = cache.shrink(fraction)
                    freed += int(got) if isinstance(got, int) else 0
                    shrunk += 1
                except Exception:  # noqa: BLE001 - one bad cache must not stop the others; logged
                    errors += 1
                    _log.exception("GarbageCollectionManager: %r.shrink() failed", cache)
        with self._lock:
            self._checks += 1
            self._last = level
            self._errors += errors
            if collected is not None:
                self._collections += 1
                self._objects += collected
                self._freed += freed
        return GCAction(level, collected, freed, shrunk, fraction)

    @property
    def stats(self) -> GCStats:
        with self._lock:
            return GCStats(
                checks=self._checks,
                collections=self._collections,
                objects_collected=self._objects,
                bytes_freed=self._freed,
                errors=self._errors,
                last_level=self._last,
                caches=len(self._caches),
            )

    def _tick(self) -> None:
        try:
            self.check()
        except Exception:  # noqa: BLE001 - the background thread survives; logged and counted
            with self._lock:
                self._errors += 1
            _log.exception("GarbageCollectionManager: check failed")

    def start(self, interval: float = 5.0) -> None:
        """Run ``check()`` every ``interval`` seconds on a daemon thread."""
        if self._ticker is not None and self._ticker.running:
            raise RuntimeError("GarbageCollectionManager is already running")
        self._ticker = _Ticker("amulet-gc-manager", interval, self._tick)

    def stop(self) -> None:
        """Stop the background thread (no-op when not started)."""
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None

    @property
    def running(self) -> bool:
        return self._ticker is not None and self._ticker.running

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

