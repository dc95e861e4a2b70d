"""The reference service with Redis: real redis-server, real uvicorn
subprocesses, a real RQ worker process.

* two API processes sharing one Redis: a result computed by one is a cache
  hit on the other;
* a job submitted to the API runs on a separate worker process, progress and
  results come back through Redis;
* Redis killed mid-run: the API keeps answering (L1 hits and new images),
  jobs are refused with 503 while it is down and run again when it is back;
* ``--workers 2``, one worker SIGKILLed: the other keeps serving.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
from http_server import REPO_ROOT, UvicornServer
from redis_server import RedisServer, redis_server_binary

import amulet_native as an

sys.path.insert(0, str(REPO_ROOT / "python"))

from amulet_service.gallery import generated_picture
from test_service_api import APP, APP_DIR, service_env

pytestmark = [
    pytest.mark.skipif(redis_server_binary() is None, reason="redis-server not installed"),
    pytest.mark.slow,  # about 25 s each: several servers and processes start
]


def jpeg_of(seed: int, side: int = 256) -> bytes:
    rgb = generated_picture(seed)
    return an.encode_jpeg(an.resize(rgb, (side, side * 2 // 3)), quality=80)


def classify(url: str, data: bytes) -> httpx.Response:
    return httpx.post(
        url + "/v1/classify", content=data, headers={"Content-Type": "image/jpeg"}, timeout=30
    )


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path / "redis").start()
    try:
        yield srv
    finally:
        srv.stop()


class Worker:
    """``python -m amulet_service.worker`` in its own process group."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {
            **os.environ,
            **env,
            "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{REPO_ROOT / 'python'}",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "amulet_service.worker"],
            cwd=REPO_ROOT / "python",
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def wait_job(url: str, job: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state: dict[str, Any] = httpx.get(url + job["status_url"], timeout=10).json()
        if state.get("status") in ("finished", "failed"):
            return state
        time.sleep(0.2)
    raise AssertionError(f"job did not finish: {state}")


def submit(url: str, seeds: list[int]) -> httpx.Response:
    files = [("files", (f"{s}.jpg", jpeg_of(s), "image/jpeg")) for s in seeds]
    return httpx.post(url + "/v1/jobs", files=files, timeout=30)


def test_two_processes_share_results_through_redis(tmp_path: Path, redis: RedisServer) -> None:
    env = service_env(tmp_path, REDIS_URL=redis.url)
    with (
        UvicornServer(APP, env=env, extra_args=APP_DIR, startup_timeout=60) as a,
        UvicornServer(APP, env=env, extra_args=APP_DIR, startup_timeout=60) as b,
    ):
        data = jpeg_of(6)
        first = classify(a.url, data).json()
        assert first["cache"]["result"] == "miss"
        second = classify(b.url, data).json()
        assert second["worker"] != first["worker"]
        assert second["cache"]["result"] == "hit"  # computed by a, found in Redis by b
        assert second["predictions"] == first["predictions"]
        assert second["predictions"][0]["label"] == "amulet-07"


def test_job_runs_on_a_separate_worker_process(tmp_path: Path, redis: RedisServer) -> None:
    env = service_env(tmp_path, REDIS_URL=redis.url)
    with UvicornServer(APP, env=env, extra_args=APP_DIR, startup_timeout=60) as api:
        r = submit(api.url, [0, 1, 2])
        assert r.status_code == 202 and r.json()["durable"] is True
        job = r.json()
        assert httpx.get(api.url + job["status_url"]).json()["status"] == "queued"  # no worker yet
        with Worker(env):
            state = wait_job(api.url, job)
        assert state["status"] == "finished", state
        labels = [e["predictions"][0]["label"] for e in state["results"]]
        assert labels == ["amulet-01", "amulet-02", "amulet-03"]
        assert state["progress"] == {"done": 3, "total": 3}
    # The job outlived the API process: a new API process reads it from Redis.
    with UvicornServer(APP, env=env, extra_args=APP_DIR, startup_timeout=60) as api2:
        again = httpx.get(api2.url + job["status_url"]).json()
        assert again["status"] == "finished" and again["results"] == state["results"]


def test_redis_killed_mid_run(tmp_path: Path, redis: RedisServer) -> None:
    env = service_env(tmp_path, REDIS_URL=redis.url)
    with UvicornServer(APP, env=env, extra_args=APP_DIR, startup_timeout=60) as api, Worker(env):
        warm = jpeg_of(8)
        assert classify(api.url, warm).json()["cache"]["result"] == "miss"
        redis.kill()
        # L1 still answers, new images are still computed, nothing is a 5xx.
        r = classify(api.url, warm)
        assert r.status_code == 200 and r.json()["cache"]["result"] == "hit"
        r = classify(api.url, jpeg_of(9))
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "amulet-10"
        down = submit(api.url, [3])
        assert down.status_code == 503, down.text
        assert down.headers["content-type"].startswith("application/problem+json")
        redis.start()
        # Back: the worker reconnects by itself and jobs run again.
        deadline = time.monotonic() + 20
        while (r := submit(api.url, [4, 5])).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert r.status_code == 202, r.text
        state = wait_job(api.url, r.json())
        assert state["status"] == "finished", state
        assert [e["predictions"][0]["label"] for e in state["results"]] == [
            "amulet-05",
            "amulet-06",
        ]


def worker_pids(supervisor: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(supervisor)], capture_output=True, text=True, check=False
    )
    return [int(p) for p in out.stdout.split()]


def test_worker_sigkilled_others_keep_serving(tmp_path: Path, redis: RedisServer) -> None:
    env = service_env(tmp_path, REDIS_URL=redis.url)
    with UvicornServer(APP, env=env, extra_args=APP_DIR, workers=2, startup_timeout=90) as api:
        assert api.proc is not None
        deadline = time.monotonic() + 30
        while len(pids := worker_pids(api.proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(pids) >= 2
        seen = {classify(api.url, jpeg_of(s)).json()["worker"] for s in range(10, 16)}
        os.kill(pids[0], signal.SIGKILL)
        statuses = []
        for s in range(16, 28):
            try:
                statuses.append(classify(api.url, jpeg_of(s)).status_code)
            except httpx.TransportError:
                statuses.append(-1)  # a connection accepted by the dead worker
        assert statuses.count(200) >= len(statuses) - 1, statuses
        assert all(s == 200 or s == -1 for s in statuses), statuses
        assert httpx.get(api.url + "/livez").status_code == 200
        assert seen  # at least one worker answered before the kill
