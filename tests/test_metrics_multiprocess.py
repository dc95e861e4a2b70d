"""Multi-worker mode end to end, in a fresh interpreter (the mode is
process-wide): 4 forked workers x 50 rounds, one SIGKILLed mid-write each
round, one closing cleanly, two vanishing without clean-up; then a simulated
PID reuse and a scrape from another worker.  See tests/_metrics_mp_scenario.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import amulet_native

ROOT = Path(amulet_native.__file__).resolve().parent.parent
SCENARIO = Path(__file__).with_name("_metrics_mp_scenario.py")


def _child(*args: str, timeout: float = 60) -> bytes:
    """The stdout of ``python *args`` run with this checkout first on the path
    and no AMULET_METRICS_DIR; it must exit 0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("AMULET_METRICS_DIR", None)
    p = subprocess.run([sys.executable, *args], capture_output=True, env=env, timeout=timeout,
                       check=False)
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout


@pytest.mark.slow  # about 20 s: 200 forked workers
def test_workers_killed_and_restarted(tmp_path: Path) -> None:
    r = json.loads(_child(str(SCENARIO), str(tmp_path), "50", "2000", timeout=240))
    summary = {k: v for k, v in r.items() if not isinstance(v, list)}
    assert r["kills"] == 50, summary
    # no finished increment lost; a kill can land between an increment and its
    # "done" mark, so at most one increment per kill is not yet marked
    assert r["done"] <= r["jobs_total"] <= r["done"] + r["kills"], summary
    assert r["done"] - r["kills"] <= r["lat_count"] <= r["jobs_total"], summary
    assert r["done"] - r["kills"] <= r["size_count"] <= r["jobs_total"], summary
    # every worker that finished did exactly n increments: 3 x 50 x n of them
    assert r["done"] >= 3 * r["rounds"] * r["n"], summary
    assert r["reuse"] == 5.0, summary  # the PID-reuse slot was folded, exactly once
    assert r["child_jobs_total"] == r["jobs_total"], summary  # any worker serves all
    assert r["live"] == 0.0, summary  # livesum drops dead workers
    assert r["peak"] == 3.0, summary  # max keeps dead workers' values
    assert r["live_slots"] == 1 and r["overflow"] == 0, summary
    assert r["folds"] >= 4 * r["rounds"], summary
    # the arena does not grow with restarts: same file size, same allocated
    # blocks after the first rounds, same number of records
    assert len(set(r["st_size"])) == 1, summary
    assert len(set(r["st_blocks"][5:])) == 1, summary
    assert len(set(r["records"][1:])) == 1, summary


def test_gauge_modes_and_environment_switch(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AMULET_METRICS_DIR": str(tmp_path)}
    p = subprocess.run([sys.executable, str(SCENARIO.with_name("_metrics_mp_modes.py"))],
                       capture_output=True, env=env, timeout=120, check=False)
    assert p.returncode == 0, p.stderr.decode()
    r = json.loads(p.stdout)
    v, after = r["values"], r["after"]
    # parent 5, dead children 1 and 9, a live child 3 (set last)
    assert v == {"sum": 18.0, "livesum": 8.0, "max": 9.0, "livemax": 5.0, "min": 1.0,
                 "livemin": 3.0, "mostrecent": 3.0, "livemostrecent": 3.0}
    # the live child is killed: live* modes forget it, the others keep it
    assert after == {"sum": 18.0, "livesum": 5.0, "max": 9.0, "livemax": 5.0, "min": 1.0,
                     "livemin": 5.0, "mostrecent": 3.0, "livemostrecent": 5.0}
    assert r["count"] == 3.0


def test_corrupt_arena_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "metrics.arena").write_bytes(b"not an arena at all" * 100)
    code = (
        "import sys\n"
        "from amulet_native import metrics, ArenaError\n"
        "c = metrics.Counter('kept', 'local values survive')\n"
        "c.inc(2)\n"
        "try:\n"
        "    metrics.multiprocess(sys.argv[1])\n"
        "except ArenaError as e:\n"
        "    print(e.code, metrics.REGISTRY.get_sample_value('kept_total'))\n"
    )
    assert _child("-c", code, str(tmp_path)).decode().split() == ["arena.corrupt", "2.0"]


@pytest.mark.slow  # a real uvicorn with 2 workers: 20-80 s on a busy machine
def test_uvicorn_workers_share_one_view(tmp_path: Path) -> None:
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{SCENARIO.parent}",
           "AMULET_METRICS_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "_metrics_asgi_app:app", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "2", "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(base + "/metrics", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        pids = set()
        for _ in range(40):
            with httpx.Client() as client:  # a new connection each time
                pids.add(client.get(base + "/hit", timeout=5).text)
        for _ in range(6):
            with httpx.Client() as client:
                body = client.get(base + "/metrics", timeout=5,
                                  headers={"accept": "text/plain"}).text
            assert 'asgi_hits_total{path="/hit"} 40.0' in body, body[:2000]
        assert len(pids) >= 1
    finally:
        proc.terminate()
        proc.wait(30)


def test_metrics_created_before_the_switch_move_into_the_arena(tmp_path: Path) -> None:
    code = (
        "import os, sys\n"
        "from amulet_native import metrics\n"
        "c = metrics.Counter('early', 'created before multiprocess()', ['k'])\n"
        "c.labels('a').inc(2)\n"
        "h = metrics.Histogram('early_seconds', 'h', buckets=[1])\n"
        "h.observe(0.5)\n"
        "metrics.multiprocess(sys.argv[1])\n"
        "c.labels('a').inc(3)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    c.labels('a').inc(5)\n"
        "    h.observe(2)\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "r = metrics.REGISTRY\n"
        "print(r.get_sample_value('early_total', {'k': 'a'}),"
        " r.get_sample_value('early_seconds_count'))\n"
    )
    assert _child("-c", code, str(tmp_path)).decode().split() == ["10.0", "2.0"]
