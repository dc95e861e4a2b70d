"""Metrics: native counters, gauges, histograms and summaries, the Prometheus
text and OpenMetrics expositions, and one shared arena for all the workers of a
host.  A drop-in for prometheus_client's instrumentation API::

    from amulet_native import metrics

    REQUESTS = metrics.Counter("http_requests", "Requests served", ["route", "status"])
    LATENCY = metrics.Histogram("http_request_duration_seconds", "Latency", ["route"])

    REQUESTS.labels("/predict", "200").inc()
    with LATENCY.labels("/predict").time():
        ...
    body, content_type = metrics.exposition(request.headers.get("accept"))

Values live in native memory and every update is a few atomics in C: no Python
lock on the hot path, a cached ``labels()`` child costs one native call.  With
``metrics.multiprocess(dir)`` (or ``AMULET_METRICS_DIR``) every worker writes
into its own slot of one shared arena file; any worker's ``/metrics`` shows the
sum over all of them, dead workers are folded into an aggregate, and the file
does not grow with restarts.  Summaries keep a mergeable DDSketch-style sketch
(relative error <= 1% over 1e-9 .. 1e12), so their quantiles stay right when
workers are merged.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import gzip
import hashlib
import inspect
import json
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, Self, TypeVar, cast

from . import _core
from .errors import AmuletError, ValidationError

__all__ = [
    "CONTENT_TYPE_LATEST",
    "DEFAULT_BUCKETS",
    "OPENMETRICS_CONTENT_TYPE",
    "REGISTRY",
    "Alert",
    "AlertManager",
    "AlertRule",
    "CollectorRegistry",
    "Counter",
    "Gauge",
    "Histogram",
    "Metric",
    "PerformanceMonitor",
    "Sample",
    "Summary",
    "exposition",
    "generate_latest",
    "instrument_library",
    "make_asgi_app",
    "multiprocess",
    "multiprocess_dir",
    "performance_monitor",
    "start_http_server",
    "timed_operation",
]

CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
INF = float("inf")
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, INF,
)  # fmt: skip
DEFAULT_QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)
DEFAULT_MAX_SERIES = 10_000
MAX_LABEL_VALUE_LENGTH = 4096
OVERFLOW_VALUE = "__overflow__"

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_GAUGE_MODES = {
    # mode: (arena fold, drop dead workers, mark writes with the wall time)
    "sum": ("add", False, False),
    "livesum": ("add", True, False),
    "max": ("max", False, False),
    "livemax": ("max", True, False),
    "min": ("min", False, False),
    "livemin": ("min", True, False),
    "mostrecent": ("latest", False, True),
    "livemostrecent": ("latest", True, True),
}

F = TypeVar("F", bound=Callable[..., Any])


# ---- the data model exposed by collectors --------------------------------------


class Sample(NamedTuple):
    """One line of the exposition (prometheus_client's shape)."""

    name: str
    labels: dict[str, str]
    value: float
    timestamp: float | None = None
    exemplar: Any = None


class Metric:
    """A metric family as collectors yield it: ``name`` (without ``_total`` for
    counters), ``type`` ("counter", "gauge", "histogram", "summary", "info",
    "unknown"), ``documentation``, ``unit`` and ``samples``."""

    def __init__(self, name: str, documentation: str, typ: str, unit: str = "") -> None:
        _check_name(name)
        if typ == "counter" and name.endswith("_total"):
            # the family name of a counter is without _total (its samples have it)
            name = _check_name(name[: -len("_total")])
        self.name = name
        self.documentation = documentation
        self.type = typ
        self.unit = unit
        self.samples: list[Sample] = []

    def add_sample(self, name: str, labels: Mapping[str, str], value: float) -> None:
        _check_name(name)
        for k in labels:
            if not isinstance(k, str) or not _LABEL_NAME.fullmatch(k):
                raise ValidationError(f"invalid label name {k!r}", field="labels")
        self.samples.append(Sample(name, dict(labels), float(value)))

    def __repr__(self) -> str:
        return f"Metric({self.name!r}, {self.type!r}, samples={len(self.samples)})"


class Collector(Protocol):
    def collect(self) -> Iterable[Any]: ...


# ---- validation ---------------------------------------------------------------


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _METRIC_NAME.fullmatch(name):
        raise ValidationError(f"invalid metric name {name!r}", field="name")
    return name


def _check_labelnames(labelnames: Iterable[str], reserved: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(labelnames, str):
        raise ValidationError("labelnames must be a sequence of names, not a string",
                              field="labelnames")
    names = tuple(labelnames)
    for n in names:
        if not isinstance(n, str) or not _LABEL_NAME.fullmatch(n) or n.startswith("__"):
            raise ValidationError(f"invalid label name {n!r}", field="labelnames")
        if n in reserved:
            raise ValidationError(f"label name {n!r} is reserved for this type", field="labelnames")
    if len(set(names)) != len(names):
        raise ValidationError(f"duplicate label names in {names!r}", field="labelnames")
    return names


def _check_value(v: object) -> str:
    s = v if type(v) is str else str(v)
    if len(s) > MAX_LABEL_VALUE_LENGTH:
        raise ValidationError(
            f"label value of {len(s)} characters (max {MAX_LABEL_VALUE_LENGTH})", field="labels"
        )
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("label value is not valid Unicode (lone surrogate)",
                              field="labels") from None
    return s


# ---- text formatting ---------------------------------------------------------------


def _float(v: float) -> str:
    """Go's float formatting, as Prometheus writes it (prometheus_client's rule)."""
    if v == INF:
        return "+Inf"
    if v == -INF:
        return "-Inf"
    if v != v:  # noqa: PLR0124 - NaN, without a function call
        return "NaN"
    s = repr(float(v))
    dot = s.find(".")
    if v > 0 and dot > 6:
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def _escape_value(v: str) -> str:
    if "\\" in v or '"' in v or "\n" in v:
        return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return v


def _escape_help(v: str, openmetrics: bool) -> str:
    v = v.replace("\\", r"\\").replace("\n", r"\n")
    return v.replace('"', r"\"") if openmetrics else v


def _label_text(names: Sequence[str], values: Sequence[str]) -> str:
    return ",".join(f'{n}="{_escape_value(v)}"' for n, v in zip(names, values))


def _braces(inner: str) -> str:
    return "{" + inner + "}" if inner else ""


# ---- the shared arena (multi-worker mode) ------------------------------------------

_ARENA_FILE = "metrics.arena"
_KEY_SIZE = 512  # bytes of a series key: JSON of name, type and label values
_mp_lock = threading.RLock()
_mp_arena: _core.Arena | None = None
_mp_dir: str | None = None
_all_families: weakref.WeakSet[_MetricBase] = weakref.WeakSet()


def multiprocess_dir() -> str | None:
    """The directory of the shared arena, or None in single-process mode."""
    return _mp_dir


def multiprocess(
    directory: str | os.PathLike[str],
    *,
    max_workers: int = 64,
    max_records: int = 8192,
    slot_units: int = 32768,
) -> _core.Arena:
    """Switch to multi-worker mode: every metric (existing ones included) writes
    into this process's slot of ``<directory>/metrics.arena``, and every
    exposition reads the sum over all live and dead workers.  Call it once per
    process before serving (or set ``AMULET_METRICS_DIR`` before import);
    workers forked afterwards get their own slot automatically.  The geometry
    applies when the file is created: ``max_workers`` live workers at once,
    ``max_records`` series in all, ``slot_units`` x 64 bytes of values per
    worker.  Raises ArenaError for a corrupt or foreign file."""
    global _mp_arena, _mp_dir
    path = os.fspath(directory)
    if not os.path.isdir(path):
        raise ValidationError(f"metrics directory {path!r} does not exist", field="directory")
    with _mp_lock:
        if _mp_arena is not None and _mp_dir == path:
            return _mp_arena
        arena = _core.Arena(
            os.path.join(path, _ARENA_FILE),
            max_records=max_records,
            max_slots=max_workers + 1,
            key_size=_KEY_SIZE,
            slot_units=slot_units,
        )
        _mp_arena, _mp_dir = arena, path
        _view.reset()
        for fam in list(_all_families):
            fam._move_to_arena()
        return arena


def _arena() -> _core.Arena | None:
    return _mp_arena


def _record_key(kind: str, name: str, values: Sequence[str], layout: str = "") -> str:
    key: list[Any] = ["s", name, kind, list(values)]
    if layout:
        key.append(layout)
    return json.dumps(key, ensure_ascii=False, separators=(",", ":"))


def _layout_of(bounds: Sequence[float]) -> str:
    """A short tag of a histogram's bucket bounds: part of its series keys, so
    that workers (or an earlier run, the arena file persists) with other
    buckets never share a record whose words mean other buckets."""
    text = json.dumps([float(b) for b in bounds], separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


# ---- the registry ------------------------------------------------------------------


# The sample names a family exposes (as in prometheus_client): two families may
# not share any, else the exposition holds a second HELP/TYPE for one name.
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("", "_total", "_created"),
    "gauge": ("",),
    "histogram": ("", "_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}


class CollectorRegistry:
    """Metrics and collectors to expose.  ``register`` refuses a name twice."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._collectors: list[Any] = []
        self._names: dict[str, Any] = {}

    def register(self, collector: Any) -> None:
        names: list[str] = []
        if isinstance(collector, _MetricBase):
            names = [collector._name + sfx for sfx in _SUFFIXES[collector._kind]]
        with self._lock:
            for n in names:
                if n in self._names:
                    raise ValidationError(f"duplicated metric name {n!r} in the registry",
                                          field="name")
            for n in names:
                self._names[n] = collector
            self._collectors.append(collector)
        if isinstance(collector, _MetricBase):
            _family_record(collector)

    def unregister(self, collector: Any) -> None:
        with self._lock:
            self._collectors = [c for c in self._collectors if c is not collector]
            self._names = {n: c for n, c in self._names.items() if c is not collector}

    def _families(self) -> Iterator[_FastFamily | Any]:
        if _arena() is not None:
            _view.refresh()
        with self._lock:
            collectors = list(self._collectors)
        local = set()
        taken: set[str] = set()  # sample names exposed so far
        for c in collectors:
            if isinstance(c, _MetricBase):
                local.add(c._name)
                taken.update(c._name + sfx for sfx in _SUFFIXES[c._kind])
                yield _FastFamily.of(c)
            else:
                yield from c.collect()
        if self is REGISTRY and _arena() is not None:
            for name in _view.names():
                if name not in local:
                    fam = _orphan_family(name)
                    if fam is None or fam.kind not in _SUFFIXES:
                        continue
                    # another worker's family whose sample names clash with one
                    # exposed already (Gauge y_total here, Counter y there): skipped,
                    # a second HELP/TYPE for one name would fail the whole scrape
                    names = {name + sfx for sfx in _SUFFIXES[fam.kind]}
                    if names & taken:
                        continue
                    taken |= names
                    yield fam
        arena = _arena()
        if self is REGISTRY and arena is not None:
            # refusals (no free worker slot, record or data unit): a worker
            # refused a slot loses its writes, so the count must be visible
            st = arena.stats()
            m = Metric("amulet_metrics_arena_refused", "Worker slots and series refused by the "
                       "full shared metrics arena (their values are not counted).", "counter")
            m.add_sample("amulet_metrics_arena_refused_total", {}, st["overflow"])
            yield m
            m = Metric("amulet_metrics_arena_live_workers", "Worker slots in use in the shared "
                       "metrics arena.", "gauge")
            m.add_sample("amulet_metrics_arena_live_workers", {}, st["live_slots"])
            yield m
        dropped = [(c._name, c._dropped) for c in collectors
                   if isinstance(c, _MetricBase) and c._dropped]
        if dropped:
            m = Metric("amulet_metrics_series_dropped", "Label sets refused by max_series "
                       "(counted into the __overflow__ series)", "counter")
            for n, d in dropped:
                m.add_sample("amulet_metrics_series_dropped_total", {"metric": n}, d)
            yield m

    def collect(self) -> Iterator[Metric]:
        """Every family as a :class:`Metric` with samples."""
        for fam in self._families():
            yield fam.to_metric() if isinstance(fam, _FastFamily) else fam

    def get_sample_value(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """The value of one sample (tests and alerts), or None."""
        want = dict(labels or {})
        for m in self.collect():
            for s in m.samples:
                if s.name == name and s.labels == want:
                    return float(s.value)
        return None


REGISTRY = CollectorRegistry()
"""The default registry: metrics register here unless given registry=."""


# ---- the metric types --------------------------------------------------------------


class _MetricBase:
    """Shared by the four types (mixed into the native cores).  A parent with
    label names holds children; a child (or a metric without labels) holds a
    cell.  Both are instances of the public class, as in prometheus_client."""

    _kind = "untyped"
    _reserved: tuple[str, ...] = ()
    _name: str
    _documentation: str
    _unit: str
    _labelnames: tuple[str, ...]
    _labelvalues: tuple[str, ...]
    _children: dict[Any, Any]
    _lock: threading.Lock
    _max_series: int
    _dropped: int
    _created: float
    _lbl: str
    _parent: Any
    _record: int | None
    _registry: CollectorRegistry | None

    if TYPE_CHECKING:  # provided by the native base classes (_core.*Core)

        def _attach(
            self,
            source: tuple[_core.Arena, int] | None,
            nwords: int,
            bounds: Sequence[float] | None = None,
            mark_time: bool = False,
            /,
        ) -> None: ...
        def _set_children(self, children: dict[Any, Any], nlabels: int, /) -> None: ...
        def _get(self) -> list[float]: ...
        def _value(self) -> float: ...

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        registry: CollectorRegistry | None = REGISTRY,
        _labelvalues: Sequence[str] | None = None,
        *,
        max_series: int = DEFAULT_MAX_SERIES,
    ) -> None:
        full = "_".join(p for p in (namespace, subsystem, name) if p)
        _check_name(full)
        if not isinstance(documentation, str):
            raise ValidationError("documentation must be a string", field="documentation")
        if unit and not _LABEL_NAME.fullmatch(unit):
            raise ValidationError(f"invalid unit {unit!r}", field="unit")
        if self._kind == "counter" and full.endswith("_total"):
            full = _check_name(full[: -len("_total")])
        if unit and not full.endswith("_" + unit):
            full = f"{full}_{unit}"
        if not isinstance(max_series, int) or max_series < 1:
            raise ValidationError("max_series must be a positive int", field="max_series")
        self._name = full
        self._documentation = documentation
        self._unit = unit
        self._labelnames = _check_labelnames(labelnames, self._reserved)
        self._labelvalues = ()
        self._children = {}
        self._lock = threading.Lock()
        self._max_series = max_series
        self._dropped = 0
        self._version = 0
        self._created = time.time()
        self._lbl = ""
        self._parent = None
        self._record = None
        self._registry = None
        self._setup()
        if self._labelnames:
            self._set_children(self._children, len(self._labelnames))
        else:
            self._attach_cell(())
        _all_families.add(self)
        if registry is not None:
            registry.register(self)
            self._registry = registry

    # -- per-type hooks --
    def _setup(self) -> None:
        """Validate the type's own options (called by __init__)."""

    def _nwords(self) -> int:
        return 1

    def _fold(self) -> tuple[str, bool, bool]:
        return ("add", False, False)

    def _bounds(self) -> Sequence[float] | None:
        return None

    def _layout(self) -> str:
        return ""

    def _attach_cell(self, values: tuple[str, ...]) -> None:
        arena = _arena()
        fold, drop, mark_time = self._fold()
        if arena is not None:
            key = _record_key(self._kind, self._name, values, self._layout())
            if values and len(key.encode("utf-8")) > _KEY_SIZE:
                # label values too long for a shared key (single-process mode
                # takes them): refused like a full arena, into the overflow series
                from .errors import ArenaFullError

                raise ArenaFullError(f"series key of {len(key.encode('utf-8'))} bytes exceeds "
                                     f"the arena's {_KEY_SIZE}")
            units = (self._nwords() + 7) // 8
            rec = arena.record(key, units, fold, drop=drop)
            self._attach((arena, rec), self._nwords(), self._bounds(), mark_time)
            self._record = rec
        else:
            self._attach(None, self._nwords(), self._bounds(), False)

    def _move_to_arena(self) -> None:
        from .errors import ArenaError

        targets = list(self._children.values()) if self._labelnames else [self]
        for m in targets:
            if m._record is None:
                try:
                    m._attach_cell(m._labelvalues)
                except ArenaError:
                    self._dropped += 1  # stays local: counted as dropped from the shared view

    # -- children --
    def _labels_slow(self, *values: Any, **labels: Any) -> Any:
        if not self._labelnames:
            raise ValidationError(f"metric {self._name!r} has no label names", field="labels")
        if self._parent is not None:
            raise ValidationError("labels() on a child", field="labels")
        if values and labels:
            raise ValidationError("pass label values by position or by name, not both",
                                  field="labels")
        if labels:
            if set(labels) != set(self._labelnames):
                raise ValidationError(
                    f"labels {sorted(labels)} do not match {list(self._labelnames)}",
                    field="labels",
                )
            values = tuple(labels[n] for n in self._labelnames)
        elif len(values) != len(self._labelnames):
            raise ValidationError(
                f"{len(values)} label values for {len(self._labelnames)} label names",
                field="labels",
            )
        vals = tuple(_check_value(v) for v in values)
        key: Any = vals[0] if len(vals) == 1 else vals
        child = self._children.get(key)
        if child is not None:
            return child
        if all(v == OVERFLOW_VALUE for v in vals):
            # the overflow series' own label set: one series, never two
            with self._lock:
                return self._overflow_child()
        with self._lock:
            child = self._children.get(key)
            if child is not None:
                return child
            if len(self._children) >= self._max_series:
                self._dropped += 1
                return self._overflow_child()
            try:
                child = self._make_child(vals)
            except Exception as exc:
                from .errors import ArenaError

                if not isinstance(exc, ArenaError):
                    raise
                self._dropped += 1
                return self._overflow_child()
            self._children[key] = child
            self._version += 1
            return child

    def _make_child(self, values: tuple[str, ...]) -> Any:
        child = type(self).__new__(type(self))
        child.__dict__.update(self.__dict__)
        child._children = {}
        child._labelvalues = values
        child._parent = self
        child._created = time.time()
        child._lbl = _label_text(self._labelnames, values)
        child._record = None
        child._attach_cell(values)
        return child

    def _overflow_child(self) -> Any:
        over = self.__dict__.get("_overflow")
        if over is None:
            over = self._make_child(tuple(OVERFLOW_VALUE for _ in self._labelnames))
            self.__dict__["_overflow"] = over
            self._version += 1
        return over

    def remove(self, *values: Any) -> None:
        """Forget one label set (its values are lost; in multi-worker mode the
        shared record stays, as records are never freed)."""
        if not self._labelnames or len(values) != len(self._labelnames):
            raise ValidationError(
                f"{len(values)} label values for {len(self._labelnames)} label names",
                field="labels",
            )
        vals = tuple(_check_value(v) for v in values)
        with self._lock:
            self._children.pop(vals[0] if len(vals) == 1 else vals, None)
            self._version += 1

    def clear(self) -> None:
        """Forget every label set."""
        with self._lock:
            self._children.clear()
            self._version += 1

    @property
    def dropped_series(self) -> int:
        """Label sets refused by max_series (or a full arena) and counted into
        the overflow series."""
        return self._dropped

    def _series(self) -> list[Any]:
        if not self._labelnames:
            return [self]
        out = list(self._children.values())
        over = self.__dict__.get("_overflow")
        if over is not None:
            out.append(over)
        return out

    def describe(self) -> list[Metric]:
        return [Metric(self._name, self._documentation, self._kind, self._unit)]

    def collect(self) -> list[Metric]:
        """The family with its samples (the generic, slower path)."""
        return [_FastFamily.of(self).to_metric()]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r}, labels={self._labelvalues or self._labelnames})"


class Counter(_MetricBase, _core.CounterCore):
    """A monotonically increasing count: ``inc(amount=1)``; ``count_exceptions()``."""

    _kind = "counter"

    def count_exceptions(
        self, exception: type[BaseException] | tuple[type[BaseException], ...] = Exception
    ) -> _ExceptionCounter:
        """Context manager and decorator counting the exceptions it sees (re-raised)."""
        return _ExceptionCounter(self, exception)

    def _value_now(self) -> float:
        return self._get()[0]


class Gauge(_MetricBase, _core.GaugeCore):
    """A value that goes up and down: ``inc``, ``dec``, ``set``,
    ``set_to_current_time``, ``track_inprogress()``, ``time()``.
    ``multiprocess_mode`` says how workers combine: sum (default), max, min,
    mostrecent, or live* (dead workers' values dropped)."""

    _kind = "gauge"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        registry: CollectorRegistry | None = REGISTRY,
        _labelvalues: Sequence[str] | None = None,
        multiprocess_mode: str = "sum",
        *,
        max_series: int = DEFAULT_MAX_SERIES,
    ) -> None:
        if multiprocess_mode not in _GAUGE_MODES:
            raise ValidationError(
                f"multiprocess_mode {multiprocess_mode!r} not one of {sorted(_GAUGE_MODES)}",
                field="multiprocess_mode",
            )
        self._mode = multiprocess_mode
        super().__init__(name, documentation, labelnames, namespace, subsystem, unit, registry,
                         max_series=max_series)

    def _nwords(self) -> int:
        return 2

    def _fold(self) -> tuple[str, bool, bool]:
        return _GAUGE_MODES[self._mode]

    def track_inprogress(self) -> _InProgress:
        """Context manager and decorator: +1 while inside, -1 on the way out."""
        return _InProgress(self)

    def time(self) -> _Timer:
        """Context manager and decorator setting the gauge to the duration (s)."""
        return _Timer(self.set)

    def set_function(self, f: Callable[[], float]) -> None:
        """Read the value from f at every scrape (this process only)."""
        self.__dict__["_function"] = f


class Histogram(_MetricBase, _core.HistogramCore):
    """Counts of observations in buckets (upper bounds, ascending; +Inf added):
    ``observe(v)``, ``time()``.  The bucket is found by binary search in C."""

    _kind = "histogram"
    _reserved = ("le",)

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        registry: CollectorRegistry | None = REGISTRY,
        _labelvalues: Sequence[str] | None = None,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        *,
        max_series: int = DEFAULT_MAX_SERIES,
    ) -> None:
        try:
            b = [float(x) for x in buckets]
        except (TypeError, ValueError):
            raise ValidationError("buckets must be numbers", field="buckets") from None
        if b and b[-1] != INF:
            b.append(INF)
        if len(b) < 2 or any(math.isnan(x) for x in b) or any(b[i] >= b[i + 1] for i in range(len(b) - 1)):
            raise ValidationError("buckets must be ascending, distinct, at least one finite",
                                  field="buckets")
        if len(b) > 1000:
            raise ValidationError("at most 1000 buckets", field="buckets")
        self._upper = tuple(b)
        self._le = tuple(_float(x) for x in b)
        super().__init__(name, documentation, labelnames, namespace, subsystem, unit, registry,
                         max_series=max_series)

    def _nwords(self) -> int:
        return len(self._upper) + 2

    def _bounds(self) -> Sequence[float]:
        return self._upper[:-1]

    def _layout(self) -> str:
        return _layout_of(self._upper[:-1])

    def time(self) -> _Timer:
        """Context manager and decorator observing the duration in seconds."""
        return _Timer(self.observe)


class Summary(_MetricBase, _core.SummaryCore):
    """Count, sum and quantiles (from a mergeable sketch, relative error <= 1%):
    ``observe(v)``, ``time()``.  ``quantiles`` are exposed as
    ``name{quantile="0.5"}``; pass ``quantiles=()`` for count and sum only."""

    _kind = "summary"
    _reserved = ("quantile",)

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        registry: CollectorRegistry | None = REGISTRY,
        _labelvalues: Sequence[str] | None = None,
        quantiles: Sequence[float] = DEFAULT_QUANTILES,
        *,
        max_series: int = 1000,
    ) -> None:
        try:
            qs = tuple(float(q) for q in quantiles)
        except (TypeError, ValueError):
            raise ValidationError("quantiles must be numbers", field="quantiles") from None
        if any(not 0.0 <= q <= 1.0 for q in qs):
            raise ValidationError("quantiles must be within [0, 1]", field="quantiles")
        if len(set(qs)) != len(qs):
            raise ValidationError(f"duplicate quantiles in {qs!r}", field="quantiles")
        self._qs = qs
        self._qtext = tuple(_float(q) for q in qs)
        super().__init__(name, documentation, labelnames, namespace, subsystem, unit, registry,
                         max_series=max_series)

    def _nwords(self) -> int:
        return int(_core.SKETCH_WORDS)

    def time(self) -> _Timer:
        """Context manager and decorator observing the duration in seconds."""
        return _Timer(self.observe)

    def quantile(self, q: float) -> float:
        """The q-quantile of this series (NaN when empty); q within [0, 1]."""
        if not 0.0 <= q <= 1.0:
            raise ValidationError(f"quantile {q!r} is not within [0, 1]", field="q")
        return self._quantiles([q])[0]


# ---- context managers / decorators -----------------------------------------------


class _Timer:
    def __init__(self, sink: Callable[[float], None]) -> None:
        self._sink = sink
        self._start: list[float] = []

    def __enter__(self) -> Self:
        self._start.append(time.perf_counter())
        return self

    def __exit__(self, *exc: object) -> None:
        self._sink(max(time.perf_counter() - self._start.pop(), 0.0))

    def __call__(self, fn: F) -> F:
        sink = self._sink
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    sink(max(time.perf_counter() - t0, 0.0))

            return cast(F, awrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                sink(max(time.perf_counter() - t0, 0.0))

        return cast(F, wrapper)


class _ContextDecorator:
    """A context manager that also decorates: each call of the decorated sync or
    async function runs inside ``with self``."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    def __call__(self, fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                with self:
                    return await fn(*args, **kwargs)

            return cast(F, awrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return fn(*args, **kwargs)

        return cast(F, wrapper)


class _ExceptionCounter(_ContextDecorator):
    def __init__(self, counter: Counter, exc: Any) -> None:
        self._counter = counter
        self._exc = exc

    def __exit__(self, typ: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if typ is not None and issubclass(typ, self._exc):
            self._counter.inc()


class _InProgress(_ContextDecorator):
    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge

    def __enter__(self) -> None:
        self._gauge.inc()

    def __exit__(self, *exc: object) -> None:
        self._gauge.dec()


# ---- reading families for exposition ----------------------------------------------


@dataclass
class _FastFamily:
    """A family ready to print: rows of (label text, values, created)."""

    name: str
    kind: str
    doc: str
    unit: str
    labelnames: tuple[str, ...]
    rows: list[tuple[str, tuple[str, ...], list[float], tuple[float, str] | None]]
    le: tuple[str, ...] = ()
    src: Any = None  # counters and gauges in process memory: rendered in C from the cells
    arena_ids: list[int] | None = None  # counters and gauges in the arena: rendered in C
    arena_prefixes: list[str] | None = None
    qs: tuple[float, ...] = ()
    qtext: tuple[str, ...] = ()
    layout: str = ""  # a histogram's bucket tag (_layout_of): only its own records are read

    @staticmethod
    def of(m: _MetricBase) -> _FastFamily:
        fam = _FastFamily(m._name, m._kind, m._documentation, m._unit, m._labelnames, [])
        if isinstance(m, Histogram):
            fam.le = m._le
            fam.layout = m._layout()
        if isinstance(m, Summary):
            fam.qs, fam.qtext = m._qs, m._qtext
        arena = _arena()
        if arena is not None and _view.has(m._name):
            _view.fill(fam)
            return fam
        fn = m.__dict__.get("_function")
        if fn is None and fam.kind in ("counter", "gauge"):
            fam.src = m
            return fam
        for s in m._series():
            if isinstance(s, Summary):
                vals = s._get() + s._quantiles(fam.qs)
            elif fn is not None:
                vals = [float(fn()), 1.0]
            else:
                vals = s._get()
            if fam.kind == "histogram":
                vals[-1] = sum(vals[:-2])  # the count is the sum of the buckets
            ct = s.__dict__.get("_ctext")
            if ct is None or ct[0] != s._created:  # the created time, formatted once
                ct = s.__dict__["_ctext"] = (s._created, _float(s._created))
            fam.rows.append((s._lbl, s._labelvalues, vals, ct))
        return fam

    def materialize(self) -> None:
        """Rows from the cells of a C-rendered family (for the generic paths)."""
        if self.arena_ids is not None:
            arena = _arena()
            assert arena is not None
            series = {rid: values for rid, _k, values, _l in _view._by_name.get(self.name, [])}
            for rid in self.arena_ids:
                vals = arena.read(rid, 2 if self.kind == "gauge" else 1)
                values = series[rid]
                self.rows.append((_label_text(self.labelnames, values), values, vals, None))
            self.arena_ids = None
        if self.src is None:
            return
        for s in self.src._series():
            ct = (s._created, _float(s._created))
            self.rows.append((s._lbl, s._labelvalues, s._get(), ct))
        self.src = None

    def to_metric(self) -> Metric:
        self.materialize()
        typ = self.kind
        m = Metric(self.name, self.doc, typ, self.unit)
        for _lbl, values, vals, created in self.rows:
            labels = dict(zip(self.labelnames, values))
            if typ == "counter":
                m.add_sample(self.name + "_total", labels, vals[0])
                if created is not None:
                    m.add_sample(self.name + "_created", labels, created[0])
            elif typ == "gauge":
                m.add_sample(self.name, labels, vals[0])
            elif typ == "histogram":
                acc = 0.0
                for le, c in zip(self.le, vals):
                    acc += c
                    m.add_sample(self.name + "_bucket", {**labels, "le": le}, acc)
                m.add_sample(self.name + "_count", labels, vals[-1])
                m.add_sample(self.name + "_sum", labels, vals[-2])
                if created is not None:
                    m.add_sample(self.name + "_created", labels, created[0])
            elif typ == "summary":
                for q, v in zip(self.qtext, vals[2:]):
                    m.add_sample(self.name, {**labels, "quantile": q}, v)
                m.add_sample(self.name + "_count", labels, vals[0])
                m.add_sample(self.name + "_sum", labels, vals[1])
                if created is not None:
                    m.add_sample(self.name + "_created", labels, created[0])
        return m


class _ArenaView:
    """The shared arena's records, parsed once (records are permanent) and
    grouped by family name; values are read fresh at every scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self._seen: dict[int, Any] = {}
        self._by_name: dict[str, list[tuple[int, str, tuple[str, ...], str]]] = {}
        self._lbl: dict[tuple[int, tuple[str, ...]], str] = {}
        self._prefix_cache: dict[tuple[Any, ...], tuple[Any, list[int], list[str]]] = {}
        self._known = -1
        self._meta: dict[str, list[Any]] = {}
        self._scanned = -1.0

    def refresh(self) -> None:
        arena = _arena()
        if arena is None:
            return
        with self._lock:
            arena.reclaim()
            known = arena.stats()["records"]
            if known == self._known:
                return  # records are never deleted: the same count is the same set
            self._known = known
            for key, rid, _units, _fold, _drop in arena.records():
                if rid in self._seen:
                    continue
                try:
                    parsed = json.loads(key.decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    parsed = None
                self._seen[rid] = parsed
                if not isinstance(parsed, list) or len(parsed) < 4:
                    continue
                if parsed[0] == "s":
                    _, name, kind, values = parsed[:4]
                    layout = parsed[4] if len(parsed) > 4 else ""
                    self._by_name.setdefault(name, []).append((rid, kind, tuple(values), layout))
                elif parsed[0] == "f":
                    self._meta.setdefault(parsed[1], parsed)

    def _prefixes(self, fam: _FastFamily) -> tuple[list[int], list[str]]:
        """Record ids and line prefixes of a counter or gauge family (cached
        until a new series of that name appears)."""
        series = self._by_name.get(fam.name, [])
        key = (fam.name, fam.kind, fam.labelnames, len(series))
        hit = self._prefix_cache.get(key[:3])
        if hit is not None and hit[0] == key:
            return hit[1], hit[2]
        name = fam.name + ("_total" if fam.kind == "counter" else "")
        ids, prefixes = [], []
        for rid, kind, values, _layout in series:
            if kind == fam.kind:
                ids.append(rid)
                prefixes.append(f"{name}{_braces(_label_text(fam.labelnames, values))} ")
        self._prefix_cache[key[:3]] = (key, ids, prefixes)
        return ids, prefixes

    def has(self, name: str) -> bool:
        return name in self._by_name

    def names(self) -> list[str]:
        return list(self._by_name)

    def meta(self, name: str) -> list[Any] | None:
        return self._meta.get(name)

    def fill(self, fam: _FastFamily) -> None:
        arena = _arena()
        assert arena is not None
        if fam.kind in ("counter", "gauge"):
            fam.arena_ids, fam.arena_prefixes = self._prefixes(fam)
            return
        nwords = {"counter": 1, "gauge": 2, "histogram": len(fam.le) + 2}.get(
            fam.kind, int(_core.SKETCH_WORDS)
        )
        for rid, kind, values, layout in self._by_name.get(fam.name, ()):
            if kind != fam.kind or layout != fam.layout:
                continue
            vals = arena.read(rid, nwords)
            if fam.kind == "histogram":
                vals[-1] = sum(vals[:-2])  # the count is the sum of the buckets
            if fam.kind == "summary":
                vals = vals[:2] + _core.sketch_quantiles(vals, fam.qs)
            lkey = (rid, fam.labelnames)
            lbl = self._lbl.get(lkey)
            if lbl is None:
                lbl = self._lbl[lkey] = _label_text(fam.labelnames, values)
            fam.rows.append((lbl, values, vals, None))


_view = _ArenaView()


def _family_record(m: _MetricBase) -> None:
    """Publish a family's description in the arena, so that a worker that never
    created it can still expose it."""
    arena = _arena()
    if arena is None:
        return
    extra: list[Any] = []
    if isinstance(m, Histogram):
        extra = [list(m._upper[:-1])]
    elif isinstance(m, Summary):
        extra = [list(m._qs)]
    doc = m._documentation
    for cut in (len(doc), 200, 0):
        key = json.dumps(["f", m._name, m._kind, list(m._labelnames), m._unit, doc[:cut], *extra],
                         ensure_ascii=False, separators=(",", ":"))
        if len(key.encode("utf-8")) <= _KEY_SIZE:
            try:
                arena.record(key, 1, "shared")
            except AmuletError:  # full: the family stays local-only
                return
            return


def _orphan_family(name: str) -> _FastFamily | None:
    meta = _view.meta(name)
    if meta is None:
        return None
    _, _, kind, labelnames, unit, doc, *extra = meta
    fam = _FastFamily(name, kind, doc, unit, tuple(labelnames), [])
    if kind == "histogram" and extra:
        fam.le = tuple(_float(float(x)) for x in [*extra[0], INF])
        fam.layout = _layout_of(extra[0])
    if kind == "summary" and extra:
        fam.qs = tuple(float(q) for q in extra[0])
        fam.qtext = tuple(_float(q) for q in fam.qs)
    _view.fill(fam)
    return fam



# ---- exposition ----------------------------------------------------------------------


def _render_cells(fam: _FastFamily, om: bool) -> str:
    """The sample lines of a counter or gauge family, formatted in C from the
    cells; the per-series prefixes are built once per label-set version."""
    m = fam.src
    key = (m._version, om, fam.name)
    cache = m.__dict__.get("_expo")
    if cache is None or cache[0] != key:
        series = m._series()
        name = fam.name + ("_total" if fam.kind == "counter" else "")
        prefixes = [f"{name}{_braces(s._lbl)} " for s in series]
        extras = None
        if om and fam.kind == "counter":
            extras = [f"{fam.name}_created{_braces(s._lbl)} {_float(s._created)}\n" for s in series]
        cache = m.__dict__["_expo"] = (key, series, prefixes, extras)
    _, series, prefixes, extras = cache
    return _core.render_cells(series, prefixes, 0, extras)


def _write_fast(out: list[str], fam: _FastFamily, om: bool) -> None:
    name, kind = fam.name, fam.kind
    doc = _escape_help(fam.doc, om)
    if om:
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")
        if fam.unit:
            out.append(f"# UNIT {name} {fam.unit}\n")
    elif kind == "counter":
        out.append(f"# HELP {name}_total {doc}\n# TYPE {name}_total counter\n")
    else:
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")
    if fam.src is not None:
        out.append(_render_cells(fam, om))
        return
    if fam.arena_ids is not None and fam.arena_prefixes is not None:
        arena = _arena()
        assert arena is not None
        out.append(_core.render_arena(arena, fam.arena_ids, fam.arena_prefixes, 0,
                                      2 if kind == "gauge" else 1))
        return
    f = _float
    if kind == "counter":
        for lbl, _v, vals, created in fam.rows:
            b = "{" + lbl + "}" if lbl else ""
            out.append(f"{name}_total{b} {f(vals[0])}\n")
            if om and created is not None:
                out.append(f"{name}_created{b} {created[1]}\n")
    elif kind == "gauge":
        for lbl, _v, vals, _c in fam.rows:
            out.append(f"{name}{'{' + lbl + '}' if lbl else ''} {f(vals[0])}\n")
    elif kind == "histogram":
        les = fam.le
        for lbl, _v, vals, created in fam.rows:
            pre = lbl + "," if lbl else ""
            b = "{" + lbl + "}" if lbl else ""
            acc = 0.0
            for le, c in zip(les, vals):
                acc += c
                out.append(f'{name}_bucket{{{pre}le="{le}"}} {f(acc)}\n')
            out.append(f"{name}_count{b} {f(vals[-1])}\n{name}_sum{b} {f(vals[-2])}\n")
            if om and created is not None:
                out.append(f"{name}_created{b} {created[1]}\n")
    elif kind == "summary":
        for lbl, _v, vals, created in fam.rows:
            pre = lbl + "," if lbl else ""
            b = "{" + lbl + "}" if lbl else ""
            for q, v in zip(fam.qtext, vals[2:]):
                out.append(f'{name}{{{pre}quantile="{q}"}} {f(v)}\n')
            out.append(f"{name}_count{b} {f(vals[0])}\n{name}_sum{b} {f(vals[1])}\n")
            if om and created is not None:
                out.append(f"{name}_created{b} {created[1]}\n")


_OM_TYPES = {"counter", "gauge", "histogram", "summary", "info", "stateset", "gaugehistogram",
             "unknown"}


def _write_generic(out: list[str], m: Any, om: bool) -> None:
    name, typ = m.name, getattr(m, "type", "unknown")
    head = name
    if typ == "untyped":
        typ = "unknown" if om else "untyped"
    if om and typ not in _OM_TYPES:
        typ = "unknown"
    if not om:  # OpenMetrics-only types in the text format (prometheus_client's mapping)
        if typ == "counter":
            head = name + "_total"
        elif typ == "info":
            head, typ = name + "_info", "gauge"
        elif typ == "stateset":
            typ = "gauge"
        elif typ == "gaugehistogram":
            typ = "histogram"
        elif typ not in ("gauge", "histogram", "summary", "untyped"):
            typ = "untyped"
    doc = _escape_help(m.documentation, om)
    out.append(f"# HELP {head} {doc}\n# TYPE {head} {typ}\n")
    unit = str(getattr(m, "unit", None) or "")
    if om and unit:
        out.append(f"# UNIT {name} {unit}\n")
    for s in m.samples:
        if not om and s.name.endswith("_created"):
            continue
        lbl = ",".join(f'{k}="{_escape_value(str(v))}"' for k, v in s.labels.items())
        ts = f" {_float(s.timestamp)}" if getattr(s, "timestamp", None) is not None else ""
        out.append(f"{s.name}{_braces(lbl)} {_float(float(s.value))}{ts}\n")


def generate_latest(registry: CollectorRegistry | None = None, *, openmetrics: bool = False) -> bytes:
    """The exposition of registry (default REGISTRY): Prometheus text 0.0.4, or
    OpenMetrics 1.0 (``# EOF``, ``_created``, units) with openmetrics=True."""
    reg = REGISTRY if registry is None else registry
    out: list[str] = []
    for fam in reg._families():
        if isinstance(fam, _FastFamily):
            _write_fast(out, fam, openmetrics)
        else:
            _write_generic(out, fam, openmetrics)
    if openmetrics:
        out.append("# EOF\n")
    return "".join(out).encode("utf-8")


def _wants_openmetrics(accept: str | None) -> bool:
    """OpenMetrics when the Accept header ranks it at least as high (q-value)
    as the text format (text/plain, text/* or */*); a tie goes to OpenMetrics."""
    if not accept:
        return False
    q_om = q_text = 0.0
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        media = media.strip().lower()
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:  # NaN, negative, out of range
                    q = 0.0
        if media == "application/openmetrics-text":
            q_om = max(q_om, q)
        elif media in ("text/plain", "text/*", "*/*"):
            q_text = max(q_text, q)
    return q_om > 0.0 and q_om >= q_text


def exposition(accept: str | None, registry: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """(body, content type) for a scrape with this Accept header: OpenMetrics
    when the scraper asks for it, else the Prometheus text format."""
    om = _wants_openmetrics(accept)
    return generate_latest(registry, openmetrics=om), (
        OPENMETRICS_CONTENT_TYPE if om else CONTENT_TYPE_LATEST
    )


def _accepts_gzip(accept_encoding: str | None) -> bool:
    """gzip listed in Accept-Encoding with a q-value above 0 ("gzip;q=0" refuses it)."""
    for part in (accept_encoding or "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip"):
            continue
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        return 0.0 < q <= 1.0
    return False


def _http_response(accept: str | None, accept_encoding: str | None,
                   registry: CollectorRegistry | None) -> tuple[bytes, list[tuple[str, str]]]:
    body, ctype = exposition(accept, registry)
    headers = [("Content-Type", ctype)]
    if _accepts_gzip(accept_encoding):
        body = gzip.compress(body, compresslevel=1)
        headers.append(("Content-Encoding", "gzip"))
    headers.append(("Content-Length", str(len(body))))
    return body, headers


def make_asgi_app(registry: CollectorRegistry | None = None) -> Callable[..., Awaitable[None]]:
    """An ASGI app serving the exposition (mount it at /metrics in FastAPI or
    Starlette).  The exposition is computed in a thread, off the event loop."""

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        hdrs = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if scope.get("method", "GET") not in ("GET", "HEAD"):
            await send({"type": "http.response.start", "status": 405,
                        "headers": [(b"allow", b"GET, HEAD"), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        body, headers = await asyncio.to_thread(
            _http_response, hdrs.get("accept"), hdrs.get("accept-encoding"), registry
        )
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(k.lower().encode(), v.encode()) for k, v in headers]})
        await send({"type": "http.response.body",
                    "body": b"" if scope.get("method") == "HEAD" else body})

    return app


def start_http_server(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> tuple[Any, threading.Thread]:
    """Serve the exposition on http://addr:port/ from a daemon thread (stdlib
    only).  Returns (server, thread); ``server.shutdown()`` stops it."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            try:
                body, headers = _http_response(self.headers.get("Accept"),
                                               self.headers.get("Accept-Encoding"), registry)
            except Exception as exc:  # noqa: BLE001 - a collector failed: 500, server lives on
                msg = f"error collecting metrics: {type(exc).__name__}\n".encode()
                self.send_response(500)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                self.wfile.write(msg)
                return
            self.send_response(200)
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    class Server(ThreadingHTTPServer):
        daemon_threads = True

    server = Server((addr, port), Handler)
    thread = threading.Thread(target=server.serve_forever, name="amulet-metrics", daemon=True)
    thread.start()
    return server, thread


# ---- built-in collectors -------------------------------------------------------------


class ProcessCollector:
    """process_* metrics of this process from /proc (CPU seconds, RSS, virtual
    memory, open and max fds, threads, start time) and the container's memory
    from the native MemoryMonitor (cgroup limit, usage, working set)."""

    def __init__(self, pid: str = "self", proc: str = "/proc") -> None:
        self._pid = pid
        self._proc = proc
        self._ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._boot = self._boot_time()

    def _boot_time(self) -> float:
        try:
            with open(os.path.join(self._proc, "stat"), "rb") as f:
                for line in f:
                    if line.startswith(b"btime "):
                        return float(line.split()[1])
        except OSError:
            pass
        return 0.0

    def collect(self) -> list[Metric]:
        out: list[Metric] = []

        def gauge(name: str, doc: str, value: float, typ: str = "gauge") -> None:
            m = Metric(name, doc, typ)
            m.add_sample(name + ("_total" if typ == "counter" else ""), {}, value)
            out.append(m)

        try:
            with open(os.path.join(self._proc, self._pid, "stat"), "rb") as f:
                stat = f.read().decode("ascii", "replace")
            fields = stat[stat.rindex(")") + 2:].split()
            utime, stime = float(fields[11]), float(fields[12])
            threads, start = float(fields[17]), float(fields[19])
            vsize, rss = float(fields[20]), float(fields[21])
            gauge("process_cpu_seconds", "Total user and system CPU time spent in seconds.",
                  (utime + stime) / self._ticks, "counter")
            gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", vsize)
            gauge("process_resident_memory_bytes", "Resident memory size in bytes.",
                  rss * self._page)
            gauge("process_start_time_seconds",
                  "Start time of the process since unix epoch in seconds.",
                  self._boot + start / self._ticks)
            gauge("process_threads", "Number of OS threads in the process.", threads)
        except (OSError, ValueError, IndexError):
            pass
        try:
            gauge("process_open_fds", "Number of open file descriptors.",
                  len(os.listdir(os.path.join(self._proc, self._pid, "fd"))))
        except OSError:
            pass
        try:
            with open(os.path.join(self._proc, self._pid, "limits"), "rb") as f:
                for line in f:
                    if line.startswith(b"Max open files"):
                        gauge("process_max_fds", "Maximum number of open file descriptors.",
                              float(line.split()[3]))
        except (OSError, ValueError, IndexError):
            pass
        try:
            from .memory import MemoryMonitor

            snap = MemoryMonitor().snapshot()
            if snap.cgroup_limit is not None:
                gauge("container_memory_limit_bytes", "The memory cgroup's limit.",
                      snap.cgroup_limit)
            if snap.cgroup_usage is not None:
                gauge("container_memory_usage_bytes", "The memory cgroup's usage.",
                      snap.cgroup_usage)
            if snap.cgroup_working_set is not None:
                gauge("container_memory_working_set_bytes",
                      "The memory cgroup's usage minus reclaimable page cache.",
                      snap.cgroup_working_set)
            gauge("amulet_memory_effective_limit_bytes",
                  "What this process can use: the cgroup limit, else physical memory.",
                  snap.effective_limit)
        except (AmuletError, OSError):  # no /proc or cgroup: the process_* metrics suffice
            return out
        return out


PROCESS_COLLECTOR = ProcessCollector()
REGISTRY.register(PROCESS_COLLECTOR)


class LibraryCollector:
    """amulet_native's own statistics, read at scrape time (no cost per
    operation): caches, queues, pools and lock managers handed to
    :func:`instrument_library`, and the decoder counters."""

    def __init__(self) -> None:
        self._objs: dict[str, dict[str, Callable[[], Any]]] = {
            "cache": {}, "queue": {}, "pool": {}, "locks": {}
        }

    def add(self, kind: str, name: str, obj: Any) -> None:
        try:
            self._objs[kind][name] = weakref.ref(obj)
        except TypeError:  # native types without weakref support: held strongly
            self._objs[kind][name] = lambda: obj

    def _live(self, kind: str) -> list[tuple[str, Any]]:
        out = []
        for name, ref in list(self._objs[kind].items()):
            obj = ref()
            if obj is None:
                del self._objs[kind][name]
            else:
                out.append((name, obj))
        return out

    def collect(self) -> list[Metric]:
        fams: dict[str, Metric] = {}

        def sample(name: str, typ: str, doc: str, labels: dict[str, str], v: float) -> None:
            m = fams.get(name)
            if m is None:
                m = fams[name] = Metric(name, doc, typ)
            m.add_sample(name + ("_total" if typ == "counter" else ""), labels, v)

        for name, c in self._live("cache"):
            st = _cache_stats(c)
            lb = {"cache": name}
            for key, typ, doc in (
                ("hits", "counter", "Cache lookups that found the key."),
                ("misses", "counter", "Cache lookups that missed."),
                ("evictions", "counter", "Entries evicted by size or count."),
                ("expirations", "counter", "Entries expired by TTL."),
                ("items", "gauge", "Entries in the cache."),
                ("bytes", "gauge", "Bytes held by the cache."),
            ):
                if key in st:
                    sample(f"amulet_cache_{key}", typ, doc, lb, float(st[key]))
        for name, q in self._live("queue"):
            st = q.stats()
            lb = {"queue": name}
            sample("amulet_queue_depth", "gauge", "Items in the queue.", lb, st.get("size", 0))
            sample("amulet_queue_waiting", "gauge", "Threads or tasks waiting on the queue.", lb,
                   st.get("waiting", 0))
            sample("amulet_queue_puts", "counter", "Items put.", lb, st.get("puts", 0))
            sample("amulet_queue_gets", "counter", "Items taken.", lb, st.get("gets", 0))
            sample("amulet_queue_wait_seconds", "counter", "Time spent waiting.", lb,
                   st.get("wait_time", 0.0))
        for name, p in self._live("pool"):
            st = p.stats()
            lb = {"pool": name}
            for key in ("in_use", "idle", "size", "max_size"):
                sample(f"amulet_pool_{key}", "gauge", f"Pool objects: {key}.", lb, st.get(key, 0))
            for key in ("borrowed", "timeouts", "failures", "waits"):
                sample(f"amulet_pool_{key}", "counter", f"Pool events: {key}.", lb, st.get(key, 0))
            state = str(getattr(st.get("state"), "value", st.get("state", "")))
            for s in ("healthy", "degraded", "unhealthy"):
                sample("amulet_pool_state", "gauge", "1 for the pool's current state.",
                       {**lb, "state": s}, 1.0 if state == s else 0.0)
        for name, lm in self._live("locks"):
            for lock, st in lm.stats().items():
                lb = {"manager": name, "lock": str(lock)}
                sample("amulet_lock_acquisitions", "counter", "Lock acquisitions.", lb,
                       st.get("acquisitions", 0))
                sample("amulet_lock_contended", "counter", "Acquisitions that had to wait.", lb,
                       st.get("contended", 0))
                sample("amulet_lock_timeouts", "counter", "Acquisitions that timed out.", lb,
                       st.get("timeouts", 0))
                sample("amulet_lock_wait_seconds", "counter", "Time spent waiting.", lb,
                       st.get("wait_total", 0.0))
        decode_stats = getattr(_core, "decode_stats", None)
        if decode_stats is not None:
            for fmt, outcome, n, nbytes, pixels in decode_stats():
                lb = {"format": fmt, "outcome": outcome}
                sample("amulet_decodes", "counter", "Decodes by format and outcome.", lb, n)
                sample("amulet_decode_bytes", "counter", "Encoded bytes decoded.", lb, nbytes)
                sample("amulet_decode_pixels", "counter", "Pixels decoded.", lb, pixels)
        hists = getattr(_core, "decode_time_histograms", None)
        if hists is not None:
            bounds, rows = hists()
            m = Metric("amulet_decode_duration_seconds", "Decode time by format.", "histogram")
            les = [_float(b) for b in bounds] + ["+Inf"]
            for fmt, vals in rows:
                acc = 0.0
                for le, c in zip(les, vals):
                    acc += c
                    m.add_sample("amulet_decode_duration_seconds_bucket",
                                 {"format": fmt, "le": le}, acc)
                m.add_sample("amulet_decode_duration_seconds_count", {"format": fmt}, vals[-1])
                m.add_sample("amulet_decode_duration_seconds_sum", {"format": fmt}, vals[-2])
            if m.samples:
                fams[m.name] = m
        return list(fams.values())


def _cache_stats(c: Any) -> dict[str, Any]:
    for attr in ("stats", "get_stats"):
        fn = getattr(c, attr, None)
        if fn is None:
            continue
        st = fn()
        if hasattr(st, "_asdict"):
            return dict(st._asdict())
        if isinstance(st, Mapping):
            return dict(st)
    inner = getattr(c, "cache", None)
    return _cache_stats(inner) if inner is not None and inner is not c else {}


LIBRARY_COLLECTOR = LibraryCollector()
_library_registered: set[int] = set()


def instrument_library(
    *,
    caches: Mapping[str, Any] | None = None,
    queues: Mapping[str, Any] | None = None,
    pools: Mapping[str, Any] | None = None,
    lock_managers: Mapping[str, Any] | None = None,
    registry: CollectorRegistry | None = None,
) -> LibraryCollector:
    """Expose amulet_native's own statistics (read at scrape time, weakly held):
    ``instrument_library(caches={"images": image_cache}, pools={"model": pool})``.
    Calling it again adds more objects."""
    reg = REGISTRY if registry is None else registry
    if id(reg) not in _library_registered:
        reg.register(LIBRARY_COLLECTOR)
        _library_registered.add(id(reg))
    for kind, objs in (("cache", caches), ("queue", queues), ("pool", pools),
                       ("locks", lock_managers)):
        for name, obj in (objs or {}).items():
            _check_value(name)
            LIBRARY_COLLECTOR.add(kind, name, obj)
    return LIBRARY_COLLECTOR


# ---- timed operations ----------------------------------------------------------------


class PerformanceMonitor:
    """Durations and errors per operation name, on native sketches:
    ``get_stats(name)`` -> count, errors, mean, p50, p95, p99, max (seconds),
    rate (operations per second since the monitor started)."""

    def __init__(self, registry: CollectorRegistry | None = None,
                 prefix: str = "amulet_operation", clock: Callable[[], float] = time.monotonic) -> None:
        reg = REGISTRY if registry is None else registry
        self._clock = clock
        self._start = clock()
        self.duration = Summary(f"{prefix}_duration_seconds", "Duration of timed operations.",
                                ["operation"], registry=reg, quantiles=(0.5, 0.95, 0.99))
        self.errors = Counter(f"{prefix}_errors", "Timed operations that raised.",
                              ["operation"], registry=reg)
        self.max = Gauge(f"{prefix}_max_seconds", "Longest timed operation.", ["operation"],
                         registry=reg, multiprocess_mode="max")

    def record(self, name: str, seconds: float, error: bool = False) -> None:
        """Count one operation of `seconds`."""
        self.duration.labels(name).observe(seconds)
        self.max.labels(name)._set_max(seconds)
        if error:
            self.errors.labels(name).inc()

    def get_stats(self, name: str) -> dict[str, float]:
        """count, errors, mean, p50, p95, p99, max, rate for one operation."""
        # Read-only: an operation never recorded reads as zeros and creates no
        # series (a health check asking for any name must not grow the families).
        name = _check_value(name)
        d = self.duration._children.get(name)
        e = self.errors._children.get(name)
        mx = self.max._children.get(name)
        count, total = d._get() if d is not None else (0.0, 0.0)
        p50, p95, p99 = d._quantiles((0.5, 0.95, 0.99)) if d is not None else (0.0, 0.0, 0.0)
        elapsed = max(self._clock() - self._start, 1e-9)
        return {
            "count": count,
            "errors": e._value() if e is not None else 0.0,
            "mean": total / count if count else 0.0,
            "p50": p50 if count else 0.0,
            "p95": p95 if count else 0.0,
            "p99": p99 if count else 0.0,
            "max": mx._value() if mx is not None else 0.0,
            "rate": count / elapsed,
        }

    def operations(self) -> list[str]:
        return [k if isinstance(k, str) else k[0] for k in self.duration._children]


_monitor: PerformanceMonitor | None = None
_monitor_lock = threading.Lock()


def performance_monitor() -> PerformanceMonitor:
    """The process-wide monitor behind :func:`timed_operation` (on REGISTRY)."""
    global _monitor
    with _monitor_lock:
        if _monitor is None:
            _monitor = PerformanceMonitor()
        return _monitor


class timed_operation:
    """Time an operation into the performance monitor: a decorator for sync and
    async functions, or a (async) context manager::

        @metrics.timed_operation("image_processing")
        async def process(img): ...

        with metrics.timed_operation("resize"):
            ...
    """

    def __init__(self, name: str, monitor: PerformanceMonitor | None = None) -> None:
        _check_value(name)
        self.name = name
        self._monitor = monitor
        # Start times per thread and per asyncio task (a context variable), so
        # one instance shared by interleaved tasks times each of them.
        self._t0: contextvars.ContextVar[tuple[float, ...]] = contextvars.ContextVar(
            f"timed_operation_{name}", default=()
        )

    def _mon(self) -> PerformanceMonitor:
        return self._monitor if self._monitor is not None else performance_monitor()

    def __enter__(self) -> Self:
        self._t0.set((*self._t0.get(), time.perf_counter()))
        return self

    def __exit__(self, typ: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        *rest, t0 = self._t0.get()
        self._t0.set(tuple(rest))
        self._mon().record(self.name, time.perf_counter() - t0, typ is not None)

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(self, typ: type[BaseException] | None, value: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(typ, value, tb)

    def __call__(self, fn: F) -> F:
        name = self.name
        if inspect.isgeneratorfunction(fn):
            # timed from the first next() to exhaustion, an error or close()

            @functools.wraps(fn)
            def gwrapper(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                err = True
                try:
                    r = yield from fn(*args, **kwargs)
                    err = False
                    return r
                except GeneratorExit:
                    err = False
                    raise
                finally:
                    self._mon().record(name, time.perf_counter() - t0, err)

            return cast(F, gwrapper)
        if inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            async def agwrapper(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                err = True
                try:
                    async for item in fn(*args, **kwargs):
                        yield item
                    err = False
                except GeneratorExit:
                    err = False
                    raise
                finally:
                    self._mon().record(name, time.perf_counter() - t0, err)

            return cast(F, agwrapper)
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                err = True
                try:
                    r = await fn(*args, **kwargs)
                    err = False
                    return r
                finally:
                    self._mon().record(name, time.perf_counter() - t0, err)

            return cast(F, awrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            err = True
            try:
                r = fn(*args, **kwargs)
                err = False
                return r
            finally:
                self._mon().record(name, time.perf_counter() - t0, err)

        return cast(F, wrapper)


# ---- alerts ------------------------------------------------------------------------------


@dataclass
class Alert:
    """A firing alert: ``severity`` "warning" or "critical", the ``value`` that
    crossed the threshold, ``first_seen`` (when the condition began) and
    ``fired_at`` (after for_seconds), ``acknowledged``."""

    rule: AlertRule
    severity: str
    value: float
    first_seen: float
    fired_at: float
    acknowledged: bool = False

    @property
    def name(self) -> str:
        return self.rule.name

    def acknowledge(self) -> None:
        self.acknowledged = True


@dataclass
class AlertRule:
    """``value > threshold`` (or ``<`` with ``below=True``) held for
    ``for_seconds`` fires an Alert.  ``metric`` is a sample name (with
    ``labels``) read from the registry, or a callable returning the value.
    ``evaluate()`` returns the active alert (or None) and calls the callbacks
    when an alert fires, changes severity or resolves (alert None)."""

    metric: str | Callable[[], float]
    threshold_warning: float | None = None
    threshold_critical: float | None = None
    for_seconds: float = 0.0
    labels: Mapping[str, str] | None = None
    below: bool = False
    name: str = ""
    callbacks: list[Callable[[AlertRule, Alert | None], None]] = field(default_factory=list)
    registry: CollectorRegistry | None = None
    clock: Callable[[], float] = time.time
    _pending_since: float | None = field(default=None, repr=False)
    alert: Alert | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.threshold_warning is None and self.threshold_critical is None:
            raise ValidationError("an alert rule needs a warning or a critical threshold",
                                  field="threshold_warning")
        for f in ("threshold_warning", "threshold_critical"):
            t = getattr(self, f)
            if t is not None and (not isinstance(t, (int, float)) or math.isnan(t)):
                raise ValidationError(f"{f} must be a number, not {t!r}", field=f)
        w, c = self.threshold_warning, self.threshold_critical
        if w is not None and c is not None and (w < c if self.below else w > c):
            raise ValidationError(
                f"critical threshold {c!r} is less severe than warning {w!r}"
                f" ({'below' if self.below else 'above'} rule)", field="threshold_critical")
        if not isinstance(self.for_seconds, (int, float)) or not self.for_seconds >= 0:
            raise ValidationError("for_seconds must be >= 0", field="for_seconds")
        if not self.name:
            self.name = self.metric if isinstance(self.metric, str) else getattr(
                self.metric, "__name__", "alert")

    def value(self) -> float | None:
        if callable(self.metric):
            return float(self.metric())
        reg = REGISTRY if self.registry is None else self.registry
        return reg.get_sample_value(self.metric, self.labels)

    def _severity(self, v: float) -> str | None:
        def crossed(t: float | None) -> bool:
            return t is not None and (v < t if self.below else v > t)

        if crossed(self.threshold_critical):
            return "critical"
        if crossed(self.threshold_warning):
            return "warning"
        return None

    def evaluate(self, now: float | None = None) -> Alert | None:
        """Read the value and update the state; returns the firing alert or None."""
        t = self.clock() if now is None else now
        v = self.value()
        sev = None if v is None or math.isnan(v) else self._severity(v)
        before = self.alert
        before_sev = before.severity if before is not None else None
        if sev is None or v is None:
            self._pending_since = None
            self.alert = None
        else:
            if self._pending_since is None:
                self._pending_since = t
            if t - self._pending_since >= self.for_seconds:
                if self.alert is None:
                    self.alert = Alert(self, sev, v, self._pending_since, t)
                else:
                    self.alert.value = v
                    if self.alert.severity != sev:
                        self.alert.severity = sev
                        self.alert.acknowledged = False
        after_sev = self.alert.severity if self.alert is not None else None
        if after_sev != before_sev:
            for cb in list(self.callbacks):
                cb(self, self.alert)
        return self.alert


class AlertManager:
    """Many rules, evaluated on demand (``evaluate()``) or every ``interval``
    seconds in a daemon thread (``start()``/``stop()``)."""

    def __init__(self, rules: Iterable[AlertRule] = (), *,
                 callbacks: Iterable[Callable[[AlertRule, Alert | None], None]] = ()) -> None:
        self.rules: list[AlertRule] = list(rules)
        self._callbacks = list(callbacks)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for r in self.rules:
            r.callbacks.extend(self._callbacks)

    def add_rule(self, rule: AlertRule) -> None:
        rule.callbacks.extend(self._callbacks)
        self.rules.append(rule)

    def evaluate(self, now: float | None = None) -> list[Alert]:
        out = []
        for r in self.rules:
            a = r.evaluate(now)
            if a is not None:
                out.append(a)
        return out

    def active(self) -> list[Alert]:
        return [r.alert for r in self.rules if r.alert is not None]

    def acknowledge(self, name: str) -> bool:
        for r in self.rules:
            if r.name == name and r.alert is not None:
                r.alert.acknowledge()
                return True
        return False

    def start(self, interval: float = 15.0) -> None:
        if self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval):
                with contextlib.suppress(Exception):  # the next round retries
                    self.evaluate()

        self._thread = threading.Thread(target=loop, name="amulet-alerts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


# ---- environment -----------------------------------------------------------------------

if os.environ.get("AMULET_METRICS_DIR"):
    multiprocess(os.environ["AMULET_METRICS_DIR"])
