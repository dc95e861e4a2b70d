"""decode_many(): the native worker pool.

Batch results must be exactly the serial results, in order; failures are typed
and confined to their slot; the pool is created once and reused (the thread
count of the process stops growing), survives fork() and interpreter shutdown
with work in flight, and leaks nothing over many batches.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import jpeg_bytes, photo, png_bytes

import amulet_native as an

REPO = Path(__file__).resolve().parent.parent


def _images() -> list[bytes]:
    out: list[bytes] = []
    for i, (h, w) in enumerate([(96, 128), (64, 64), (33, 65), (120, 80), (1, 1), (17, 9)]):
        arr = photo(h, w, 3, seed=i)
        out.append(jpeg_bytes(arr, quality=85 + i))
        out.append(png_bytes(arr, color_type=2))
    return out


IMAGES = _images()


def _run(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO,
    )


def _task_count() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.parametrize("threads", [1, 2, 3, 8, None])
@pytest.mark.parametrize(
    "options",
    [{}, {"mode": "BGR"}, {"mode": "L"}, {"mode": "RGBA"}, {"scale": 0.5}, {"max_size": (20, 20)}],
)
def test_batch_equals_serial(threads: int | None, options: dict[str, object]) -> None:
    items = IMAGES * 3
    serial = [an.decode(b, **options) for b in items]  # type: ignore[arg-type]
    batch = an.decode_many(items, threads=threads, **options)  # type: ignore[call-overload]
    assert len(batch) == len(serial)
    for i, (a, b) in enumerate(zip(batch, serial)):
        assert a.shape == b.shape and a.dtype == b.dtype, i
        assert np.array_equal(a, b), i
        assert a.flags.c_contiguous and a.flags.writeable


def test_empty_and_single() -> None:
    assert an.decode_many([]) == []
    (one,) = an.decode_many([IMAGES[0]])
    assert np.array_equal(one, an.decode(IMAGES[0]))


def test_input_kinds() -> None:
    data = IMAGES[0]
    items = [data, bytearray(data), memoryview(data), np.frombuffer(data, np.uint8), io.BytesIO(data)]
    ref = an.decode(data)
    for arr in an.decode_many(items):  # type: ignore[arg-type]
        assert np.array_equal(arr, ref)


def test_errors_return_puts_typed_exceptions_in_slots() -> None:
    good = IMAGES[0]
    items = [good, b"II*\x00" + b"\0" * 20, good[: len(good) // 2], b"", 42, good]
    out = an.decode_many(items, errors="return")  # type: ignore[call-overload]
    assert np.array_equal(out[0], an.decode(good)) and np.array_equal(out[5], out[0])
    assert isinstance(out[1], an.UnsupportedFormatError) and out[1].format == "tiff"
    assert isinstance(out[2], an.DecodeError) and out[2].code == "decode.truncated"
    assert isinstance(out[3], an.ValidationError) and out[3].code == "input.empty"
    assert isinstance(out[4], an.ValidationError) and out[4].code == "input.type"


def test_errors_raise_reports_the_first_failure_in_input_order() -> None:
    good = IMAGES[2]
    items = [good, good[:300], b"II*\x00" + b"\0" * 20, good]
    with pytest.raises(an.DecodeError) as info:
        an.decode_many(items, threads=4)
    assert info.value.code == "decode.truncated"


def test_one_hostile_file_among_valid_ones() -> None:
    valid = IMAGES * 4
    rng = np.random.default_rng(7)
    hostile = bytearray(IMAGES[0])
    for pos in rng.integers(2, len(hostile), 40):
        hostile[int(pos)] ^= 0xFF
    huge = bytearray(IMAGES[1])  # PNG: claim 100000 x 100000 in IHDR
    huge[16:24] = (100000).to_bytes(4, "big") * 2
    items: list[bytes] = valid[:10] + [bytes(hostile)] + valid[10:20] + [bytes(huge)] + valid[20:]
    out = an.decode_many(items, errors="return")
    refs = [an.decode(b) for b in valid]
    got = [x for i, x in enumerate(out) if i not in (10, 21)]
    for a, b in zip(got, refs):
        assert isinstance(a, np.ndarray) and np.array_equal(a, b)
    assert isinstance(out[10], (np.ndarray, an.AmuletError))
    assert isinstance(out[21], an.AmuletError)  # CRC or size limit: refused either way


def test_limits_apply_to_every_item() -> None:
    big = jpeg_bytes(photo(64, 64, 3))
    small = jpeg_bytes(photo(8, 8, 3))
    out = an.decode_many([small, big], errors="return", limits=an.Limits(max_pixels=100))
    assert isinstance(out[0], np.ndarray)
    assert isinstance(out[1], an.ImageTooLargeError) and out[1].limit_name == "max_pixels"


def test_tolerant_decodes_warn_per_damaged_item() -> None:
    good = IMAGES[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = an.decode_many([good, good[: len(good) - 40], good], strict=False)
    assert [type(x) for x in out] == [np.ndarray] * 3
    assert sum(issubclass(w.category, an.AmuletWarning) for w in caught) == 1


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_invalid_threads(bad: object) -> None:
    with pytest.raises(an.ValidationError) as info:
        an.decode_many(IMAGES, threads=bad)  # type: ignore[call-overload]
    assert info.value.field == "threads"


def test_invalid_errors_mode() -> None:
    with pytest.raises(an.ValidationError):
        an.decode_many(IMAGES, errors="ignore")  # type: ignore[call-overload]


def test_pool_is_created_once_and_reused() -> None:
    items = IMAGES * 2
    an.decode_many(items, threads=4)
    after_first = _task_count()
    for _ in range(30):
        an.decode_many(items, threads=4)
        an.decode_many(items, threads=2)
        an.decode_many(items)
    assert _task_count() == after_first


def test_available_cpus_respects_affinity() -> None:
    n = an.available_cpus()
    assert 1 <= n <= len(os.sched_getaffinity(0))
    result = _run(
        """
        import os, amulet_native as an
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        print(an.available_cpus())
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


def test_pool_after_fork() -> None:
    result = _run(
        """
        import os, amulet_native as an
        from tests.conftest import jpeg_bytes, photo
        items = [jpeg_bytes(photo(64, 64, 3, seed=i)) for i in range(8)]
        ref = an.decode_many(items, threads=2)
        pid = os.fork()
        if pid == 0:
            out = an.decode_many(items, threads=2)
            ok = all((a == b).all() for a, b in zip(out, ref))
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"
    assert result.stderr == ""


def test_interpreter_shutdown_with_work_in_flight() -> None:
    result = _run(
        """
        import threading, amulet_native as an
        from tests.conftest import jpeg_bytes, photo
        items = [jpeg_bytes(photo(1024, 1024, 3, seed=i)) for i in range(6)] * 4
        started = threading.Event()
        def work():
            started.set()
            while True:
                an.decode_many(items, threads=2)
        threading.Thread(target=work, daemon=True).start()
        started.wait()
        print("exiting")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "exiting"
    assert result.stderr == ""


@pytest.mark.slow
def test_no_leak_over_many_batches() -> None:
    result = _run(
        """
        import amulet_native as an
        from tests.conftest import jpeg_bytes, png_bytes, photo
        good = [jpeg_bytes(photo(48, 64, 3, seed=i)) for i in range(6)]
        good += [png_bytes(photo(40, 30, 3, seed=i), color_type=2) for i in range(6)]
        bad = [g[: len(g) // 2] for g in good] + [b"II*\\x00....", b"", b"\\xff\\xd8\\xff"]
        items = good + bad
        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096
        for _ in range(200):
            an.decode_many(items, errors="return", threads=2)
        base = rss()
        for _ in range(2000):
            an.decode_many(items, errors="return", threads=2)
            try:
                an.decode_many(items, threads=2)
            except an.AmuletError:
                pass
        print(rss() - base)
        """,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    growth = int(result.stdout.strip())
    # 2,000 x 2 batches of 27 items (15 failing): a per-item leak of even 64 bytes
    # would add > 5 MB; allocator noise stays well under 2 MB.
    assert growth < 2 * 1024 * 1024, growth
