"""Adversarial review of amulet_native.metrics (review-11): each test pins a
defect that was found and fixed."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse

from amulet_native import ValidationError
from amulet_native.metrics import (
    AlertRule,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Metric,
    PerformanceMonitor,
    Summary,
    _http_response,
    exposition,
    generate_latest,
    timed_operation,
)


def _promtool_ok(text: bytes, *, lint: bool = True) -> None:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool not installed")
    r = subprocess.run([exe, "check", "metrics"], input=text, capture_output=True, timeout=30,
                       check=False)
    # 1: parse errors; 3: lint problems only (e.g. "no help text" of an empty HELP)
    assert r.returncode in ((0,) if lint else (0, 3)), (r.stdout + r.stderr).decode()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (lambda r: Counter("coll", "", registry=r), lambda r: Gauge("coll_total", "", registry=r)),
        (lambda r: Counter("coll", "", registry=r), lambda r: Gauge("coll_created", "", registry=r)),
        (lambda r: Histogram("coll", "", registry=r), lambda r: Gauge("coll_count", "", registry=r)),
        (lambda r: Histogram("coll", "", registry=r), lambda r: Gauge("coll_bucket", "", registry=r)),
        (lambda r: Summary("coll", "", registry=r), lambda r: Gauge("coll_sum", "", registry=r)),
        (lambda r: Gauge("coll_total", "", registry=r), lambda r: Counter("coll", "", registry=r)),
    ],
)
def test_registry_refuses_names_that_collide_with_another_familys_samples(
    first: object, second: object
) -> None:
    r = CollectorRegistry()
    first(r)  # type: ignore[operator]
    with pytest.raises(ValidationError):
        second(r)  # type: ignore[operator]
    _promtool_ok(generate_latest(r), lint=False)


def test_counter_named_only_total_is_refused() -> None:
    with pytest.raises(ValidationError):
        Counter("_total", "", registry=None)


def test_user_label_value_equal_to_overflow_marker_does_not_duplicate_a_series() -> None:
    r = CollectorRegistry()
    g = Gauge("g", "x", ["k"], registry=r, max_series=2)
    g.labels("__overflow__").set(1)
    g.labels("b").set(2)
    g.labels("c").set(3)
    g.labels("d").set(4)
    text = generate_latest(r, openmetrics=True).decode()
    lines = [ln for ln in text.splitlines() if ln.startswith("g{")]
    assert len(lines) == len({ln.rsplit(" ", 1)[0] for ln in lines}), text
    list(om_parse(text))  # type: ignore[no-untyped-call]
    _promtool_ok(generate_latest(r), lint=False)


def test_summary_quantile_outside_unit_interval_or_nan_raises() -> None:
    s = Summary("s", "", registry=None)
    s.observe(1.0)
    for q in (-0.1, 1.5, 2.0, math.nan):
        with pytest.raises(ValidationError):
            s.quantile(q)
    assert s.quantile(1.0) == pytest.approx(1.0, rel=0.01)


def test_summary_duplicate_quantiles_are_refused() -> None:
    with pytest.raises(ValidationError):
        Summary("s", "", quantiles=(0.5, 0.5), registry=None)


def test_counter_inc_by_infinity_raises() -> None:
    c = Counter("c", "", registry=None)
    with pytest.raises(ValidationError):
        c.inc(math.inf)
    assert c._value() == 0.0


@pytest.mark.parametrize("kind", [Histogram, Summary])
def test_observe_nan_raises_and_does_not_poison_sum(kind: type) -> None:
    r = CollectorRegistry()
    m = kind("m", "", registry=r)
    m.observe(1.0)
    with pytest.raises(ValidationError):
        m.observe(math.nan)
    assert r.get_sample_value("m_count") == 1.0
    assert r.get_sample_value("m_sum") == 1.0


@pytest.mark.parametrize(
    "kw",
    [
        {"threshold_warning": math.nan},
        {"threshold_critical": math.nan},
        {"threshold_warning": 1.0, "for_seconds": math.nan},
        {"threshold_warning": 10.0, "threshold_critical": 5.0},
        {"threshold_warning": 5.0, "threshold_critical": 10.0, "below": True},
    ],
)
def test_alert_rule_refuses_nan_and_inverted_thresholds(kw: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AlertRule(lambda: 1.0, **kw)  # type: ignore[arg-type]


def test_get_stats_of_an_unknown_operation_creates_no_series() -> None:
    r = CollectorRegistry()
    mon = PerformanceMonitor(r)
    before = generate_latest(r)
    st = mon.get_stats("never-recorded")
    assert st["count"] == 0 and st["p99"] == 0.0 and st["max"] == 0.0
    assert generate_latest(r) == before
    assert mon.operations() == []


def test_timed_operation_times_the_whole_iteration_of_a_generator() -> None:
    mon = PerformanceMonitor(CollectorRegistry())

    @timed_operation("gen", mon)
    def gen() -> Iterator[int]:
        yield 1
        time.sleep(0.05)
        raise RuntimeError("late")

    it = gen()
    assert mon.get_stats("gen")["count"] == 0  # not finished yet
    assert next(it) == 1
    with pytest.raises(RuntimeError):
        next(it)
    st = mon.get_stats("gen")
    assert st["count"] == 1 and st["errors"] == 1 and st["max"] >= 0.05


def test_timed_operation_times_the_whole_iteration_of_an_async_generator() -> None:
    mon = PerformanceMonitor(CollectorRegistry())

    @timed_operation("agen", mon)
    async def agen() -> AsyncIterator[int]:
        yield 1
        await asyncio.sleep(0.05)
        yield 2

    async def main() -> list[int]:
        return [x async for x in agen()]

    assert asyncio.run(main()) == [1, 2]
    st = mon.get_stats("agen")
    assert st["count"] == 1 and st["errors"] == 0 and st["max"] >= 0.05


def test_one_timed_operation_instance_used_by_interleaved_tasks_times_each_task() -> None:
    seen: list[tuple[float, bool]] = []

    class Mon(PerformanceMonitor):
        def record(self, name: str, seconds: float, error: bool = False) -> None:
            seen.append((seconds, error))

    op = timed_operation("shared", Mon(CollectorRegistry()))

    async def first() -> None:  # enters first, leaves first (with an error)
        async with op:
            await asyncio.sleep(0.3)
            raise KeyError("boom")

    async def second() -> None:  # enters while first is inside, leaves last
        await asyncio.sleep(0.05)
        async with op:
            await asyncio.sleep(0.5)

    async def main() -> None:
        await asyncio.gather(first(), second(), return_exceptions=True)

    asyncio.run(main())
    assert len(seen) == 2
    first_secs = next(sec for sec, err in seen if err)
    assert first_secs >= 0.3  # its own time inside, not measured from second's start


_MP_LONG_LABEL = r"""
import json, sys
from amulet_native import metrics as M
c = M.Counter("c", "h", ["k"])
c.labels("early" + "e" * 700).inc()  # before multi-worker mode: moved into the arena
M.multiprocess(sys.argv[1])
c.labels("x" * 700).inc()
c.labels("ok").inc()
print(json.dumps([c.dropped_series, M.REGISTRY.get_sample_value("c_total", {"k": "ok"}),
                  M.REGISTRY.get_sample_value("c_total", {"k": "__overflow__"})]))
"""


def test_label_value_too_long_for_an_arena_key_goes_to_overflow_in_multiworker_mode(
    tmp_path: Path,
) -> None:
    # Single-process mode accepts label values up to 4096 characters; in
    # multi-worker mode a label set whose arena key exceeded 512 bytes raised
    # from labels() (and from multiprocess() for existing children).
    r = subprocess.run([sys.executable, "-c", _MP_LONG_LABEL, str(tmp_path)], capture_output=True,
                       text=True, timeout=120, check=False, cwd=Path(__file__).parent.parent)
    assert r.returncode == 0, r.stderr
    dropped, ok, over = json.loads(r.stdout.strip().splitlines()[-1])
    assert ok == 1.0
    assert dropped == 2
    assert over == 1.0  # the long label set after the switch; the early one stays local


def test_custom_collector_metric_is_validated_and_counter_total_suffix_handled() -> None:
    with pytest.raises(ValidationError):
        Metric("bad name", "d", "gauge")
    with pytest.raises(ValidationError):
        Metric("g", "d", "gauge").add_sample("g", {"bad-label": "x"}, 1.0)

    class Custom:
        def collect(self) -> Iterator[Metric]:
            m = Metric("foo_total", "d", "counter")
            m.add_sample("foo_total", {}, 1.0)
            yield m

    r = CollectorRegistry()
    r.register(Custom())
    _promtool_ok(generate_latest(r))
    fams = list(om_parse(generate_latest(r, openmetrics=True).decode()))  # type: ignore[no-untyped-call]
    assert [(f.name, f.samples[0].value) for f in fams] == [("foo", 1.0)]


_MP_NO_SLOT = r"""
import json, os, sys
from amulet_native import metrics as M
M.multiprocess(sys.argv[1], max_workers=1)
c = M.Counter("c", "h")
c.inc()
pid = os.fork()
if pid == 0:  # no worker slot left: its writes go nowhere
    c.inc(5)
    os._exit(0)
os.waitpid(pid, 0)
print(json.dumps([M.REGISTRY.get_sample_value("c_total"),
                  M.REGISTRY.get_sample_value("amulet_metrics_arena_refused_total")]))
"""


def test_a_worker_refused_a_slot_is_visible_in_the_exposition(tmp_path: Path) -> None:
    # The arena counted the refusal in stats()["overflow"], but nothing exposed
    # it: a worker whose metrics were all silently lost left no trace at all.
    r = subprocess.run([sys.executable, "-c", _MP_NO_SLOT, str(tmp_path)], capture_output=True,
                       text=True, timeout=120, check=False, cwd=Path(__file__).parent.parent)
    assert r.returncode == 0, r.stderr
    total, refused = json.loads(r.stdout.strip().splitlines()[-1])
    assert total == 1.0
    assert refused is not None and refused >= 1.0


@pytest.mark.parametrize(
    ("accept", "om"),
    [
        ("text/plain;q=1, application/openmetrics-text;q=0.1", False),
        ("application/openmetrics-text;q=0.5, */*;q=1", False),
        ("application/openmetrics-text;q=0.5, text/plain;q=0.4", True),
        (("application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;"
          "version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"), True),
        ("application/openmetrics-text", True),
        ("application/openmetrics-text;q=0", False),
        ("application/openmetrics-text;q=nan", False),
        ("application/openmetrics-text;q=garbage", False),
        (";;,,=;q=", False),
        ("", False),
    ],
)
def test_accept_negotiation_honours_q_values(accept: str, om: bool) -> None:
    _, ctype = exposition(accept, CollectorRegistry())
    assert ctype.startswith("application/openmetrics-text") is om


def test_remove_with_the_wrong_number_of_values_raises() -> None:
    c = Counter("c", "", ["a", "b"], registry=None)
    c.labels("x", "y").inc()
    for bad in ((), ("x",), ("x", "y", "z")):
        with pytest.raises(ValidationError):
            c.remove(*bad)
    c.remove("x", "y")
    assert c._series() == []
    with pytest.raises(ValidationError):
        Counter("n", "", registry=None).remove()


_MP_MIXED_WORKERS = r"""
import json, os, sys
from amulet_native import metrics as M
M.multiprocess(sys.argv[1])

def worker(f):  # a worker of another release: its own families, then it exits
    pid = os.fork()
    if pid == 0:
        f()
        os._exit(0)
    os.waitpid(pid, 0)

worker(lambda: M.Histogram("lat", "d", buckets=[1]).observe(3))
worker(lambda: M.Histogram("lat", "d", buckets=[1, 2]).observe(3))
worker(lambda: M.Histogram("own", "d", buckets=[1]).observe(3))
worker(lambda: M.Gauge("y_total", "d").set(3))
worker(lambda: M.Counter("y", "d").inc(3))
own = M.Histogram("own", "d", buckets=[1, 2, 4])
own.observe(3)
sys.stdout.write(M.generate_latest().decode())
"""


def test_workers_with_other_buckets_or_clashing_names_keep_the_exposition_valid(
    tmp_path: Path,
) -> None:
    # Histograms with other buckets (another release, or the persisted arena of
    # an earlier run) shared one record: words of one layout were read as
    # buckets of another (count 5, sum 3 after two observations of 3).  Another
    # worker's Gauge y_total next to a Counter y gave a second HELP/TYPE.
    from prometheus_client.parser import text_string_to_metric_families as parse

    r = subprocess.run([sys.executable, "-c", _MP_MIXED_WORKERS, str(tmp_path)],
                       capture_output=True, timeout=120, check=False,
                       cwd=Path(__file__).parent.parent)
    assert r.returncode == 0, r.stderr.decode()
    _promtool_ok(r.stdout, lint=False)
    fams = {f.name: f for f in parse(r.stdout.decode())}
    for name in ("lat", "own"):
        samples = {(s.name, s.labels.get("le")): s.value for s in fams[name].samples}
        count, total = samples[(name + "_count", None)], samples[(name + "_sum", None)]
        assert samples[(name + "_bucket", "+Inf")] == count
        assert total == 3.0 * count  # every observation was 3
    own = {(s.name, s.labels.get("le")): s.value for s in fams["own"].samples}
    assert own[("own_bucket", "4.0")] == 1.0 and own[("own_count", None)] == 1.0


def test_openmetrics_only_types_of_a_collector_are_mapped_in_the_text_format() -> None:
    # "# TYPE build info" is not the 0.0.4 text format: promtool refused the
    # whole exposition.  Mapped as prometheus_client does (info -> gauge named
    # _info, stateset -> gauge, gaugehistogram -> histogram, unknown -> untyped).
    class Custom:
        def collect(self) -> Iterator[Metric]:
            m = Metric("build", "d", "info")
            m.add_sample("build_info", {"v": "1"}, 1.0)
            yield m
            m = Metric("st", "d", "stateset")
            m.add_sample("st", {"st": "a"}, 1.0)
            yield m
            m = Metric("u", "d", "unknown")
            m.add_sample("u", {}, 1.0)
            yield m
            m = Metric("gh", "d", "gaugehistogram")
            m.add_sample("gh_bucket", {"le": "+Inf"}, 1.0)
            m.add_sample("gh_gcount", {}, 1.0)
            m.add_sample("gh_gsum", {}, 1.0)
            yield m

    r = CollectorRegistry()
    r.register(Custom())
    _promtool_ok(generate_latest(r), lint=False)
    list(om_parse(generate_latest(r, openmetrics=True).decode()))  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    ("accept_encoding", "gz"),
    [("gzip", True), ("GZIP, br", True), ("gzip;q=0", False), ("gzip;q=0.0, identity", False),
     ("x-gzip-not", False), ("br;q=1, gzip;q=0.5", True), ("", False)],
)
def test_gzip_only_when_accepted(accept_encoding: str, gz: bool) -> None:
    # "gzip;q=0" means gzip is NOT acceptable; it was gzipped anyway
    _, headers = _http_response(None, accept_encoding, CollectorRegistry())
    assert (("Content-Encoding", "gzip") in headers) is gz
