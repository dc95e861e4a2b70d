"""Streaming input: stream_file, read_limited/aread_limited, open_mapped.

Real files, pipes, threads, asyncio and a real Starlette app; memory bounds are
measured in fresh subprocesses (VmHWM after resetting it with clear_refs).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import tracemalloc
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO_ROOT, jpeg_bytes, noise, photo, png_bytes, switch_often

import amulet_native as an
from amulet_native import _core

MIB = 1 << 20


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def random_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A non-sparse 5 MiB + 123 byte file of random content."""
    data = random_bytes(5 * MIB + 123)
    path = tmp_path_factory.mktemp("stream") / "data.bin"
    path.write_bytes(data)
    return path, data


def test_exports() -> None:
    for name in ("stream_file", "read_limited", "aread_limited", "open_mapped",
                 "PayloadTooLargeError", "LimitedRead", "MappedFile", "ChunkStream"):
        assert name in an.__all__
    assert an.MappedFile is _core.MappedFile


# ---- stream_file: content ------------------------------------------------------


@pytest.mark.parametrize("threshold", [None, 0], ids=["read", "mmap"])
@pytest.mark.parametrize("chunk_size", [MIB, 65537, 1])
def test_stream_file_content(data_file: tuple[Path, bytes], threshold: int | None,
                             chunk_size: int) -> None:
    path, data = data_file
    if chunk_size == 1:
        path = path.with_name("small.bin")
        data = data[:5000]
        path.write_bytes(data)
    h = hashlib.blake2b()
    sizes = []
    with an.stream_file(path, chunk_size, mmap_threshold=threshold) as chunks:
        assert chunks.mapped is (threshold is not None)
        for chunk in chunks:
            assert isinstance(chunk, memoryview)
            assert chunk.readonly is (threshold is not None)
            sizes.append(chunk.nbytes)
            h.update(chunk)
    assert h.hexdigest() == hashlib.blake2b(data).hexdigest()
    assert sum(sizes) == len(data)
    assert all(s == chunk_size for s in sizes[:-1]) and 0 < sizes[-1] <= chunk_size


@pytest.mark.parametrize("threshold", [None, 0], ids=["read", "mmap"])
def test_stream_file_object_from_its_position(data_file: tuple[Path, bytes],
                                              threshold: int | None) -> None:
    path, data = data_file
    for buffering in (0, -1):
        with open(path, "rb", buffering=buffering) as f:
            f.read(1000)
            out = b"".join(bytes(c) for c in an.stream_file(f, MIB, mmap_threshold=threshold))
            assert out == data[1000:]
            assert f.tell() == len(data)  # left at the end either way
            assert not f.closed  # the caller's file stays open


def test_stream_bytesio_and_read_only_objects(data_file: tuple[Path, bytes]) -> None:
    _, data = data_file
    # BytesIO has no descriptor: the read path, even with threshold 0
    s = an.stream_file(io.BytesIO(data), MIB, mmap_threshold=0)
    assert not s.mapped
    assert b"".join(bytes(c) for c in s) == data

    class ReadOnly:
        def __init__(self) -> None:
            self.f = io.BytesIO(data)

        def read(self, n: int) -> bytes:
            return self.f.read(min(n, 7777))  # short reads too

    sizes = [c.nbytes for c in an.stream_file(ReadOnly(), 100_000)]  # type: ignore[arg-type]
    assert sum(sizes) == len(data) and set(sizes[:-1]) == {100_000}


def test_stream_short_reads_fill_chunks(data_file: tuple[Path, bytes]) -> None:
    _, data = data_file

    class Trickle(io.RawIOBase):
        def __init__(self) -> None:
            self.pos = 0

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            n = min(len(b), 4096 - 1, len(data) - self.pos)
            b[:n] = data[self.pos:self.pos + n]
            self.pos += n
            return n

    chunks = [bytes(c) for c in an.stream_file(Trickle(), MIB)]
    assert b"".join(chunks) == data
    assert [len(c) for c in chunks[:-1]] == [MIB] * 5


def test_stream_nonblocking_pipe() -> None:
    data = random_bytes(3 * MIB + 5, seed=1)
    r, w = os.pipe()
    os.set_blocking(r, False)

    def writer() -> None:
        with os.fdopen(w, "wb") as f:
            for i in range(0, len(data), 100_000):
                f.write(data[i:i + 100_000])
                f.flush()

    t = threading.Thread(target=writer)
    t.start()
    with os.fdopen(r, "rb", buffering=0) as f:
        out = b"".join(bytes(c) for c in an.stream_file(f, MIB))
    t.join()
    assert out == data


# ---- stream_file: chunk lifetime ------------------------------------------------


@pytest.mark.parametrize("threshold", [None, 0], ids=["read", "mmap"])
def test_stale_chunk_raises(data_file: tuple[Path, bytes], threshold: int | None) -> None:
    path, data = data_file
    with an.stream_file(path, MIB, mmap_threshold=threshold) as s:
        first = next(s)
        assert first[:4] == data[:4]
        second = next(s)
        with pytest.raises(ValueError):
            bytes(first)
        with pytest.raises(ValueError):
            first[0]
        assert bytes(second[:10]) == data[MIB:MIB + 10]
    with pytest.raises(ValueError):
        bytes(second)  # released by close() too


@pytest.mark.parametrize("threshold", [None, 0], ids=["read", "mmap"])
def test_kept_views_are_not_overwritten(data_file: tuple[Path, bytes],
                                        threshold: int | None) -> None:
    """A consumer that keeps an export (numpy array, slice) of a chunk still sees
    that chunk's bytes afterwards: the reader moves to a fresh buffer."""
    path, data = data_file
    kept_arrays = []
    kept_slices = []
    for i, chunk in enumerate(an.stream_file(path, MIB, mmap_threshold=threshold)):
        if i % 2 == 0:
            kept_arrays.append((i, np.frombuffer(chunk, np.uint8)))
        else:
            kept_slices.append((i, chunk[10:20]))
    for i, arr in kept_arrays:
        assert arr.tobytes() == data[i * MIB:(i + 1) * MIB]
    for i, sl in kept_slices:
        assert bytes(sl) == data[i * MIB + 10:i * MIB + 20]


def test_mapped_chunks_are_read_only(data_file: tuple[Path, bytes]) -> None:
    path, _ = data_file
    with an.stream_file(path, MIB, mmap_threshold=0) as s:
        chunk = next(s)
        with pytest.raises(TypeError):
            chunk[0] = 1
        arr = np.frombuffer(chunk, np.uint8)
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr.setflags(write=True)
        del arr


# ---- stream_file: resources -----------------------------------------------------


@pytest.mark.parametrize("threshold", [None, 0], ids=["read", "mmap"])
def test_no_fd_leak(data_file: tuple[Path, bytes], threshold: int | None) -> None:
    path, _ = data_file
    gc.collect()
    before = fd_count()
    for _ in range(20):
        s = an.stream_file(path, MIB, mmap_threshold=threshold)
        next(s)
        del s  # abandoned mid-way
        s = an.stream_file(path, MIB, mmap_threshold=threshold)
        del s  # never started
        with an.stream_file(path, MIB, mmap_threshold=threshold) as s:
            next(s)
        s = an.stream_file(path, MIB, mmap_threshold=threshold)
        for _chunk in s:
            break
        s.close()
        s.close()  # idempotent
        for _chunk in an.stream_file(path, MIB, mmap_threshold=threshold):
            pass
    gc.collect()
    assert fd_count() == before


def test_mapped_path_keeps_no_descriptor(data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    before = fd_count()
    s = an.stream_file(path, MIB, mmap_threshold=0)
    assert s.mapped and fd_count() == before
    assert bytes(next(s)[:3]) == data[:3]
    s.close()


def test_stream_file_refusals(tmp_path: Path, data_file: tuple[Path, bytes]) -> None:
    path, _ = data_file
    for bad in (0, -1, True, 1.5, "1"):
        with pytest.raises(an.ValidationError) as ei:
            an.stream_file(path, bad)  # type: ignore[arg-type]
        assert ei.value.code == "value.chunk_size"
    with pytest.raises(an.ValidationError) as ei:
        an.stream_file(path, mmap_threshold=-1)
    assert ei.value.code == "value.mmap_threshold"
    for bad_source in (b"bytes", bytearray(3), object(), 42):
        with pytest.raises(an.ValidationError) as ei:
            an.stream_file(bad_source)  # type: ignore[arg-type]
        assert ei.value.code == "input.type"
    with open(path, encoding="latin-1") as text, pytest.raises(an.ValidationError) as ei:
        an.stream_file(text)  # type: ignore[arg-type]
    assert ei.value.code == "input.text_mode"

    class StrReader:
        def read(self, n: int) -> str:
            return "text"

    with pytest.raises(an.ValidationError) as ei:
        list(an.stream_file(StrReader()))  # type: ignore[arg-type]
    assert ei.value.code == "input.text_mode"
    with pytest.raises(FileNotFoundError):
        an.stream_file(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert list(an.stream_file(empty, mmap_threshold=0)) == []


RSS_SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import amulet_native as an

    path, threshold, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

    def status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024

    for _ in an.stream_file(sys.executable, chunk):  # warm up code paths
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    base = status("VmRSS")
    total = 0
    with an.stream_file(path, chunk, mmap_threshold=threshold) as s:
        for c in s:
            total += c.nbytes
            int(np.frombuffer(c, np.uint8)[::4096].sum())  # touch every page
    print(json.dumps({"mapped": s.mapped, "total": total,
                      "growth": status("VmHWM") - base}))
''')


@pytest.mark.slow
@pytest.mark.parametrize("threshold", [2 << 30, 0], ids=["read", "mmap"])
def test_sparse_gib_in_bounded_memory(tmp_path: Path, threshold: int) -> None:
    """1 GiB streamed; peak RSS growth < 2 x chunk + 16 MiB.  On the mmap path
    the pages read are file-backed and count in RSS: the stream drops them
    (MADV_DONTNEED) behind the reader, which is what keeps the peak bounded."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("/proc/self/clear_refs is not writable here")
    path = tmp_path / "sparse.bin"
    with open(path, "wb") as f:
        f.truncate(1 << 30)
    chunk = MIB
    out = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(path), str(threshold), str(chunk)],
        capture_output=True, text=True, check=True, cwd=REPO_ROOT,
    )
    result = json.loads(out.stdout)
    assert result["total"] == 1 << 30
    assert result["mapped"] is (threshold == 0)
    assert result["growth"] < 2 * chunk + 16 * MIB, result


# ---- read_limited: limits -------------------------------------------------------


class CountingReader(io.RawIOBase):
    """A non-seekable binary source that counts every byte it hands out."""

    def __init__(self, data: bytes, step: int = 1 << 30) -> None:
        self.data = data
        self.given = 0
        self.step = step

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self.step, len(self.data) - self.given)
        b[:n] = self.data[self.given:self.given + n]
        self.given += n
        return n


class CountingReadOnly:
    """Only read(n); counts bytes handed out."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.given = 0

    def read(self, n: int = -1) -> bytes:
        n = len(self.data) - self.given if n < 0 else n
        out = self.data[self.given:self.given + n]
        self.given += len(out)
        return out


@pytest.mark.parametrize("step", [1 << 30, 333])
def test_read_limited_stops_at_limit_plus_one(step: int) -> None:
    data = random_bytes(300_000)
    for limit in (1, 1000, 65_536, 200_000):
        src = CountingReader(data, step)
        with pytest.raises(an.PayloadTooLargeError) as ei:
            an.read_limited(src, limit)
        e = ei.value
        assert src.given == limit + 1
        assert (e.code, e.limit, e.received, e.http_status) == (
            "input.too_large", limit, limit + 1, 413)
        assert isinstance(e, an.ValidationError) and isinstance(e, ValueError)
    ro = CountingReadOnly(data)
    with pytest.raises(an.PayloadTooLargeError):
        an.read_limited(ro, 100_000)
    assert ro.given == 100_001


def test_read_limited_exact_limit_and_empty() -> None:
    data = random_bytes(100_000)
    for make in (lambda d: CountingReader(d), lambda d: CountingReader(d, 999),
                 CountingReadOnly, io.BytesIO, lambda d: iter([d[:10], d[10:]]), lambda d: d):
        r = an.read_limited(make(data), len(data))
        assert bytes(r.data) == data and r.size == len(data)
        assert r.digest == hashlib.blake2b(data).hexdigest() and r.algorithm == "blake2b"
        e = an.read_limited(make(b""), 10)
        assert bytes(e.data) == b"" and e.size == 0
        assert e.digest == hashlib.blake2b(b"").hexdigest()


def test_read_limited_real_files(tmp_path: Path) -> None:
    data = random_bytes(3 * MIB + 1)
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    for buffering in (0, -1):
        with open(path, "rb", buffering=buffering) as f:
            r = an.read_limited(f, len(data))
            assert isinstance(r.data, bytearray) and r.data == data
            assert r.digest == hashlib.blake2b(data).hexdigest()
        with open(path, "rb", buffering=buffering) as f:
            f.seek(100)
            assert an.read_limited(f, len(data)).data == data[100:]
        # known size over the limit: refused before reading anything
        with open(path, "rb", buffering=buffering) as f:
            with pytest.raises(an.PayloadTooLargeError) as ei:
                an.read_limited(f, MIB)
            assert ei.value.received == 0 and ei.value.context["declared"] == len(data)
            assert f.tell() == 0


def test_read_limited_size_hint() -> None:
    data = random_bytes(50_000)
    src = CountingReader(data)
    with pytest.raises(an.PayloadTooLargeError) as ei:
        an.read_limited(src, 1000, size_hint=50_000)
    assert src.given == 0 and ei.value.received == 0
    # a hint that is too small (or a lie) only sizes the buffer
    for hint in (0, 10, 49_999, 50_000, 60_000):
        r = an.read_limited(CountingReader(data), 60_000, size_hint=hint)
        assert r.data == data
    src = CountingReader(data)
    with pytest.raises(an.PayloadTooLargeError):
        an.read_limited(src, 20_000, size_hint=100)  # lies: still stops at limit + 1
    assert src.given == 20_001


def test_read_limited_buffers_zero_copy() -> None:
    data = random_bytes(10_000)
    assert an.read_limited(data, 10_000).data is data
    ba = bytearray(data)
    r = an.read_limited(ba, 10_000)
    assert r.data is ba
    ba.append(1)  # still resizable: no export left behind
    arr = np.frombuffer(bytearray(data), np.uint8)
    r = an.read_limited(arr, 10_000)
    assert np.shares_memory(np.frombuffer(r.data, np.uint8), arr)
    assert r.digest == hashlib.blake2b(data).hexdigest()
    with pytest.raises(an.PayloadTooLargeError) as ei:
        an.read_limited(data, 9_999)
    assert ei.value.received == 10_000
    wide = np.arange(10, dtype=np.uint16)
    assert an.read_limited(wide, 20).data.tobytes() == wide.tobytes()  # type: ignore[union-attr]


def test_read_limited_chunk_iterators() -> None:
    data = random_bytes(200_000)
    parts: list[Any] = [data[:1], bytearray(data[1:5000]), memoryview(data)[5000:70_000],
                        b"", np.frombuffer(data[70_000:], np.uint8).data]
    r = an.read_limited(iter(parts), len(data))
    assert r.data == data and r.digest == hashlib.blake2b(data).hexdigest()
    r = an.read_limited(parts, len(data), digest="sha256")
    assert r.digest == hashlib.sha256(data).hexdigest() and r.algorithm == "sha256"
    r = an.read_limited(parts, len(data), digest=None)
    assert r.digest is None and r.algorithm is None and r.data == data

    pulled = []

    def gen() -> Iterator[bytes]:
        for i in range(100):
            pulled.append(i)
            yield data[:1000]

    with pytest.raises(an.PayloadTooLargeError) as ei:
        an.read_limited(gen(), 5500)
    assert len(pulled) == 6 and ei.value.received == 6000


def test_read_limited_source_error_propagates() -> None:
    closed = []

    def failing() -> Iterator[bytes]:
        try:
            yield b"x" * 1000
            yield b"y" * 1000
            raise OSError("connection reset")
        finally:
            closed.append(True)

    with pytest.raises(OSError, match="connection reset"):
        an.read_limited(failing(), 10_000)
    assert closed == [True]

    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            self.calls += 1
            if self.calls > 3:
                raise OSError("disk on fire")
            b[:1000] = bytes(1000)
            return 1000

    tracemalloc.start()
    try:
        for _ in range(5):
            with pytest.raises(OSError, match="disk on fire"):
                an.read_limited(Broken(), 50 * MIB, size_hint=40 * MIB)
        gc.collect()
        current, _peak = tracemalloc.get_traced_memory()
        base = current
        for _ in range(20):
            with pytest.raises(OSError, match="disk on fire"):
                an.read_limited(Broken(), 50 * MIB, size_hint=40 * MIB)
        gc.collect()
        current, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current - base < MIB  # 20 x 40 MiB buffers were not kept


def test_read_limited_refusals(tmp_path: Path) -> None:
    for bad in (0, -5, True, 1.5, "10", None):
        with pytest.raises(an.ValidationError) as ei:
            an.read_limited(b"x", bad)  # type: ignore[arg-type]
        assert ei.value.code == "value.max_bytes"
    for digest in ("nope", "shake_128", 5):
        with pytest.raises(an.ValidationError) as ei:
            an.read_limited(b"x", 10, digest=digest)  # type: ignore[arg-type]
        assert ei.value.code == "value.digest"
    with pytest.raises(an.ValidationError) as ei:
        an.read_limited(b"x", 10, size_hint=-1)
    assert ei.value.code == "value.size_hint"
    for source in ("a/path", tmp_path, object(), 12, [b"ok", "str chunk"]):
        with pytest.raises(an.ValidationError) as ei:
            an.read_limited(source, 10)
        assert ei.value.code == "input.type", source

    async def agen() -> AsyncGenerator[bytes, None]:
        yield b"x"

    gen = agen()
    with pytest.raises(an.ValidationError) as ei:
        an.read_limited(gen, 10)
    assert ei.value.code == "input.type"
    asyncio.run(gen.aclose())
    path = tmp_path / "t.txt"
    path.write_text("hello")
    with open(path) as text, pytest.raises(an.ValidationError) as ei:
        an.read_limited(text, 10)
    assert ei.value.code == "input.text_mode"


def test_read_limited_nonblocking_pipe() -> None:
    data = random_bytes(2 * MIB + 3, seed=2)
    r, w = os.pipe()
    os.set_blocking(r, False)

    def writer() -> None:
        with os.fdopen(w, "wb") as f:
            for i in range(0, len(data), 65_536):
                f.write(data[i:i + 65_536])

    t = threading.Thread(target=writer)
    t.start()
    with os.fdopen(r, "rb", buffering=0) as f:
        res = an.read_limited(f, 4 * MIB)
    t.join()
    assert res.data == data


# ---- aread_limited --------------------------------------------------------------


def test_aread_limited_async_iterators() -> None:
    data = random_bytes(300_000)
    pulled: list[int] = []
    finalized: list[bool] = []

    async def body(chunk: int = 10_000) -> AsyncIterator[bytes]:
        try:
            for i in range(0, len(data), chunk):
                pulled.append(i)
                await asyncio.sleep(0)
                yield data[i:i + chunk]
        finally:
            finalized.append(True)

    async def main() -> None:
        r = await an.aread_limited(body(), len(data))
        assert r.data == data and r.digest == hashlib.blake2b(data).hexdigest()
        pulled.clear()
        with pytest.raises(an.PayloadTooLargeError) as ei:
            await an.aread_limited(body(), 25_000)
        assert len(pulled) == 3 and ei.value.received == 30_000
        assert finalized == [True, True]  # the cut-short generator was closed

        async def failing() -> AsyncIterator[bytes]:
            yield b"abc"
            raise ConnectionError("client went away")

        with pytest.raises(ConnectionError):
            await an.aread_limited(failing(), 100)

        class AsyncReader:
            def __init__(self) -> None:
                self.f = io.BytesIO(data)
                self.given = 0

            async def read(self, n: int) -> bytes:
                out = self.f.read(n)
                self.given += len(out)
                return out

        ar = AsyncReader()
        with pytest.raises(an.PayloadTooLargeError):
            await an.aread_limited(ar, 123_456)
        assert ar.given == 123_457
        assert (await an.aread_limited(AsyncReader(), len(data))).data == data
        # sync sources are accepted too
        assert (await an.aread_limited(data, len(data))).data is data
        assert (await an.aread_limited(io.BytesIO(data), len(data))).data == data
        assert (await an.aread_limited([data], len(data))).data == data

    asyncio.run(main())


def test_aread_limited_disk_file_in_thread(tmp_path: Path) -> None:
    data = random_bytes(MIB + 7)
    path = tmp_path / "f.bin"
    path.write_bytes(data)

    async def main() -> None:
        with open(path, "rb") as f:  # noqa: ASYNC230 (the point: a sync file in async code)
            r = await an.aread_limited(f, len(data))
        assert r.data == data
        with open(path, "rb") as f, pytest.raises(an.PayloadTooLargeError):  # noqa: ASYNC230
            await an.aread_limited(f, MIB)
        with pytest.raises(an.ValidationError):
            await an.aread_limited(b"x", 0)

    asyncio.run(main())


# ---- Starlette ------------------------------------------------------------------


def test_upload_file_sync_and_async() -> None:
    from starlette.datastructures import UploadFile

    data = random_bytes(3 * MIB)

    def upload() -> UploadFile:
        spool = tempfile.SpooledTemporaryFile(max_size=MIB)  # noqa: SIM115 (UploadFile owns it)
        spool.write(data)
        spool.seek(0)
        return UploadFile(file=spool,  # type: ignore[arg-type]
                          size=len(data), filename="photo.jpg")

    u = upload()
    r = an.read_limited(u, 4 * MIB)
    assert r.data == data and r.digest == hashlib.blake2b(data).hexdigest()
    u.file.close()
    u = upload()
    with pytest.raises(an.PayloadTooLargeError) as ei:
        an.read_limited(u, MIB)
    assert ei.value.received == 0  # the declared size already says too much
    u.file.close()

    async def main() -> None:
        u = upload()
        r = await an.aread_limited(u, len(data))
        assert r.data == data
        await u.close()
        u = upload()
        u.size = None  # the spooled file's own size still refuses it unread
        with pytest.raises(an.PayloadTooLargeError) as ei:
            await an.aread_limited(u, MIB)
        assert ei.value.received == 0 and u.file.tell() == 0
        await u.close()

    asyncio.run(main())


def test_starlette_app_413() -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    with warnings.catch_warnings():  # recent Starlette suggests httpx2 over httpx
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    limit = 100_000

    async def raw(request: Request) -> JSONResponse:
        body = await an.aread_limited(request, limit)
        return JSONResponse({"size": body.size, "digest": body.digest})

    async def form(request: Request) -> JSONResponse:
        async with request.form() as f:
            upload = f["file"]
            body = await an.aread_limited(upload, limit)
            rgb = an.decode(body.data)
        return JSONResponse({"size": body.size, "shape": list(rgb.shape)})

    async def too_large(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, an.PayloadTooLargeError)
        return JSONResponse({"code": exc.code, "limit": exc.limit}, status_code=exc.http_status)

    app = Starlette(
        routes=[Route("/raw", raw, methods=["POST"]), Route("/form", form, methods=["POST"])],
        exception_handlers={an.PayloadTooLargeError: too_large},
    )
    ok = random_bytes(limit)
    jpeg = jpeg_bytes(photo(64, 80))
    with TestClient(app) as client:
        resp = client.post("/raw", content=ok)
        assert resp.status_code == 200
        assert resp.json() == {"size": limit, "digest": hashlib.blake2b(ok).hexdigest()}
        resp = client.post("/raw", content=ok + b"!")
        assert resp.status_code == 413
        assert resp.json() == {"code": "input.too_large", "limit": limit}

        def chunks() -> Iterator[bytes]:  # chunked transfer: no Content-Length
            for _ in range(50):
                yield ok[:10_000]

        resp = client.post("/raw", content=chunks())
        assert resp.status_code == 413
        resp = client.post("/form", files={"file": ("p.jpg", jpeg, "image/jpeg")})
        assert resp.status_code == 200 and resp.json() == {"size": len(jpeg),
                                                           "shape": [64, 80, 3]}
        resp = client.post("/form", files={"file": ("p.bin", ok * 2, "image/jpeg")})
        assert resp.status_code == 413


# ---- open_mapped ----------------------------------------------------------------


def test_open_mapped_decode_and_probe(tmp_path: Path) -> None:
    cases = {"p.jpg": jpeg_bytes(photo(120, 160)), "p.png": png_bytes(noise((50, 70, 3)), 2)}
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with an.open_mapped(path) as m:
            assert isinstance(m, an.MappedFile)
            assert len(m) == m.size == len(data) and bytes(m) == data
            assert an.probe(m) == an.probe(data)
            np.testing.assert_array_equal(an.decode(m), an.decode(data))
            np.testing.assert_array_equal(an.decode(m, "L"), an.decode(data, "L"))
            assert an.read_limited(m, len(data)).digest == hashlib.blake2b(data).hexdigest()
        assert m.closed
    with an.open_mapped(str(tmp_path / "p.jpg")) as m:
        assert an.probe(m).format == "jpeg"


def test_open_mapped_zero_copy_and_read_only(tmp_path: Path) -> None:
    data = random_bytes(3 * 4096 + 5)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    m = an.open_mapped(path)
    a = np.frombuffer(m, np.uint8)  # type: ignore[call-overload]
    b = np.frombuffer(m, np.uint8)  # type: ignore[call-overload]
    mv = memoryview(m)
    # two exports see the same memory: the map itself, not copies
    assert a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    assert np.shares_memory(a, b) and a.tobytes() == data
    assert m.exports == 3
    assert mv.readonly and not a.flags.writeable
    with pytest.raises(TypeError):
        mv[0] = 1
    with pytest.raises(ValueError):
        a[0] = 1
    with pytest.raises(ValueError):
        a.setflags(write=True)
    with pytest.raises(TypeError):  # a writable export is refused
        io.BytesIO(b"abc").readinto(m)
    # close() with live views: they stay valid until released, new ones are refused
    m.close()
    assert m.closed and a.tobytes() == data and bytes(mv[:4]) == data[:4]
    for use in (lambda: memoryview(m), lambda: len(m), lambda: an.decode(m),
                lambda: an.probe(m), lambda: m.__enter__(),
                lambda: m.advise(_core.ADVISE_WILLNEED, 0, 10)):
        with pytest.raises(an.ValidationError) as ei:
            use()
        assert ei.value.code == "input.closed"
    del a, b
    mv.release()
    assert m.exports == 0
    m.close()  # idempotent
    assert "closed" in repr(m) and m.size == len(data)


def test_open_mapped_advise(tmp_path: Path) -> None:
    data = random_bytes(10 * 4096 + 1)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    with an.open_mapped(path) as m:
        for advice in (_core.ADVISE_SEQUENTIAL, _core.ADVISE_RANDOM, _core.ADVISE_WILLNEED,
                       _core.ADVISE_DONTNEED, _core.ADVISE_NORMAL):
            m.advise(advice, 4097, 10**9)
        assert bytes(m) == data  # DONTNEED loses nothing on a file map
        for bad in ((99, 0, 1), (-1, 0, 1), (0, -1, 1), (0, 0, -1), (0, len(data) + 1, 1)):
            with pytest.raises(an.ValidationError) as ei:
                m.advise(*bad)
            assert ei.value.code == "value.invalid"


def test_open_mapped_refusals(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(an.ValidationError) as ei:
        an.open_mapped(empty)
    assert ei.value.code == "input.empty"
    with pytest.raises(an.ValidationError) as ei:
        an.open_mapped(tmp_path)  # a directory
    assert ei.value.code == "input.type"
    with pytest.raises(FileNotFoundError):
        an.open_mapped(tmp_path / "missing")
    with pytest.raises(an.ValidationError) as ei:
        an.open_mapped(3)  # type: ignore[arg-type]
    assert ei.value.code == "input.type"
    r, w = os.pipe()
    try:
        with pytest.raises(an.ValidationError) as ei:
            an.MappedFile(r)
        assert ei.value.code == "input.type"
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(OSError) as oi:
        an.MappedFile(10**6)
    assert oi.value.errno == 9  # EBADF
    before = fd_count()
    for _ in range(10):
        with pytest.raises(an.ValidationError):
            an.open_mapped(empty)
        m = an.open_mapped(__file__)
        m.close()
    assert fd_count() == before


def test_close_while_decoding_in_threads(tmp_path: Path) -> None:
    """close() from another thread never unmaps pages a decode is reading."""
    jpeg = jpeg_bytes(photo(300, 400))
    path = tmp_path / "p.jpg"
    path.write_bytes(jpeg)
    expected = an.decode(jpeg)
    with switch_often():
        for _ in range(30):
            m = an.open_mapped(path)

            def work(m: an.MappedFile = m) -> str:
                try:
                    out = an.decode(m)
                except an.ValidationError as e:
                    return e.code
                assert np.array_equal(out, expected)
                return "ok"

            with ThreadPoolExecutor(4) as pool:
                futures = [pool.submit(work) for _ in range(4)]
                m.close()
                results = {f.result() for f in futures}
            assert results <= {"ok", "input.closed"}
            assert m.exports == 0


ZERO_COPY_SCRIPT = textwrap.dedent('''
    import json, sys
    import amulet_native as an

    path, jpeg_size = sys.argv[1], int(sys.argv[2])

    def status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024

    def peak_growth(fn):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = status("VmRSS")
        out = fn()
        return status("VmHWM") - base, out

    limits = an.Limits(max_bytes=0)
    with open(path, "rb") as f:
        an.decode(f.read(jpeg_size))  # warm up libjpeg and the allocator
    with an.open_mapped(path) as m:
        decode_growth, arr = peak_growth(lambda: an.decode(m, limits=limits))
        nbytes = arr.nbytes
        del arr
        copy_growth, _ = peak_growth(lambda: len(bytes(m)))
    print(json.dumps({"file": m.size, "out": nbytes, "decode": decode_growth,
                      "copy": copy_growth}))
''')


def test_decode_mapped_large_file_without_copy(tmp_path: Path) -> None:
    """A 100 MB+ mapped file (a JPEG followed by 110 MB of trailing data, which
    the decoder never reads) decodes with an RSS rise of about the output, not
    the file size; copying the map (bytes(m)) is shown to be measurable."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("/proc/self/clear_refs is not writable here")
    jpeg = jpeg_bytes(noise((1000, 1500, 3)), quality=90)
    path = tmp_path / "big.jpg"
    with open(path, "wb") as f:
        f.write(jpeg)
        f.truncate(len(jpeg) + 110 * MIB)
    out = subprocess.run(
        [sys.executable, "-c", ZERO_COPY_SCRIPT, str(path), str(len(jpeg))],
        capture_output=True, text=True, check=True, cwd=REPO_ROOT,
    )
    r = json.loads(out.stdout)
    assert r["file"] > 100 * MIB
    assert r["decode"] < r["out"] + len(jpeg) + 16 * MIB, r
    assert r["copy"] > r["file"] * 0.9, r  # the measurement does see a copy


def test_resize_bytearray_helper() -> None:
    """The core helper read_limited grows its buffer with (no zero fill)."""
    buf = bytearray(b"abc")
    _core.resize_bytearray(buf, 10 * MIB)
    assert len(buf) == 10 * MIB and buf[:3] == b"abc"
    _core.resize_bytearray(buf, 2)
    assert buf == b"ab"
    view = memoryview(buf)
    with pytest.raises(BufferError):
        _core.resize_bytearray(buf, 5)
    view.release()
    with pytest.raises(TypeError):
        _core.resize_bytearray(b"ab", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        _core.resize_bytearray(buf, -1)


# ---- review: misbehaving sources ------------------------------------------------


class _CountingRaw(io.RawIOBase):
    """A raw stream whose readinto() fills one byte and reports ``report(len)``."""

    def __init__(self, report: Any) -> None:
        self.report = report
        self.calls = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> Any:
        self.calls += 1
        if self.calls > 3:
            return 0
        b[:1] = b"x"
        return self.report(len(b))


@pytest.mark.parametrize(
    "report",
    [lambda n: n + 100, lambda n: -5, lambda n: "3", lambda n: 2.0, lambda n: True],
    ids=["more-than-asked", "negative", "str", "float", "bool"],
)
def test_readinto_reporting_an_impossible_count_is_refused(report: Any) -> None:
    # Before: a count past the buffer silently dropped bytes, a negative one hung
    # the reader forever, a str gave a bare TypeError from deep inside.
    with pytest.raises(an.ValidationError) as e:
        list(an.stream_file(_CountingRaw(report), 10))
    assert e.value.code == "input.read"
    with pytest.raises(an.ValidationError) as e:
        an.read_limited(_CountingRaw(report), 100)
    assert e.value.code == "input.read"

    async def main() -> None:
        await an.aread_limited(_CountingRaw(report), 100)

    with pytest.raises(an.ValidationError) as e:
        asyncio.run(main())
    assert e.value.code == "input.read"


def test_closed_file_objects_are_refused_up_front(tmp_path: Path) -> None:
    p = tmp_path / "data.bin"
    p.write_bytes(b"abc" * 100)
    for f in (open(p, "rb"), open(p, "rb", buffering=0), io.BytesIO(b"abc")):  # noqa: SIM115
        f.close()
        with pytest.raises(an.ValidationError) as e:
            an.stream_file(f)  # at once, not at the first next()
        assert e.value.code == "input.closed"
        with pytest.raises(an.ValidationError) as e:
            an.read_limited(f, 1000)
        assert e.value.code == "input.closed"
        with pytest.raises(an.ValidationError) as e:
            asyncio.run(an.aread_limited(f, 1000))
        assert e.value.code == "input.closed"
