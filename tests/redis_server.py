"""A real, throw-away redis-server for the tests and benchmarks.

``RedisServer(tmpdir).start()`` runs ``redis-server`` on a free loopback port with
persistence off (``--save "" --appendonly no``) in its own temporary directory,
waits until it answers PING, and ``stop()`` terminates it and waits for it.  The
child asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``), so
not even a killed pytest leaves a server behind.  ``kill()`` (SIGKILL) and
``start()`` again on the same port simulate a crash and a restart.

The Debian package ``redis-server`` provides the binary (``make`` installs it);
:func:`redis_server_binary` returns None when it is missing so callers can skip.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

PR_SET_PDEATHSIG = 1


def redis_server_binary() -> str | None:
    """Path of redis-server, or None when it is not installed."""
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _ping(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process on 127.0.0.1:``port``; restartable."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (Debian package redis-server)")
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._started_once = False  # after that, restarts keep the port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        for attempt in range(3):
            log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 - owned by Popen
            try:
                self.proc = subprocess.Popen(
                    [
                        self.binary,
                        "--port",
                        str(self.port),
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--daemonize",
                        "no",
                        "--dir",
                        str(self.workdir),
                        "--protected-mode",
                        "no",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - only calls prctl
                    # a foreign binary: keep `make sanitize`'s ASan preload out of it
                    env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"},
                )
            finally:
                log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if _ping(self.port):
                    self._started_once = True
                    return self
                if self.proc.poll() is not None:
                    break  # exited: most likely the port was taken meanwhile
                time.sleep(0.02)
            self._reap()
            if attempt < 2 and not self._started_once:
                self.port = free_port()
        tail = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"redis-server did not start on port {self.port}:\n{tail}")

    def stop(self) -> None:
        """Terminate the server and wait for it (SIGKILL after 5 s)."""
        self._reap()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def _reap(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def client(self, **kwargs: Any) -> Any:
        """A redis.Redis client for this server (fresh connection pool)."""
        import redis

        kwargs.setdefault("socket_timeout", 5)
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def __enter__(self) -> RedisServer:  # noqa: PYI034 - final in practice
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
