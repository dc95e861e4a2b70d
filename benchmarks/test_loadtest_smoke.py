"""Smoke test of the service load test: the quick run against both servers
completes, every request of ours gets an HTTP answer (no dropped connection),
none of ours is a 5xx, and every hostile request gets a 4xx.  Not a timing
assertion: the numbers themselves go to benchmarks/results/service.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_loadtest_quick_run(tmp_path: Path) -> None:
    proc = subprocess.run(  # noqa: PLW1510 - the return code is asserted
        [
            sys.executable,
            str(HERE / "loadtest.py"),
            "--quick",
            "--out",
            str(tmp_path),
            "--plot",
            str(tmp_path / "rss.png"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = tmp_path.glob("service-*.json")
    runs = json.loads(run.read_text())["runs"]
    assert {r["server"] for r in runs} == {"amulet", "baseline"}
    for r in runs:
        assert r["requests"] > 0 and r["throughput"] > 0
        if r["server"] == "amulet":
            assert r["5xx"] == 0 and r["dropped"] == 0, r
            for kind, statuses in r["by_kind"].items():
                if kind not in ("repeated", "new", "slow_body"):
                    assert all(s.startswith("4") for s in statuses), (kind, statuses)
    assert (tmp_path / "rss.png").stat().st_size > 1000
