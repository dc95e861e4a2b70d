"""MemoryMonitor (readings from /proc and cgroup files, parsed in C) and
GarbageCollectionManager.

Real readings are compared with /proc/self/status read here and with psutil.
The cgroup parser runs over fixture trees in tests/fixtures/cgroup (v1, v2,
"max", the v1 sentinel, malformed files, no cgroup), passed as the monitor's
root directory.
"""

from __future__ import annotations

import gc
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

import amulet_native as an
from amulet_native.memory import GCAction, MemoryPressure

FIXTURES = Path(__file__).parent / "fixtures" / "cgroup"
KB = 1024
MB = 1024 * 1024


def fixture(name: str) -> str:
    return str(FIXTURES / name)


def proc_status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(key)


@pytest.fixture
def no_process_limit() -> Iterator[None]:
    yield
    an.set_process_memory_limit(None)


def wait_for(cond: object, timeout: float = 20.0) -> bool:
    """Polls cond() (a deadline so a broken watcher fails instead of hanging)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


# ---- real readings -------------------------------------------------------------------


def test_snapshot_agrees_with_proc_status_and_psutil() -> None:
    ballast = np.ones(20 * MB, np.uint8)  # make RSS move a little
    snap = an.MemoryMonitor().snapshot()
    rss_status = proc_status_kb("VmRSS")
    info = psutil.Process().memory_info()
    vm = psutil.virtual_memory()
    tolerance = 8 * MB  # the process keeps running between the readings
    assert abs(snap.rss - rss_status) < tolerance
    assert abs(snap.rss - info.rss) < tolerance
    assert snap.peak_rss >= snap.rss - tolerance
    assert abs(snap.peak_rss - proc_status_kb("VmHWM")) < tolerance
    assert snap.total == vm.total
    # other processes share this machine: MemAvailable moves, but not by much
    assert abs(snap.available - vm.available) < max(vm.total // 20, 64 * MB)
    assert 0 < snap.available < snap.total
    assert snap.effective_limit <= snap.total
    del ballast


def test_real_pressure_is_consistent() -> None:
    r = an.MemoryMonitor().pressure()
    assert r.source in ("system", "cgroup")
    assert 0.0 <= r.ratio <= 1.5
    assert r.ratio == pytest.approx(r.used / r.limit)
    assert isinstance(r.level, an.PressureLevel)
    # thresholds decide the level of the same ratio
    assert an.MemoryMonitor(warning=1e-9, critical=1.0).level_for(r.ratio) >= (
        an.PressureLevel.WARNING
    )


# ---- fixture trees ----------------------------------------------------------------------


def test_cgroup_v2_takes_the_smallest_memory_max_up_the_tree() -> None:
    snap = an.MemoryMonitor(root=fixture("v2")).snapshot()
    assert snap.rss == 100000 * KB and snap.peak_rss == 123456 * KB
    assert snap.total == 8000000 * KB and snap.available == 6000000 * KB
    assert snap.cgroup_version == 2
    assert snap.cgroup_limit == 512 * MB  # the leaf says "max", its parent 512 MiB
    assert snap.cgroup_usage == 100 * MB
    assert snap.cgroup_problem is None
    assert snap.effective_limit == 512 * MB


def test_cgroup_v2_max_means_unlimited() -> None:
    snap = an.MemoryMonitor(root=fixture("v2_max")).snapshot()
    assert snap.cgroup_version == 2
    assert snap.cgroup_limit is None and snap.cgroup_usage == 50 * MB
    assert snap.effective_limit == snap.total


def test_cgroup_v1_inside_a_container() -> None:
    snap = an.MemoryMonitor(root=fixture("v1")).snapshot()
    assert snap.cgroup_version == 1
    assert snap.cgroup_limit == 256 * MB and snap.cgroup_usage == 128 * MB
    assert snap.effective_limit == 256 * MB


def test_cgroup_v1_sentinel_means_unlimited() -> None:
    snap = an.MemoryMonitor(root=fixture("v1_unlimited")).snapshot()
    assert snap.cgroup_version == 1 and snap.cgroup_limit is None
    assert snap.cgroup_usage == 80777216


def test_cgroup_fallback_path_and_no_cgroup() -> None:
    snap = an.MemoryMonitor(root=fixture("fallback")).snapshot()
    assert snap.cgroup_version == 2 and snap.cgroup_limit == 1024 * MB
    snap = an.MemoryMonitor(root=fixture("none")).snapshot()
    assert snap.cgroup_version == 0 and snap.cgroup_limit is None and snap.cgroup_usage is None


def test_malformed_cgroup_is_unknown_not_a_crash() -> None:
    snap = an.MemoryMonitor(root=fixture("malformed")).snapshot()
    assert snap.cgroup_version == 2
    assert snap.cgroup_limit is None and snap.cgroup_usage is None
    assert snap.cgroup_problem is not None and "malformed" in snap.cgroup_problem
    # the rest of the snapshot is still there, and pressure falls back to the system
    r = an.MemoryMonitor(root=fixture("malformed")).pressure()
    assert r.source == "system"


def test_malformed_or_missing_proc_is_a_typed_error(tmp_path: Path) -> None:
    for root in (fixture("bad_proc"), str(tmp_path / "nowhere")):
        with pytest.raises(an.ProcessingError) as info:
            an.MemoryMonitor(root=root).snapshot()
        assert info.value.code == "system.meminfo"
    with pytest.raises(an.ProcessingError, match="malformed"):
        an.MemoryMonitor(root=fixture("bad_proc")).snapshot()


@pytest.mark.parametrize("length", [0, 1, 5, 17, 40])
def test_truncated_cgroup_files_never_crash(tmp_path: Path, length: int) -> None:
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "v1", root)
    for name in ("proc/self/cgroup", "proc/self/mountinfo",
                 "sys/fs/cgroup/memory/memory.limit_in_bytes"):
        p = root / name
        p.write_bytes(p.read_bytes()[:length])
    snap = an.MemoryMonitor(root=root).snapshot()
    assert snap.cgroup_version in (0, 1)
    if snap.cgroup_limit is not None:
        assert snap.cgroup_limit == int((FIXTURES / "v1/sys/fs/cgroup/memory/"
                                         "memory.limit_in_bytes").read_text()[:length])


def test_pressure_sources_and_levels(no_process_limit: None) -> None:
    # v2: cgroup 100/512 MiB = 0.195, system (8000000-6000000)/8000000 = 0.25
    r = an.MemoryMonitor(warning=0.2, critical=0.3, root=fixture("v2")).pressure()
    assert (r.source, r.level) == ("system", an.PressureLevel.WARNING)
    assert r.ratio == pytest.approx(0.25)
    # v1: cgroup 128/256 MiB = 0.5 beats the system's 0.25
    r = an.MemoryMonitor(warning=0.4, critical=0.5, root=fixture("v1")).pressure()
    assert (r.source, r.level) == ("cgroup", an.PressureLevel.CRITICAL)
    assert (r.used, r.limit) == (128 * MB, 256 * MB)
    r = an.MemoryMonitor(root=fixture("v1")).pressure()
    assert r.level == an.PressureLevel.NORMAL
    # a process limit under the fixture RSS (100000 kB)
    an.set_process_memory_limit(110000 * KB)
    r = an.MemoryMonitor(root=fixture("v1")).pressure()
    assert r.source == "process" and r.level == an.PressureLevel.CRITICAL
    assert r.used == 100000 * KB


@pytest.mark.parametrize(
    ("warning", "critical"), [(0, 0.9), (0.8, 1.5), (0.95, 0.9), (True, 0.9), ("0.8", 0.9)]
)
def test_threshold_validation(warning: object, critical: object) -> None:
    with pytest.raises(an.ValidationError):
        an.MemoryMonitor(warning=warning, critical=critical)  # type: ignore[arg-type]


# ---- watch ---------------------------------------------------------------------------------


def set_available(root: Path, available_kb: int) -> None:
    tmp = root / "proc/meminfo.tmp"
    tmp.write_text(
        f"MemTotal:        8000000 kB\nMemFree:         1000000 kB\n"
        f"MemAvailable:    {available_kb} kB\n"
    )
    os.replace(tmp, root / "proc/meminfo")  # the watcher never sees half a file


def test_watch_reports_level_changes_and_survives_callback_errors(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "none", root)
    monitor = an.MemoryMonitor(warning=0.5, critical=0.9, root=root)
    changes: list[tuple[an.PressureLevel, an.PressureLevel]] = []
    lock = threading.Lock()

    def on_change(previous: an.PressureLevel, reading: MemoryPressure) -> None:
        with lock:
            changes.append((previous, reading.level))
        if reading.level == an.PressureLevel.CRITICAL:
            raise RuntimeError("a callback bug")

    set_available(root, 6000000)  # 25 % used
    with monitor.watch(0.01, on_change) as handle:
        assert wait_for(lambda: handle.readings >= 2)
        assert changes == []  # NORMAL from the start: nothing to report
        set_available(root, 3000000)  # 62.5 %
        assert wait_for(lambda: len(changes) >= 1)
        set_available(root, 400000)  # 95 %
        assert wait_for(lambda: handle.errors >= 1)  # raised, logged, counted
        set_available(root, 7000000)
        assert wait_for(lambda: len(changes) >= 3)
        assert handle.running  # the failing callback did not stop it
    assert not handle.running
    W, C, N = an.PressureLevel.WARNING, an.PressureLevel.CRITICAL, an.PressureLevel.NORMAL
    assert changes[:3] == [(N, W), (W, C), (C, N)]
    handle.stop()  # twice is fine


def test_watch_validation() -> None:
    monitor = an.MemoryMonitor()
    with pytest.raises(an.ValidationError):
        monitor.watch(0, lambda p, r: None)
    with pytest.raises(TypeError):
        monitor.watch(1.0, None)  # type: ignore[arg-type]


# ---- GarbageCollectionManager ------------------------------------------------------------


class FakeCacheBase:
    pass


class Shrinker:
    """A real object with the shrink(fraction) protocol of ImageCache."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.calls: list[float] = []

    def shrink(self, fraction: float) -> int:
        self.calls.append(fraction)
        freed = int(self.size * fraction)
        self.size -= freed
        return freed


class BrokenShrinker:
    def shrink(self, fraction: float) -> int:
        raise RuntimeError("cannot shrink")


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_gc_manager_collects_and_shrinks_under_pressure() -> None:
    gcm = an.GarbageCollectionManager(
        an.MemoryMonitor(warning=0.2, critical=0.3, root=fixture("v2")), collect_on="warning"
    )
    cache = Shrinker(1000)
    gcm.register(cache)
    gc.collect()
    for _ in range(50):
        Cycle()  # garbage only the cycle collector can free
    action = gcm.check()
    assert isinstance(action, GCAction)
    assert action.level == an.PressureLevel.WARNING
    assert action.collected is not None and action.collected >= 50
    assert (action.bytes_freed, action.caches_shrunk, action.fraction) == (250, 1, 0.25)
    assert cache.calls == [0.25] and cache.size == 750
    s = gcm.stats
    assert (s.checks, s.collections, s.bytes_freed, s.caches, s.errors) == (1, 1, 250, 1, 0)
    assert s.objects_collected >= 50 and s.last_level == an.PressureLevel.WARNING


def test_gc_manager_critical_fraction_and_threshold() -> None:
    critical = an.MemoryMonitor(warning=0.1, critical=0.2, root=fixture("v2"))
    gcm = an.GarbageCollectionManager(critical, collect_on="critical", critical_fraction=0.5)
    cache = Shrinker(1000)
    gcm.register(cache)
    assert gcm.check().bytes_freed == 500
    # below collect_on: nothing runs
    calm = an.GarbageCollectionManager(
        an.MemoryMonitor(warning=0.2, critical=0.3, root=fixture("v2")), collect_on="critical"
    )
    calm.register(cache)
    action = calm.check()
    assert action.collected is None and action.bytes_freed == 0 and cache.calls == [0.5]
    assert calm.stats.collections == 0 and calm.stats.checks == 1


def test_gc_manager_holds_caches_weakly_and_survives_broken_ones() -> None:
    gcm = an.GarbageCollectionManager(
        an.MemoryMonitor(warning=0.2, critical=0.3, root=fixture("v2"))
    )
    cache = Shrinker(100)
    gcm.register(cache)
    gcm.register(BrokenShrinker())  # dies at once: weakly held
    broken = BrokenShrinker()
    gcm.register(broken)
    assert gcm.stats.caches == 2
    action = gcm.check()
    assert action.caches_shrunk == 1 and gcm.stats.errors == 1
    del cache
    gc.collect()
    assert gcm.stats.caches == 1
    gcm.unregister(broken)
    assert gcm.stats.caches == 0
    with pytest.raises(TypeError):
        gcm.register(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        gcm.register(FakeCacheBase())  # type: ignore[arg-type]


def test_gc_manager_background_thread() -> None:
    gcm = an.GarbageCollectionManager(
        an.MemoryMonitor(warning=0.2, critical=0.3, root=fixture("v2"))
    )
    cache = Shrinker(10**9)
    gcm.register(cache)
    with gcm:
        gcm.start(interval=0.01)
        assert gcm.running
        with pytest.raises(RuntimeError):
            gcm.start(interval=0.01)
        assert wait_for(lambda: gcm.stats.checks >= 3)
    assert not gcm.running
    assert len(cache.calls) >= 3
    gcm.stop()


@pytest.mark.parametrize(
    "kwargs",
    [{"collect_on": "never"}, {"collect_on": an.PressureLevel.NORMAL},
     {"warning_fraction": 0}, {"critical_fraction": 2}],
)
def test_gc_manager_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(an.ValidationError):
        an.GarbageCollectionManager(**kwargs)  # type: ignore[arg-type]


# ---- review: pressure on the working set, not on page cache ----------------------


def _with_stat(tmp_path: Path, tree: str, stat_dir: str, stat: str) -> Path:
    root = tmp_path / tree
    shutil.copytree(FIXTURES / tree, root)
    (root / stat_dir / "memory.stat").write_text(stat)
    return root


def test_cgroup_pressure_ignores_reclaimable_page_cache(tmp_path: Path) -> None:
    # Before: pressure used memory.current / usage_in_bytes, which the kernel
    # fills with page cache up to the limit in any container that reads files,
    # so the monitor sat at CRITICAL and the GC manager shrank caches for nothing.
    v1 = _with_stat(tmp_path, "v1", "sys/fs/cgroup/memory",
                    f"cache {110 * MB}\nrss {18 * MB}\ninactive_file {1 * MB}\n"
                    f"total_cache {110 * MB}\ntotal_inactive_file {100 * MB}\n")
    snap = an.MemoryMonitor(root=v1).snapshot()
    assert snap.cgroup_usage == 128 * MB  # still the raw reading
    assert snap.cgroup_working_set == 28 * MB  # 128 - total_inactive_file
    r = an.MemoryMonitor(warning=0.4, critical=0.5, root=v1).pressure()
    assert r.level == an.PressureLevel.NORMAL and r.source == "system"
    # v2: "inactive_file", not "inactive_anon" nor a key that merely starts alike
    v2 = _with_stat(tmp_path, "v2", "sys/fs/cgroup/user.slice/app.scope",
                    f"anon {10 * MB}\ninactive_anon {3 * MB}\ninactive_filex 1\n"
                    f"inactive_file {80 * MB}\nactive_file {5 * MB}\n")
    snap = an.MemoryMonitor(root=v2).snapshot()
    assert (snap.cgroup_usage, snap.cgroup_working_set) == (100 * MB, 20 * MB)


def test_cgroup_working_set_without_or_with_a_bad_memory_stat(tmp_path: Path) -> None:
    # no memory.stat (the fixture trees): working set = usage, as before
    snap = an.MemoryMonitor(root=fixture("v1")).snapshot()
    assert snap.cgroup_working_set == snap.cgroup_usage == 128 * MB
    for i, stat in enumerate(["inactive_file -5\n", "inactive_file 12x\n", "", "inactive_file",
                              "inactive_file 99999999999999999999999\n"]):
        root = _with_stat(tmp_path / str(i), "v1", "sys/fs/cgroup/memory",
                          stat.replace("inactive_file", "total_inactive_file"))
        snap = an.MemoryMonitor(root=root).snapshot()
        assert snap.cgroup_working_set == 128 * MB and snap.cgroup_problem is None
    # page cache read after usage can exceed it: clamped at 0, never negative
    root = _with_stat(tmp_path / "big", "v1", "sys/fs/cgroup/memory",
                      f"total_inactive_file {500 * MB}\n")
    assert an.MemoryMonitor(root=root).snapshot().cgroup_working_set == 0
    # no cgroup: no working set
    assert an.MemoryMonitor(root=fixture("none")).snapshot().cgroup_working_set is None


def test_real_cgroup_working_set_agrees_with_memory_stat() -> None:
    snap = an.MemoryMonitor().snapshot()
    if snap.cgroup_usage is None:
        pytest.skip("no readable memory cgroup here")
    assert snap.cgroup_working_set is not None
    assert 0 <= snap.cgroup_working_set <= snap.cgroup_usage
