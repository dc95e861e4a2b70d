"""``make serve``: the whole reference system on loopback, stopped by one Ctrl-C.

Starts redis-server (when installed and REDIS_URL is not set; persistence off,
its own temporary directory), the API (``uvicorn --workers $WORKERS``), a job
worker (with Redis) and the Streamlit front end, prints their URLs, and stops
them all on Ctrl-C or SIGTERM, or as soon as one of them dies.

Environment: WORKERS (2), API_PORT (8000), UI_PORT (8501), REDIS_PORT (6390),
REDIS_URL (use this Redis instead of starting one), and every AMULET_* setting
of the service (python/amulet_service/settings.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def main() -> int:
    workers = os.environ.get("WORKERS", "2")
    api_port = os.environ.get("API_PORT", "8000")
    ui_port = os.environ.get("UI_PORT", "8501")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}"}
    env.setdefault("AMULET_CORPUS", str(ROOT.parent / "shared" / "corpus"))
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(cmd, env=env, cwd=HERE, start_new_session=True)
        procs.append((name, p))
        return p

    def stop_all(*_: object) -> None:
        # Newest first, one at a time: the UI, the worker and the API stop
        # while Redis is still there to finish their work with.
        for name, p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                print(f"serve: {name} did not stop; killing it", file=sys.stderr)
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    # Both explicitly: a shell starting us in the background leaves SIGINT ignored.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    tmp = tempfile.TemporaryDirectory(prefix="amulet-serve-")
    try:
        if not env.get("REDIS_URL") and shutil.which("redis-server"):
            port = os.environ.get("REDIS_PORT", "6390")
            spawn(
                "redis",
                [
                    "redis-server",
                    "--port",
                    port,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    tmp.name,
                    "--loglevel",
                    "warning",
                ],
            )
            env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
            time.sleep(0.5)
        api = spawn(
            "api",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "amulet_service.app:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                api_port,
                "--workers",
                workers,
                "--log-level",
                "warning",
            ],
        )
        wait_http(f"http://127.0.0.1:{api_port}/livez", api)
        if env.get("REDIS_URL"):
            spawn("worker", [sys.executable, "-m", "amulet_service.worker"])
        ui = spawn(
            "ui",
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                str(HERE / "amulet_frontend" / "app.py"),
                "--server.port",
                ui_port,
                "--server.address",
                "127.0.0.1",
                "--server.headless",
                "true",
                "--browser.gatherUsageStats",
                "false",
            ],
        )
        env_ui = f"http://127.0.0.1:{ui_port}"
        os.environ["AMULET_API_URL"] = f"http://127.0.0.1:{api_port}"
        wait_http(env_ui + "/_stcore/health", ui)
        print(
            f"""
  API       http://127.0.0.1:{api_port}/docs   ({workers} workers{", Redis " + env["REDIS_URL"] if env.get("REDIS_URL") else ", no Redis"})
  front end {env_ui}
  try:      curl -F file=@photo.jpg http://127.0.0.1:{api_port}/v1/classify
  Ctrl-C stops everything.
""",
            flush=True,
        )
        while True:
            for name, p in procs:
                if p.poll() is not None:
                    print(f"serve: {name} exited with {p.returncode}; stopping", file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nserve: stopping", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all()
        tmp.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
