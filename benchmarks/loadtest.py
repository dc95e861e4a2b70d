"""Load test: the reference service (python/amulet_service) against the baseline
(python/baseline), same machine, same uvicorn worker count, one run.

    python benchmarks/loadtest.py                        # the full run (~3 min)
    python benchmarks/loadtest.py --quick                # the smoke run (~40 s)
    python benchmarks/loadtest.py --clients 64 128 --rates 100 200 --seconds 10

Workload (every request is ``POST /v1/classify`` with a multipart ``file``, the
same bytes for both servers): 50% repeated images (a set of 16), 30% new ones
(a JPEG with a fresh comment segment: new digest, same decoding work), 20%
hostile, in equal parts: a PNG decompression bomb (30000x30000 header), a
truncated JPEG, a corrupt JPEG, a wrong type (text), an oversized body with a
Content-Length over the limit, an oversized chunked body without one, and a
slow body (sent in four pieces over 0.6 s).

Closed loop: C clients each send, wait for the answer, send again.  Open
loop: requests start at a fixed rate whatever the server does, and latency is
measured from the intended start (no coordinated omission).  The client is
one asyncio process speaking HTTP/1.1 on raw sockets (keep-alive, prebuilt
requests), so that it costs far less CPU than the servers; it still shares the
machine with them.

Reported per run: throughput (responses/s), p50/p95/p99/max latency, responses
by status, errors by class (``dropped``: no HTTP response at all), the RSS of
every worker over time and the servers' CPU seconds.  Results go to
``benchmarks/runs/service-<time>.json``, the RSS plot to
``benchmarks/service_rss.png`` and the summary table to stdout (and, with
``--write``, to ``benchmarks/results/service.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(REPO))

from amulet_service.gallery import generated_picture

import amulet_native as an

MAX_UPLOAD_MB = 2
BOUNDARY = b"amuletloadtestboundary"
HOSTILE_KINDS = (
    "bomb",
    "truncated",
    "corrupt",
    "wrong_type",
    "oversize_declared",
    "oversize_chunked",
    "slow_body",
)


# ---- requests -----------------------------------------------------------------


def multipart(data: bytes, ctype: bytes = b"image/jpeg", name: bytes = b"photo.jpg") -> bytes:
    return (
        b"--"
        + BOUNDARY
        + b'\r\nContent-Disposition: form-data; name="file"; filename="'
        + name
        + b'"\r\nContent-Type: '
        + ctype
        + b"\r\n\r\n"
        + data
        + b"\r\n--"
        + BOUNDARY
        + b"--\r\n"
    )


def head(port: int, length: int | None, extra: bytes = b"") -> bytes:
    h = (
        b"POST /v1/classify?top_k=3 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"Content-Type: multipart/form-data; boundary=" % port + BOUNDARY + b"\r\n"
    )
    if length is not None:
        h += b"Content-Length: %d\r\n" % length
    return h + extra + b"\r\n"


def png_bomb(side: int = 30_000) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (1 << 20), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def with_comment(jpeg: bytes, n: int) -> bytes:
    """The same JPEG with a COM segment after SOI: a new digest, the same pixels."""
    text = b"loadtest-%012d" % n
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + jpeg[2:]


@dataclass
class Workload:
    repeated: list[bytes]
    base_new: list[bytes]
    bomb: bytes
    truncated: bytes
    corrupt: bytes
    seed: int = 1
    counter: int = 0

    @classmethod
    def build(cls) -> Workload:
        pics = [
            an.encode_jpeg(an.resize(generated_picture(i), (640, 426)), quality=88)
            for i in range(24)
        ]
        good = pics[0]
        corrupt = bytearray(good)
        rnd = random.Random(7)
        for i in range(600, len(corrupt) - 10, 97):
            corrupt[i] = rnd.randrange(256)
        return cls(pics[:16], pics[16:], png_bomb(), good[: len(good) // 3], bytes(corrupt))

    def pick(self, rng: random.Random) -> tuple[str, bytes]:
        """(kind, multipart body or '' for the streaming kinds)."""
        x = rng.random()
        if x < 0.5:
            return "repeated", multipart(rng.choice(self.repeated))
        if x < 0.8:
            self.counter += 1
            return "new", multipart(with_comment(rng.choice(self.base_new), self.counter))
        kind = rng.choice(HOSTILE_KINDS)
        if kind == "bomb":
            return kind, multipart(self.bomb, b"image/png", b"bomb.png")
        if kind == "truncated":
            return kind, multipart(self.truncated)
        if kind == "corrupt":
            return kind, multipart(self.corrupt)
        if kind == "wrong_type":
            return kind, multipart(b'{"this": "is not an image"}' * 20, b"text/plain", b"a.txt")
        if kind == "slow_body":
            return kind, multipart(self.repeated[0])
        return kind, b""


# ---- the HTTP client ------------------------------------------------------------


class Dropped(Exception):
    """No HTTP response at all."""


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, keep-alive) after reading the whole response."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise Dropped(type(exc).__name__) from None
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip().lower()
    try:
        if "content-length" in headers:
            await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
    except (asyncio.IncompleteReadError, ConnectionError):
        return status, False
    return status, headers.get("connection") != "close"


class Conn:
    # uvicorn closes a keep-alive connection idle for 5 s; a request sent as it
    # does so would look like a dropped connection, so older ones are not reused.
    MAX_IDLE = 3.0

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    async def ensure(self) -> None:
        if self.writer is not None and time.monotonic() - self.last_used > self.MAX_IDLE:
            self.close()
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            sock = self.writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, kind: str, body: bytes) -> int:
        await self.ensure()
        assert self.reader is not None and self.writer is not None
        w, port = self.writer, self.port
        keep = True
        try:
            if kind == "oversize_declared":
                w.write(head(port, (MAX_UPLOAD_MB + 8) << 20) + b"\0" * 65536)
                keep = False
            elif kind == "oversize_chunked":
                w.write(head(port, None, b"Transfer-Encoding: chunked\r\n"))
                part = multipart(b"")[: -len(BOUNDARY) - 8]  # a file part that never ends
                w.write(b"%x\r\n" % len(part) + part + b"\r\n")
                chunk = b"%x\r\n" % 65536 + b"\0" * 65536 + b"\r\n"
                keep = False
                for _ in range(((MAX_UPLOAD_MB + 1) << 20) // 65536):
                    w.write(chunk)
                    await w.drain()
                    # Like curl, stop sending once the server has answered (its
                    # 413 arrives mid-body); sending on would make the server's
                    # close a reset that can discard the answer in flight.
                    if self.reader._buffer:  # type: ignore[attr-defined]  # bytes received
                        break
                else:
                    w.write(b"0\r\n\r\n")
            elif kind == "slow_body":
                w.write(head(port, len(body)))
                step = len(body) // 4 + 1
                for i in range(0, len(body), step):
                    w.write(body[i : i + step])
                    await w.drain()
                    await asyncio.sleep(0.15)
            else:
                w.write(head(port, len(body)) + body)
            await w.drain()
        except ConnectionError:
            keep = False  # the server answered early and closed; the answer may be buffered
        status, alive = await read_response(self.reader)
        self.last_used = time.monotonic()
        if not (keep and alive):
            self.close()
        return status


@dataclass
class Result:
    server: str
    mode: str
    level: float
    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    by_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    rss: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    cpu_seconds: float = 0.0
    wall: float = 0.0

    def record(self, kind: str, status: int | None, latency: float, error: str | None) -> None:
        key = str(status) if status is not None else "none"
        self.statuses[key] = self.statuses.get(key, 0) + 1
        k = self.by_kind.setdefault(kind, {})
        k[key] = k.get(key, 0) + 1
        if error:
            self.errors[error] = self.errors.get(error, 0) + 1
        if status is not None:
            self.latencies.append(latency)

    def summary(self) -> dict[str, Any]:
        lat = np.array(self.latencies) * 1e3 if self.latencies else np.zeros(1)
        n = sum(self.statuses.values())
        five = sum(v for k, v in self.statuses.items() if k.startswith("5"))
        return {
            "server": self.server,
            "mode": self.mode,
            "level": self.level,
            "requests": n,
            "throughput": round(len(self.latencies) / self.wall, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p95_ms": round(float(np.percentile(lat, 95)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "max_ms": round(float(lat.max()), 2),
            "5xx": five,
            "dropped": self.errors.get("dropped", 0),
            "statuses": dict(sorted(self.statuses.items())),
            "errors": self.errors,
            "cpu_s": round(self.cpu_seconds, 2),
            "max_rss_mb": round(
                max((max(v for _, v in s) for s in self.rss.values() if s), default=0) / 2**20, 1
            ),
        }


async def one(conn: Conn, wl: Workload, rng: random.Random, res: Result, t_intended: float) -> None:
    kind, body = wl.pick(rng)
    try:
        status = await asyncio.wait_for(conn.request(kind, body), timeout=60)
        res.record(kind, status, time.perf_counter() - t_intended, None)
    except Dropped:
        conn.close()
        res.record(kind, None, 0, "dropped")
    except asyncio.TimeoutError:
        conn.close()
        res.record(kind, None, 0, "client_timeout")
    except OSError as exc:
        conn.close()
        res.record(kind, None, 0, f"connect:{type(exc).__name__}")


async def closed_loop(port: int, clients: int, seconds: float, res: Result) -> None:
    wl = Workload.build()
    stop = time.perf_counter() + seconds

    async def client(i: int) -> None:
        rng = random.Random(i)
        conn = Conn(port)
        while time.perf_counter() < stop:
            await one(conn, wl, rng, res, time.perf_counter())
        conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    res.wall = time.perf_counter() - t0


async def open_loop(port: int, rate: float, seconds: float, res: Result) -> None:
    wl = Workload.build()
    rng = random.Random(11)
    idle: list[Conn] = []
    tasks: set[asyncio.Task[None]] = set()

    async def fire(t_intended: float) -> None:
        conn = idle.pop() if idle else Conn(port)
        await one(conn, wl, rng, res, t_intended)
        idle.append(conn)

    t0 = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        t = t0 + i / rate
        delay = t - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(fire(t))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    res.wall = max(time.perf_counter() - t0, seconds)
    for c in idle:
        c.close()


# ---- servers ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    APPS: ClassVar[dict[str, str]] = {
        "amulet": "amulet_service.app:create_app",
        "baseline": "baseline.app:create_app",
    }
    # Variants of ours, to measure what one mechanism adds.
    VARIANTS: ClassVar[dict[str, tuple[str, dict[str, str]]]] = {
        "amulet-batch8": ("amulet", {"AMULET_BATCH_MAX_SIZE": "8"}),
        "amulet-batch8-wait2ms": (
            "amulet",
            {"AMULET_BATCH_MAX_SIZE": "8", "AMULET_BATCH_MAX_WAIT_MS": "2"},
        ),
    }

    def __init__(self, name: str, workers: int, gallery: Path) -> None:
        self.name = name
        app, extra = self.VARIANTS.get(name, (name, {}))
        self.workers = workers
        self.port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'python'}",
            "AMULET_GALLERY_DIR": str(gallery),
            "AMULET_MAX_UPLOAD_MB": str(MAX_UPLOAD_MB),
            "BASELINE_MAX_UPLOAD_MB": str(MAX_UPLOAD_MB),
            "AMULET_CORPUS": "/nonexistent",
            "AMULET_THREAD_POOL_SIZE": "2",
            "AMULET_REQUEST_DEADLINE": "30",
            "AMULET_IMAGE_CACHE_SIZE": "64",  # MiB of decoded images per worker
            **extra,
        }
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                self.APPS[app],
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
                "--no-access-log",
                "--app-dir",
                str(REPO / "python"),
            ],
            env=env,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
                    ready = s.recv(64).startswith(b"HTTP/1.1 200")
                if ready and len(self.worker_pids()) >= workers:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"{name} did not start")

    def worker_pids(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        )
        pids = [int(p) for p in out.stdout.split() if not _is_helper(int(p))]
        return pids or [self.proc.pid]

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _is_helper(pid: int) -> bool:
    """multiprocessing's resource tracker, a child of uvicorn that is no worker."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"resource_tracker" in f.read()
    except OSError:
        return True


def rss_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def cpu_of(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


class Sampler(threading.Thread):
    def __init__(self, pids: list[int], res: Result, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pids, self.res, self.every = pids, res, every
        self.halt = threading.Event()
        self.cpu0 = sum(cpu_of(p) for p in pids)

    def run(self) -> None:
        t0 = time.perf_counter()
        while not self.halt.is_set():
            t = time.perf_counter() - t0
            for i, p in enumerate(self.pids):
                self.res.rss.setdefault(f"worker{i}", []).append((round(t, 2), rss_of(p)))
            self.halt.wait(self.every)

    def finish(self) -> None:
        self.halt.set()
        self.join()
        self.res.cpu_seconds = sum(cpu_of(p) for p in self.pids) - self.cpu0


def run_one(server: Server, mode: str, level: float, seconds: float) -> Result:
    res = Result(server.name, mode, level, seconds)
    sampler = Sampler(server.worker_pids(), res)
    sampler.start()
    if mode == "closed":
        asyncio.run(closed_loop(server.port, int(level), seconds, res))
    else:
        asyncio.run(open_loop(server.port, level, seconds, res))
    sampler.finish()
    return res


def warm(server: Server) -> None:
    """A short unmeasured run: imports, first decodes, caches of both sides."""
    run_one(server, "closed", 8, 2.0)


def plot(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, name in zip(axes, ("amulet", "baseline")):  # the variants are not plotted
        offset = 0.0
        for r in (r for r in results if r.server == name):
            for w, series in sorted(r.rss.items()):
                if series:
                    ax.plot(
                        [offset + t for t, _ in series],
                        [v / 2**20 for _, v in series],
                        color=f"C{int(w[-1])}",
                        lw=1,
                        label=w if offset == 0 else None,
                    )
            ax.axvline(offset, color="0.85", lw=0.5)
            ax.text(
                offset,
                0.02,
                f"{r.mode[0]}{int(r.level)}",
                fontsize=7,
                color="0.4",
                transform=ax.get_xaxis_transform(),
            )
            offset += max((s[-1][0] for s in r.rss.values() if s), default=0)
        ax.set_ylim(bottom=0)
        ax.set_title(f"{name}: RSS per worker over the runs")
        ax.set_xlabel("seconds (runs back to back)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("RSS (MiB)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--clients", type=int, nargs="*", default=[64, 128, 256])
    ap.add_argument("--rates", type=float, nargs="*", default=[50, 100])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--quick", action="store_true", help="one short closed and open run")
    ap.add_argument("--replot", type=Path, help="only redraw the RSS plot of a saved run")
    ap.add_argument(
        "--servers",
        nargs="*",
        default=["amulet", "baseline"],
        help="amulet, baseline, amulet-nobatch, amulet-wait2ms",
    )
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "runs")
    ap.add_argument("--plot", type=Path, default=REPO / "benchmarks" / "service_rss.png")
    args = ap.parse_args()
    if args.replot:
        plot(load_results(args.replot), args.plot)
        return 0
    if args.quick:
        args.clients, args.rates, args.seconds = [32], [60], 4.0
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        gallery = Path(tmp) / "gallery"
        for name in args.servers:
            server = Server(name, args.workers, gallery)
            try:
                warm(server)
                for c in args.clients:
                    results.append(run_one(server, "closed", c, args.seconds))
                    print(json.dumps(results[-1].summary()), flush=True)
                for rate in args.rates:
                    results.append(run_one(server, "open", rate, args.seconds))
                    print(json.dumps(results[-1].summary()), flush=True)
            finally:
                server.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    payload = {
        "workers": args.workers,
        "seconds": args.seconds,
        "cpus": os.cpu_count(),
        "runs": [{**r.summary(), "by_kind": r.by_kind, "rss": r.rss} for r in results],
    }
    (args.out / f"service-{stamp}.json").write_text(json.dumps(payload))
    plot(results, args.plot)
    print(table(results))
    return 0


def load_results(path: Path) -> list[Result]:
    """The results of a saved run (enough for plot() and table())."""
    out = []
    for r in json.loads(path.read_text())["runs"]:
        res = Result(r["server"], r["mode"], r["level"], 0.0)
        # Runs saved before helper processes were filtered: a worker with the
        # model loaded is never under 40 MiB, multiprocessing's tracker always is.
        res.rss = {
            w: [tuple(x) for x in v]
            for w, v in r["rss"].items()
            if v and max(x[1] for x in v) > 40 << 20
        }
        out.append(res)
    return out


def table(results: list[Result]) -> str:
    rows = [
        "| server | mode | clients / rate | req/s | p50 ms | p95 ms | p99 ms | max ms | 5xx | dropped | CPU s | max RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r.summary()
        rows.append(
            f"| {s['server']} | {s['mode']} | {s['level']:g} | {s['throughput']} | "
            f"{s['p50_ms']} | {s['p95_ms']} | {s['p99_ms']} | {s['max_ms']} | {s['5xx']} | "
            f"{s['dropped']} | {s['cpu_s']} | {s['max_rss_mb']} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
