"""A real uvicorn server in a subprocess on a free loopback port, for the
HTTP integration tests and benchmarks.

``with UvicornServer("http_apps:make_app", env={...}) as srv:`` starts
``python -m uvicorn --factory`` (``workers`` > 1 for multi-worker tests), waits
until ``/livez`` answers and always stops it (SIGTERM, then SIGKILL) on exit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx
from typing_extensions import Self

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class UvicornServer:
    def __init__(
        self,
        app: str,
        *,
        env: dict[str, str] | None = None,
        workers: int = 1,
        factory: bool = True,
        extra_args: tuple[str, ...] = (),
        ready_path: str = "/livez",
        startup_timeout: float = 30.0,
    ) -> None:
        self.app = app
        self.env = dict(env or {})
        self.workers = workers
        self.factory = factory
        self.extra_args = extra_args
        self.ready_path = ready_path
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> UvicornServer:
        import tempfile

        fd, log = tempfile.mkstemp(prefix="uvicorn-", suffix=".log")
        self.log_path = Path(log)
        path = [str(REPO_ROOT), str(REPO_ROOT / "tests")]
        if self.env.get("PYTHONPATH"):
            path.append(self.env["PYTHONPATH"])
        env = {**os.environ, **self.env, "PYTHONPATH": os.pathsep.join(path)}
        cmd = [sys.executable, "-m", "uvicorn", self.app, "--host", "127.0.0.1",
               "--port", str(self.port), "--log-level", "warning", "--no-access-log"]
        if self.factory:
            cmd.append("--factory")
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        cmd += list(self.extra_args)
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=fd, stderr=fd,
                                     start_new_session=True)
        os.close(fd)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited early:\n{self.log()}")
            try:
                r = httpx.get(self.url + self.ready_path, timeout=1.0)
                if r.status_code < 500:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"uvicorn did not start:\n{self.log()}")

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        """SIGTERM to the server (its process group: the workers too)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGTERM)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(10)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(10)
        else:  # the workers of a dead supervisor
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc = None
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    def rss(self) -> int:
        """Resident set size of the server process (single worker) in bytes."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
