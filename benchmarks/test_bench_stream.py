"""Streaming input: stream_file throughput, read_limited, and the peak memory
of reading + decoding a large upload.

* stream_file over a 256 MiB file already in the page cache, 1 MiB chunks, on
  the read path (``mmap_threshold=None``: readinto into one reused buffer) and
  the mmap path (``mmap_threshold=0``: views of a map, pages dropped behind),
  against a plain ``f.read(chunk)`` loop, ``readinto`` by hand and (mmap
  group) ``mmap.mmap`` + memoryview slices by hand.  Every peer hands each
  chunk to the same consumer, which touches one byte per 4 KiB page (so mapped
  pages are really faulted in; reads have already touched theirs).
* read_limited of a 20 MB upload (an open file in the page cache, as a
  spooled upload) with its blake2b digest, against ``f.read(max + 1)`` + a
  length check + ``hashlib.blake2b``.
* Peak RSS of read_limited + decode vs Pillow on a ~20 MB JPEG upload, in fresh
  processes (``_stream_memory.py``).
"""

from __future__ import annotations

import hashlib
import mmap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _inputs import encode_jpeg, load_photos, mosaic
from _stream_memory import MAX_BYTES, STREAM_MEMORY_OPS
from conftest import measure, measure_memory

import amulet_native as an

HERE = Path(__file__).resolve().parent
MIB = 1 << 20
FILE_BYTES = 256 * MIB
CHUNK = MIB
UPLOAD_BYTES = 20_000_000

STREAM_READ = "stream_file 256 MiB page cache, 1 MiB chunks (read path)"
STREAM_MMAP = "stream_file 256 MiB page cache, 1 MiB chunks (mmap path)"
STREAM_LIMITED = "read_limited 20 MB upload + blake2b"
STREAM_MEMORY = "peak memory: 20 MB JPEG upload -> RGB array"


@pytest.fixture(scope="session")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """256 MiB of seeded random bytes, read once so it sits in the page cache;
    deleted at the end of the session."""
    path = tmp_path_factory.mktemp("stream") / "big.bin"
    block = np.random.default_rng(7).integers(0, 256, 4 * MIB, dtype=np.uint8).tobytes()
    with open(path, "wb") as f:
        f.writelines(block for _ in range(FILE_BYTES // len(block)))
    with open(path, "rb") as f:
        while f.read(16 * MIB):
            pass
    yield path
    path.unlink()


def touch(chunk: Any) -> int:
    """The consumer: one byte of every 4 KiB page."""
    return int(np.frombuffer(chunk, np.uint8)[::4096].sum())


def amulet_stream(threshold: int | None) -> Callable[[Path], int]:
    def run(path: Path) -> int:
        total = 0
        with an.stream_file(path, CHUNK, mmap_threshold=threshold) as chunks:
            for chunk in chunks:
                touch(chunk)
                total += chunk.nbytes
        return total

    return run


def plain_read(path: Path) -> int:
    total = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            touch(chunk)
            total += len(chunk)
    return total


def readinto_by_hand(path: Path) -> int:
    total = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            touch(view[:n])
            total += n
    return total


def mmap_by_hand(path: Path) -> int:
    total = 0
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        view = memoryview(m)
        for pos in range(0, len(m), CHUNK):
            chunk = view[pos:pos + CHUNK]
            touch(chunk)
            total += chunk.nbytes
            chunk.release()
        view.release()
    return total


READ_PEERS: dict[str, Callable[[Path], int]] = {
    "amulet_native": amulet_stream(None),
    "f.read(chunk) loop": plain_read,
    "f.readinto(buf) by hand": readinto_by_hand,
}
MMAP_PEERS: dict[str, Callable[[Path], int]] = {
    "amulet_native": amulet_stream(0),
    "f.read(chunk) loop": plain_read,
    "f.readinto(buf) by hand": readinto_by_hand,
    "mmap.mmap + memoryview slices": mmap_by_hand,
}


@pytest.mark.parametrize("peer", list(READ_PEERS))
def test_stream_read_path(benchmark: Any, big_file: Path, peer: str) -> None:
    ref = READ_PEERS["amulet_native"] if peer != "amulet_native" else None
    total = measure(benchmark, READ_PEERS[peer], big_file, group=STREAM_READ, peer=peer,
                    kind="stream", ref=ref, min_rounds=10)
    benchmark.extra_info["bytes"] = FILE_BYTES
    assert total == FILE_BYTES


@pytest.mark.parametrize("peer", list(MMAP_PEERS))
def test_stream_mmap_path(benchmark: Any, big_file: Path, peer: str) -> None:
    ref = MMAP_PEERS["amulet_native"] if peer != "amulet_native" else None
    total = measure(benchmark, MMAP_PEERS[peer], big_file, group=STREAM_MMAP, peer=peer,
                    kind="stream", ref=ref, min_rounds=10)
    benchmark.extra_info["bytes"] = FILE_BYTES
    assert total == FILE_BYTES


@pytest.fixture(scope="session")
def upload_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stream") / "upload.bin"
    path.write_bytes(np.random.default_rng(8).integers(0, 256, UPLOAD_BYTES, np.uint8).tobytes())
    return path


def amulet_limited(path: Path) -> str | None:
    with open(path, "rb") as f:
        return an.read_limited(f, 32 * MIB).digest


def read_then_hash(path: Path) -> str:
    with open(path, "rb") as f:
        body = f.read(32 * MIB + 1)
    if len(body) > 32 * MIB:
        raise ValueError("too large")
    return hashlib.blake2b(body).hexdigest()


LIMITED_PEERS: dict[str, Callable[[Path], Any]] = {
    "amulet_native": amulet_limited,
    "f.read(max + 1) + hashlib.blake2b": read_then_hash,
}


@pytest.mark.parametrize("peer", list(LIMITED_PEERS))
def test_read_limited(benchmark: Any, upload_file: Path, peer: str) -> None:
    ref = amulet_limited if peer != "amulet_native" else None
    digest = measure(benchmark, LIMITED_PEERS[peer], upload_file, group=STREAM_LIMITED,
                     peer=peer, kind="stream", ref=ref)
    benchmark.extra_info["bytes"] = UPLOAD_BYTES
    assert digest == hashlib.blake2b(upload_file.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def jpeg_upload(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(warm-up strip, ~20 MB JPEG: the mosaic tiled 2x2, 6144x4096, quality 100)."""
    photos, _ = load_photos()
    big = mosaic(photos)
    folder = tmp_path_factory.mktemp("stream_memory")
    warm, upload = folder / "strip.jpg", folder / "upload.jpg"
    warm.write_bytes(encode_jpeg(np.ascontiguousarray(big[1000:1016, :2048])))
    upload.write_bytes(encode_jpeg(np.ascontiguousarray(np.tile(big, (2, 2, 1))), quality=100))
    assert upload.stat().st_size < MAX_BYTES
    return warm, upload


@pytest.mark.parametrize("op", STREAM_MEMORY_OPS)
def test_upload_decode_memory(benchmark: Any, jpeg_upload: tuple[Path, Path], op: str) -> None:
    """Peak memory in fresh processes (see ``measure_memory``)."""
    warm, upload = jpeg_upload
    measure_memory(
        benchmark,
        STREAM_MEMORY,
        HERE / "_stream_memory.py",
        op,
        warm,
        upload,
        upload_bytes=upload.stat().st_size,
    )
