"""Adversarial review of amulet_native.metrics (review-11): each test pins a
defect that was found and fixed."""

from __future__ import annotations

import math
import shutil
import subprocess

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse

from amulet_native import ValidationError
from amulet_native.metrics import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    generate_latest,
)


def _promtool_ok(text: bytes) -> None:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool not installed")
    r = subprocess.run([exe, "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert b"error" not in (r.stdout + r.stderr).lower(), (r.stdout + r.stderr).decode()


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
    _promtool_ok(generate_latest(r))


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
    assert len(lines) == len(set(ln.rsplit(" ", 1)[0] for ln in lines)), text
    list(om_parse(text))
    _promtool_ok(generate_latest(r))


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
    assert c._value() == 0.0  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", [Histogram, Summary])
def test_observe_nan_raises_and_does_not_poison_sum(kind: type) -> None:
    r = CollectorRegistry()
    m = kind("m", "", registry=r)
    m.observe(1.0)
    with pytest.raises(ValidationError):
        m.observe(math.nan)
    assert r.get_sample_value("m_count") == 1.0
    assert r.get_sample_value("m_sum") == 1.0
