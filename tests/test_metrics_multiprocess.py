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


@pytest.mark.slow  # about 20 s: 200 forked workers
def test_workers_killed_and_restarted(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("AMULET_METRICS_DIR", None)
    p = subprocess.run(
        [sys.executable, str(SCENARIO), str(tmp_path), "50", "2000"],
        capture_output=True, env=env, timeout=240, check=False,
    )
    assert p.returncode == 0, p.stderr.decode()
    r = json.loads(p.stdout)
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
