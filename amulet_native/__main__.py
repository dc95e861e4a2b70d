"""``python -m amulet_native``: what this install is and whether it works.

Without options it prints the version, where the package was imported from,
the native libraries and features of the loaded build (formats, codec library
versions, SIMD paths), and the CPUs and memory limits as the library sees them
(CPU affinity and cgroup quota, cgroup memory limit, the process limit of
``set_process_memory_limit``).  ``--json`` prints the same as one JSON object.

``--selftest`` runs a short check of the main paths on samples generated in
memory (no files, no network): encode and decode JPEG and PNG, probe, refuse a
truncated file and an oversized one with typed errors, the LRU cache, the
``@cached`` decorator, the decoded-image cache, and a per-scope memory budget.
The exit status is 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import amulet_native as an

from .features import features


def _mib(n: int | None) -> str:
    return "none" if n is None else f"{n / (1 << 20):,.0f} MiB"


def report() -> dict[str, Any]:
    """Everything the plain ``python -m amulet_native`` prints, as a dict."""
    snap = an.MemoryMonitor().snapshot()
    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "version": an.__version__,
        "location": os.path.dirname(os.path.abspath(an.__file__)),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": f"{platform.system()} {platform.machine()}",
        "libc": " ".join(platform.libc_ver()).strip() or "unknown",
        "features": dict(features()),
        "cpus": {
            "available": an.available_cpus(),
            "affinity": affinity,
            "os_cpu_count": os.cpu_count(),
        },
        "memory": {
            "physical": snap.total,
            "available": snap.available,
            "cgroup_version": snap.cgroup_version,
            "cgroup_limit": snap.cgroup_limit,
            "cgroup_usage": snap.cgroup_usage,
            "effective_limit": snap.effective_limit,
            "process_limit": an.get_process_memory_limit(),
            "rss": snap.rss,
        },
    }


def _print_report(r: dict[str, Any]) -> None:
    f = r["features"]
    mem = r["memory"]
    cpus = r["cpus"]
    formats = f.get("formats", {})
    print(f"amulet_native {r['version']}  ({r['location']})")
    print(f"  Python {r['python']}, NumPy {r['numpy']}, {r['platform']}, {r['libc']}")
    libs = ", ".join(f"{k} {v}" for k, v in f.get("libraries", {}).items())
    print(f"  native libraries: {libs or '-'}")
    print("  formats: " + ", ".join(f"{k}={'yes' if ok else 'no'}" for k, ok in formats.items()))
    simd = ", ".join(f"{k}={v}" for k, v in f.get("simd", {}).items())
    print(f"  simd: {simd or 'none reported'}")
    print(
        f"  CPUs: {cpus['available']} available to this process "
        f"(CPU affinity {cpus['affinity']}, os.cpu_count() {cpus['os_cpu_count']}; "
        f"a cgroup CPU quota lowers it)"
    )
    cg = (
        f"cgroup v{mem['cgroup_version']} limit {_mib(mem['cgroup_limit'])}"
        if mem["cgroup_version"]
        else "no memory cgroup found"
    )
    print(
        f"  memory: effective limit {_mib(mem['effective_limit'])} ({cg}, physical "
        f"{_mib(mem['physical'])}, available {_mib(mem['available'])}); process limit "
        f"(set_process_memory_limit) {_mib(mem['process_limit'])}"
    )


# ---- --selftest ---------------------------------------------------------------------


def _sample(width: int = 96, height: int = 64) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """A smooth RGB gradient with a sharp square: compresses like a small photo."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1)
    img[16:32, 24:56] = (250, 20, 30)
    return np.ascontiguousarray(img.astype(np.uint8))


def _check_decode() -> str:
    rgb = _sample()
    png = an.encode_png(rgb)
    info = an.probe(png)
    assert (info.format, info.width, info.height) == ("png", 96, 64), info
    assert np.array_equal(an.decode(png), rgb), "PNG round trip changed pixels"
    jpeg = an.encode_jpeg(rgb, quality=95)
    out = an.decode(jpeg)
    assert out.shape == rgb.shape and out.dtype == np.uint8, out.shape
    err = float(np.abs(out.astype(np.int16) - rgb).mean())
    assert err < 4.0, f"JPEG round trip mean error {err:.2f}"
    small = an.decode(jpeg, max_size=(48, 32))
    assert small.shape == (32, 48, 3), small.shape
    try:
        an.decode(jpeg[: len(jpeg) // 2])
    except an.DecodeError as e:
        assert e.code.startswith("decode."), e.code
    else:
        raise AssertionError("a truncated JPEG decoded without an error")
    return f"PNG lossless, JPEG mean error {err:.2f}, truncated JPEG refused"


def _check_limits() -> str:
    png = an.encode_png(_sample())
    try:
        an.decode(png, limits=an.Limits(max_pixels=1000))
    except an.ImageTooLargeError as e:
        assert e.limit_name == "max_pixels", e.limit_name
    else:
        raise AssertionError("a 96x64 image passed max_pixels=1000")
    big = an.encode_png(np.zeros((512, 512, 3), np.uint8), compression=1)
    try:
        with an.memory_limit(max_bytes=256 << 10):
            an.decode(big)  # 768 KiB of pixels in a 256 KiB budget
    except an.MemoryLimitError:
        pass
    else:
        raise AssertionError("a 768 KiB decode fitted in a 256 KiB memory_limit")
    return "max_pixels and memory_limit refuse before decoding"


def _check_cache() -> str:
    c: an.Cache[str, int] = an.Cache(max_items=2)
    c["a"], c["b"], c["c"] = 1, 2, 3
    assert list(c) == ["b", "c"], list(c)
    calls: list[int] = []

    @an.cached(max_items=8)
    def square(n: int) -> int:
        calls.append(n)
        return n * n

    assert [square(3), square(3), square(4)] == [9, 9, 16]
    assert calls == [3, 4], calls
    info = square.cache_info()
    assert (info.hits, info.misses) == (1, 2), info
    images = an.ImageCache(max_bytes=1 << 20)
    png = an.encode_png(_sample())
    first, second = images.decode(png), images.decode(png)
    assert np.array_equal(first, second) and not second.flags.writeable
    assert images.get_stats()["hits"] == 1, images.get_stats()
    return "LRU eviction, @cached computes once, ImageCache hit is read-only"


CHECKS: dict[str, Callable[[], str]] = {
    "decode": _check_decode,
    "limits": _check_limits,
    "cache": _check_cache,
}


def selftest(out: Any = None) -> bool:
    """Runs every check, printing one line each; True when all passed."""
    out = out or sys.stdout
    ok = True
    for name, check in CHECKS.items():
        t0 = time.perf_counter()
        try:
            detail = check()
        except Exception as e:  # noqa: BLE001 - a failed check is reported, the rest still run
            ok = False
            print(f"  FAIL  {name}: {type(e).__name__}: {e}", file=out)
        else:
            ms = (time.perf_counter() - t0) * 1e3
            print(f"  ok    {name} ({ms:.0f} ms): {detail}", file=out)
    print("selftest: " + ("passed" if ok else "FAILED"), file=out)
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m amulet_native",
        description="Version, native libraries, features and limits; --selftest checks them.",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--selftest", action="store_true", help="decode, cache and limits checks; exit 1 on failure"
    )
    args = parser.parse_args(argv)
    r = report()
    if args.json:
        print(json.dumps(r, indent=2, sort_keys=True))
    else:
        _print_report(r)
    if args.selftest:
        if not args.json:
            print()
        return 0 if selftest(sys.stderr if args.json else sys.stdout) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
