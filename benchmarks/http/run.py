"""HTTP benchmarks: middleware overhead and upload+decode, with ``hey``.

    python benchmarks/http/run.py [--duration 8] [--repeats 3] [--concurrency 64]

Each app of benchmarks/http/apps.py runs in its own uvicorn (1 worker,
uvloop, httptools, no access log: the same settings for all), one at a time,
in a rotating order per repeat; ``hey`` (Go, keep-alive) drives it after a
warm-up.  Medians of the repeats and their ratios go to
benchmarks/results/http.md, the raw runs to benchmarks/runs/http-*.json.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from http_server import UvicornServer

UVICORN_ARGS = ("--loop", "uvloop", "--http", "httptools")
APPS = ("bare", "ours_default", "ours", "peer")


def photo_jpeg(w: int = 1024, h: int = 768) -> bytes:
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([(x * 255 // w), (y * 255 // h), ((x + y) * 127 // (w + h))], -1)
    noise = np.random.default_rng(0).integers(0, 24, (h, w, 3))
    buf = io.BytesIO()
    Image.fromarray((rgb + noise).clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def multipart(data: bytes, boundary: str = "amuletbenchboundary") -> tuple[bytes, str]:
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"photo.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()
    body += data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_PCT = re.compile(r"(\d+)%+ in ([\d.]+) secs")
_STATUS = re.compile(r"\[(\d{3})\]\s+(\d+) responses")


def hey(url: str, duration: float, concurrency: int, body: Path | None = None,
        content_type: str | None = None) -> dict[str, Any]:
    cmd = ["hey", "-z", f"{duration}s", "-c", str(concurrency)]
    if body is not None:
        cmd += ["-m", "POST", "-D", str(body), "-T", content_type or "application/octet-stream"]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    pct = {int(p): float(s) * 1000 for p, s in _PCT.findall(out)}
    statuses = {int(s): int(n) for s, n in _STATUS.findall(out)}
    m = _RPS.search(out)
    return {"rps": float(m[1]) if m else 0.0, "p50_ms": pct.get(50), "p90_ms": pct.get(90),
            "p99_ms": pct.get(99), "statuses": statuses}


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="amulet-http-bench-"))
    jpeg = photo_jpeg()
    body, ctype = multipart(jpeg)
    body_path = tmp / "upload.bin"
    body_path.write_bytes(body)
    runs: list[dict[str, Any]] = []
    try:
        for rep in range(args.repeats):
            order = APPS[rep % len(APPS):] + APPS[:rep % len(APPS)]
            for name in order:
                env = {"PYTHONPATH": str(ROOT / "benchmarks" / "http")}
                with UvicornServer(f"apps:make_{name}", env=env, extra_args=UVICORN_ARGS,
                                   ready_path="/ping") as srv:
                    hey(srv.url + "/ping", 2, args.concurrency)  # warm-up
                    ping = hey(srv.url + "/ping", args.duration, args.concurrency)
                    hey(srv.url + "/upload", 2, args.upload_concurrency, body_path, ctype)
                    upload = hey(srv.url + "/upload", args.duration, args.upload_concurrency,
                                 body_path, ctype)
                runs.append({"repeat": rep, "app": name, "ping": ping, "upload": upload})
                print(name, rep, f"ping {ping['rps']:.0f} rps", f"upload {upload['rps']:.1f} rps",
                      ping["statuses"], upload["statuses"], flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"runs": runs, "jpeg_bytes": len(jpeg), "settings": vars(args),
            "uvicorn_args": UVICORN_ARGS}


def medians(result: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for app in APPS:
        out[app] = {}
        for ep in ("ping", "upload"):
            rows = [r[ep] for r in result["runs"] if r["app"] == app]
            out[app][ep] = {}
            for k in ("rps", "p50_ms", "p90_ms", "p99_ms"):
                values = [r[k] for r in rows if r.get(k) is not None]
                out[app][ep][k] = statistics.median(values) if values else float("nan")
    return out


def versions() -> dict[str, str]:
    import importlib.metadata as md

    from _versions import cpu_model

    v = {"python": platform.python_version(), "cpu": cpu_model(),
         "hey": "hey (Debian)", "cores": str(__import__("os").cpu_count())}
    for dist in ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "slowapi",
                 "prometheus-fastapi-instrumentator", "prometheus_client", "pillow"):
        try:
            v[dist] = md.version(dist)
        except md.PackageNotFoundError:
            v[dist] = "-"
    return v


def report(result: dict[str, Any], path: Path) -> None:
    med = medians(result)
    s = result["settings"]
    b, o, p, d = med["bare"], med["ours"], med["peer"], med["ours_default"]
    lines = [
        "# HTTP integration benchmarks (issue 13)",
        "",
        (f"Load generator: **hey** (Go, keep-alive connections); {s['duration']} s per run "
        f"after a 2 s warm-up, {s['repeats']} repeats in rotating app order, medians "
        "reported. Each app in its own `uvicorn` (1 worker, `--loop uvloop --http "
        "httptools --no-access-log`), the same settings for all."),
        ("The machine is shared by several jobs (2 cores, noisy): hey and the server "
        "compete for the same cores, so absolute numbers are low and vary; the ratios "
        "within one run are the result."),
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        "",
        f"## Trivial endpoint (`GET /ping`, {s['concurrency']} concurrent clients)",
        "",
        "| app | req/s | p50 ms | p99 ms | vs bare |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, label in (("bare", "bare FastAPI"),
                        ("ours_default", "FastAPI + install() defaults"),
                        ("ours", "FastAPI + install(), every feature on"),
                        ("peer", "peer stack (slowapi + instrumentator + BaseHTTPMiddleware)")):
        m = med[name]["ping"]
        lines.append(f"| {label} | {m['rps']:.0f} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | "
                     f"{m['rps'] / b['ping']['rps']:.2f}x |")
    overhead = 1 - o["ping"]["rps"] / b["ping"]["rps"]
    overhead_default = 1 - d["ping"]["rps"] / b["ping"]["rps"]
    vs_peer = o["ping"]["rps"] / p["ping"]["rps"]
    lines += [
        "",
        (f"- Overhead vs bare, every feature on: **{overhead:.1%}** of throughput "
         f"(target <= 10%: {'met' if overhead <= 0.10 else 'missed'}); with install() "
         f"defaults: **{overhead_default:.1%}**."),
        (f"- Ours (every feature on) vs the peer stack: **{vs_peer:.2f}x** its throughput "
         f"(target >= 2x: "
        f"{'met' if vs_peer >= 2 else 'missed'})."),
        "",
        (f"## Upload + decode (`POST /upload`, multipart JPEG of {result['jpeg_bytes']} bytes, "
        f"1024x768, {s['upload_concurrency']} concurrent clients)"),
        "",
        "| app | req/s | p50 ms | p90 ms | vs bare (UploadFile.read() + Pillow) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, label in (("bare", "UploadFile.read() + Pillow (bare app)"),
                        ("ours_default", "ImageUpload, install() defaults"),
                        ("ours", ("ImageUpload (aread_limited + probe + native decode, "
                                  "uncached), every feature on")),
                        ("peer", "UploadFile.read() + Pillow (peer stack)")):
        m = med[name]["upload"]
        lines.append(f"| {label} | {m['rps']:.1f} | {m['p50_ms']:.1f} | {m['p90_ms']:.1f} | "
                     f"{m['rps'] / b['upload']['rps']:.2f}x |")
    lines += ["", "Raw runs: `benchmarks/runs/" + result["raw_name"] + "`.", ""]
    path.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--upload-concurrency", type=int, default=8)
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--from-json", help="rewrite the report from a saved run")
    args = ap.parse_args()
    if args.from_json:
        result = json.loads(Path(args.from_json).read_text())
        result["raw_name"] = Path(args.from_json).name
        report(result, ROOT / "benchmarks" / "results" / "http.md")
        print(json.dumps(medians(result), indent=1))
        return
    result = run(args)
    result["versions"] = versions()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    result["raw_name"] = f"http-{stamp}.json"
    (ROOT / "benchmarks" / "runs").mkdir(parents=True, exist_ok=True)
    (ROOT / "benchmarks" / "runs" / result["raw_name"]).write_text(json.dumps(result, indent=1))
    if not args.no_report:
        (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
        report(result, ROOT / "benchmarks" / "results" / "http.md")
    print(json.dumps(medians(result), indent=1))


if __name__ == "__main__":
    main()
