"""The shared arena (_core.Arena): records, atomic words, worker slots keyed by
(pid, start time), folding of dead workers (real processes, SIGKILL included),
PID reuse, corrupt and foreign files as typed errors, a full arena."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest

from amulet_native import ArenaError, ArenaFullError
from amulet_native._core import Arena

SMALL = {"max_records": 64, "max_slots": 8, "key_size": 64, "slot_units": 256}


def test_records_and_words(tmp_path: Path) -> None:
    with Arena(tmp_path / "a.arena", **SMALL) as a:
        r = a.record("hits", 2)
        assert a.record(b"hits", 2) == r
        assert a.find("hits") == r and a.find("nope") is None
        assert a.add_f64(r, 0, 2.5) == 2.5
        assert a.add(r, 8, 3) == 3 and a.load(r, 8) == 3
        assert a.cas(r, 8, 3, 10) and not a.cas(r, 8, 3, 11) and a.load(r, 8) == 10
        assert a.read(r, 1) == [2.5]
        with pytest.raises(IndexError):
            a.load(r, 16)
        with pytest.raises(ArenaError) as ei:
            a.record("hits", 3)
        assert ei.value.code == "arena.mismatch"
        with pytest.raises(ValueError):
            a.record("x" * 65)
        assert a.records() == [(b"hits", r, 2, "add", False)]


def test_workers_combine_and_fold(tmp_path: Path) -> None:
    p = tmp_path / "b.arena"
    a = Arena(p, **SMALL)
    b = Arena(p)  # the existing geometry wins
    assert a.slot != b.slot and b.stats()["max_slots"] == 8
    c = a.record("c")
    g = a.record("g", fold="max")
    a.add_f64(c, 0, 1)
    b.add_f64(c, 0, 2)
    b.store_f64(g, 0, 5.0)
    b.store_f64(g, 1, 1.0)
    assert a.read(c, 1) == [3.0] and a.read(g, 2)[0] == 5.0
    b.close()
    assert b.closed
    assert a.read(c, 1) == [3.0] and a.read(g, 2)[0] == 5.0
    assert a.stats()["folds"] == 1 and a.stats()["live_slots"] == 1
    a.close()


def test_shared_record_cas_across_processes(tmp_path: Path) -> None:
    p = tmp_path / "s.arena"
    a = Arena(p, **SMALL)
    r = a.record("gcra", fold="shared")

    def work() -> None:
        x = Arena(p)
        rid = x.record("gcra", fold="shared")
        for _ in range(2000):
            while True:
                cur = x.load(rid, 0)
                if x.cas(rid, 0, cur, cur + 1):
                    break
        os._exit(0)

    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=work) for _ in range(3)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join()
    assert a.load(r, 0) == 6000
    a.close()


def _hammer(path: str, n: int) -> None:
    a = Arena(path)
    r = a.record("n")
    d = a.record("done", fold="shared")
    for _ in range(n):
        a.add_f64(r, 0, 1.0)
        a.add(d, 0, 1)
    os._exit(0)  # no close: folded by whoever reclaims


def test_killed_workers_are_folded_and_size_is_constant(tmp_path: Path) -> None:
    p = tmp_path / "k.arena"
    a = Arena(p, **SMALL)
    r = a.record("n")
    d = a.record("done", fold="shared")
    size0 = p.stat().st_size
    ctx = mp.get_context("fork")
    for rnd in range(12):
        procs = [ctx.Process(target=_hammer, args=(str(p), 3000)) for _ in range(4)]
        for pr in procs:
            pr.start()
        if rnd % 2 == 0:
            time.sleep(0.01)
            try:
                os.kill(procs[0].pid or 0, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it had already finished
        for pr in procs:
            pr.join()
        a.reclaim()
        assert a.stats()["live_slots"] == 1
    total = a.read(r, 1)[0]
    finished = a.load(d, 0)
    assert finished <= total <= finished + 6  # a kill between the two adds
    assert p.stat().st_size == size0
    assert a.stats()["folds"] >= 48
    a.close()


def test_pid_reuse_is_not_mistaken_for_the_dead_worker() -> None:
    a = Arena(None, **SMALL)
    r = a.record("c")
    live = a.record("lg", fold="max", drop=True)
    start = Arena.proc_start_time(os.getpid())
    assert start > 0
    impostor = a._forge_slot(os.getpid(), start + 999)  # same pid, other process
    a._slot_add_f64(r, impostor, 0, 10.0)
    a._slot_add_f64(live, impostor, 0, 7.0)
    a._slot_add_f64(live, impostor, 1, 1.0)
    same = a._forge_slot(os.getpid(), start)  # same pid and start: alive
    a._slot_add_f64(r, same, 0, 1.0)
    assert a.read(live, 2)[1] == 1.0
    assert a.reclaim() == 1
    assert a.read(r, 1) == [11.0]
    assert a.read(live, 2)[1] == 0.0  # live* values of the dead are dropped
    a.close()


def test_fork_child_gets_its_own_slot() -> None:
    a = Arena(None, **SMALL)
    r = a.record("c")
    a.add_f64(r, 0, 1.0)
    pid = os.fork()
    if pid == 0:
        code = 0 if a.slot != 0 else 3
        a.add_f64(r, 0, 5.0)
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert a.load_f64(r, 0) == 1.0  # our copy untouched
    assert a.read(r, 1) == [6.0]
    a.close()


@pytest.mark.parametrize(
    "damage",
    ["foreign", "empty", "magic", "version", "geometry", "truncated"],
)
def test_corrupt_or_foreign_file_is_a_typed_error(tmp_path: Path, damage: str) -> None:
    p = tmp_path / "c.arena"
    if damage == "foreign":
        p.write_bytes(b"# HELP not an arena\n" * 100)
    elif damage == "empty":
        p.write_bytes(b"")
    else:
        Arena(p, **SMALL).close()
        raw = bytearray(p.read_bytes())
        if damage == "truncated":
            raw = raw[:8192]
        else:
            raw[{"magic": 0, "version": 8, "geometry": 20}[damage]] ^= 0x5A
        p.write_bytes(bytes(raw))
    with pytest.raises(ArenaError) as ei:
        Arena(p)
    assert ei.value.code == "arena.corrupt"


def test_full_arena_refuses_and_counts() -> None:
    a = Arena(None, **SMALL)
    for i in range(64):
        a.record(f"k{i}")
    with pytest.raises(ArenaFullError) as ei:
        a.record("one-more")
    assert ei.value.code == "arena.full"
    assert a.stats()["overflow"] == 1
    a.record("k3")  # existing records are still found
    b = Arena(None, **{**SMALL, "max_slots": 2})
    assert b.slot == 1
    a.close()
    b.close()


def test_closed_arena_refuses() -> None:
    a = Arena(None, **SMALL)
    a.close()
    with pytest.raises(ArenaError):
        a.record("x")


def test_stale_temporary_file_of_a_crashed_creator_with_our_pid_does_not_block_creation(
    tmp_path: Path,
) -> None:
    # review-11: a creator killed between creating "<path>.tmp.<pid>" and
    # unlinking it left a file that made every later creator with the same pid
    # (pid 1 in a container, pid reuse) fail with io.error forever.
    p = tmp_path / "stale.arena"
    for suffix in (f".tmp.{os.getpid()}", f".tmp.{os.getpid()}.0", f".tmp.{os.getpid()}.1"):
        (tmp_path / (p.name + suffix)).write_bytes(b"half-written")
    a = Arena(p, **SMALL)
    a.add_f64(a.record("k"), 0, 1.0)
    assert a.read(a.find("k") or 0, 1) == [1.0]
    a.close()


_FULL_FS = r"""
import sys
from amulet_native import ArenaError, ProcessingError
from amulet_native._core import Arena
try:
    a = Arena(sys.argv[1], max_records=64, max_slots=4, key_size=64, slot_units=4096)
    r = a.record("k", 1024)
    for w in range(0, 8192, 8):
        a.store(r, w, 1)
    a.close()
    print("fit")
except (ArenaError, ProcessingError) as e:
    print("refused", e.code)
"""


def test_a_full_filesystem_is_an_error_not_a_sigbus(tmp_path: Path) -> None:
    # review-11: the arena file is sparse; on a full tmpfs (/dev/shm, a small
    # AMULET_METRICS_DIR mount) the first write to an unbacked page killed the
    # worker with SIGBUS.  The blocks are now reserved when the file is made and
    # when a worker claims its slot, so a full filesystem is a typed error.
    import subprocess
    import sys

    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        (mnt / "filler").write_bytes(b"\0" * 900 * 1024)
        r = subprocess.run([sys.executable, "-c", _FULL_FS, str(mnt / "a.arena")],
                           capture_output=True, text=True, timeout=60, check=False,
                           cwd=Path(__file__).parent.parent)
        assert r.returncode == 0, (r.returncode, r.stderr)  # -7: SIGBUS
        assert r.stdout.split() in (["refused", "io.error"], ["fit"])
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_read_does_not_wait_forever_for_a_stopped_folder(tmp_path: Path) -> None:
    # review-11: a reader waited without bound while the fold lease holder was
    # alive: a worker stopped mid-fold (SIGSTOP, a debugger, a frozen cgroup)
    # hung every scrape -- with the GIL held in render_arena, the whole worker.
    import threading

    from amulet_native import AmuletError

    p = tmp_path / "stop.arena"
    cfg = {"max_records": 4096, "max_slots": 8, "key_size": 64, "slot_units": 8192}
    a = Arena(p, **cfg)
    ids = [a.record(f"k{i}", 1, "add") for i in range(2000)]
    pid = os.fork()
    if pid == 0:  # folds forged dead slots without end
        b = Arena(p, **cfg)
        while True:
            b._forge_slot(999_999, 12_345)
            b.reclaim()
    try:
        for trial in range(60):
            time.sleep(0.002 * (trial % 7 + 1))
            os.kill(pid, signal.SIGSTOP)
            outcome: list[str] = []

            def read(outcome: list[str] = outcome) -> None:
                try:
                    a.read(ids[0], 1)
                    outcome.append("ok")
                except AmuletError as e:
                    outcome.append(e.code)

            t = threading.Thread(target=read, daemon=True)
            t.start()
            t.join(30)
            hung = not outcome
            os.kill(pid, signal.SIGCONT)
            assert not hung, "read still waiting for a stopped folder after 30 s"
            assert outcome[0] in ("ok", "lock.timeout"), outcome
            if outcome[0] == "lock.timeout":
                break  # caught the folder mid-fold: the reader gave up, as it should
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        a.close()
