"""ImageCache: decode through the cache by content digest, zero-copy read-only
views, memory lifetime, single-flight decodes, the original API and shrink()."""

from __future__ import annotations

import gc
import io
import mmap
import threading
import tracemalloc
import weakref
from typing import Any
from unittest import mock

import numpy as np
import pytest
from conftest import jpeg_bytes, photo, png_bytes, switch_often

import amulet_native as an
from amulet_native import _core


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return jpeg_bytes(photo(96, 128, seed=3))


def test_decode_hits_the_same_memory(jpeg: bytes) -> None:
    ic = an.ImageCache(max_bytes=10 << 20)
    a = ic.decode(jpeg)
    b = ic.decode(bytearray(jpeg))  # same bytes, another buffer type: same entry
    assert np.array_equal(a, an.decode(jpeg))
    assert a is not b and a.base is b.base  # views of one cached array
    assert not a.flags.writeable and not b.flags.writeable
    with pytest.raises(ValueError):
        a[0, 0, 0] = 1
    s = ic.get_stats()
    assert (s["hits"], s["misses"], s["items"]) == (1, 1, 1)
    assert s["bytes"] == a.nbytes == 96 * 128 * 3 and s["max_bytes"] == 10 << 20


def test_options_are_part_of_the_key(jpeg: bytes) -> None:
    ic = an.ImageCache()
    rgb = ic.decode(jpeg)
    assert ic.decode(jpeg, mode="RGB").base is rgb.base  # the default is RGB
    gray = ic.decode(jpeg, mode="L")
    half = ic.decode(jpeg, scale=0.5)
    assert gray.shape == (96, 128) and half.shape == (48, 64, 3)
    assert len(ic) == 3
    assert np.array_equal(half, an.decode(jpeg, scale=0.5))


def test_accepted_inputs(jpeg: bytes, tmp_path: Any) -> None:
    ic = an.ImageCache()
    ref = ic.decode(jpeg)
    path = tmp_path / "a.jpg"
    path.write_bytes(jpeg)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert ic.decode(m).base is ref.base
    assert ic.decode(memoryview(jpeg)).base is ref.base
    assert ic.decode(np.frombuffer(jpeg, np.uint8)).base is ref.base
    assert ic.decode(io.BytesIO(jpeg)).base is ref.base  # file objects are read
    png = png_bytes(photo(10, 12, seed=1), 2)
    assert ic.decode(png).shape == (10, 12, 3)
    with pytest.raises(an.ValidationError) as info:
        ic.decode("a.jpg")
    assert info.value.code == "input.type"
    with pytest.raises(an.ValidationError):
        ic.decode(12345)
    with pytest.raises(an.UnsupportedFormatError):
        ic.decode(b"II*\x00" + bytes(100))
    with pytest.raises(an.DecodeError):
        ic.decode(jpeg[: len(jpeg) // 2])
    assert len(ic) == 2  # failures are not cached


def test_hashing_does_not_copy(jpeg: bytes) -> None:
    big = bytes(8 << 20)  # hashing 8 MiB must not allocate another 8 MiB
    tracemalloc.start()
    try:
        an.ImageCache._digest(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_memory_lives_while_cache_or_caller_holds_it(jpeg: bytes) -> None:
    ic = an.ImageCache()
    view = ic.decode(jpeg)
    base = weakref.ref(view.base)
    ic.clear()  # the cache let go: the caller's view keeps the memory valid
    gc.collect()
    assert base() is not None
    assert np.array_equal(view, an.decode(jpeg))
    del view
    gc.collect()
    assert base() is None  # both released: freed

    view2 = ic.decode(jpeg)
    base2 = weakref.ref(view2.base)
    del view2
    gc.collect()
    assert base2() is not None  # the cache alone keeps it
    ic.shrink(1.0)
    assert base2() is None


def test_byte_budget_evicts_lru(jpeg: bytes) -> None:
    one = 96 * 128 * 3
    ic = an.ImageCache(max_bytes=2 * one + 10)
    imgs = [jpeg_bytes(photo(96, 128, seed=s)) for s in range(4)]
    for data in imgs:
        ic.decode(data)
    s = ic.get_stats()
    assert s["items"] == 2 and s["bytes"] == 2 * one and s["evictions"] == 2
    too_big = an.ImageCache(max_bytes=100)
    arr = too_big.decode(jpeg)  # returned, not cached
    assert arr.shape == (96, 128, 3) and len(too_big) == 0


def test_original_api(jpeg: bytes) -> None:
    ic = an.ImageCache()
    key = ic.cache_image(jpeg)
    assert len(key) == 64 and int(key, 16) >= 0  # BLAKE2b-256 hex digest
    assert ic.cache_image(jpeg, name="avatar:1") == "avatar:1"
    img = ic.get_image("avatar:1")
    assert img is not None and np.array_equal(img, an.decode(jpeg))
    assert ic.get_image("missing") is None
    stats = ic.get_stats()
    assert set(stats) == {"hits", "misses", "hit_rate", "items", "bytes", "max_bytes", "evictions"}
    with pytest.raises(an.ValidationError):
        ic.cache_image(jpeg, name=5)  # type: ignore[arg-type]


def test_cache_image_under_a_used_name_replaces_it() -> None:
    """New bytes under an old name used to return the old image (a silent
    wrong result: one user's avatar served for another's upload)."""
    ic = an.ImageCache()
    first, second = jpeg_bytes(photo(32, 48, seed=1)), jpeg_bytes(photo(32, 48, seed=2))
    assert ic.cache_image(first, name="avatar") == "avatar"
    img = ic.get_image("avatar")
    assert img is not None and np.array_equal(img, an.decode(first))
    assert ic.cache_image(second, name="avatar") == "avatar"
    img = ic.get_image("avatar")
    assert img is not None and np.array_equal(img, an.decode(second))
    assert len(ic) == 1 and ic.get_stats()["bytes"] == img.nbytes  # the old one is gone
    before = ic.get_stats()["hits"]
    ic.cache_image(second, name="avatar")  # same bytes again: a hit, no decode
    assert ic.get_stats()["hits"] == before + 1
    ic.cache.pop("avatar")
    assert ic.get_image("avatar") is None
    ic.cache_image(first, name="avatar")
    img = ic.get_image("avatar")
    assert img is not None and np.array_equal(img, an.decode(first))


def test_shrink(jpeg: bytes) -> None:
    ic = an.ImageCache()
    for s in range(4):
        ic.decode(jpeg_bytes(photo(96, 128, seed=s)))
    total = ic.get_stats()["bytes"]
    freed = ic.shrink(0.5)
    assert freed == total // 2 and ic.get_stats()["bytes"] == total // 2
    assert ic.shrink(0.0) == 0
    for bad in (-0.1, 1.5, "half", True):
        with pytest.raises(an.ValidationError):
            ic.shrink(bad)  # type: ignore[arg-type]
    assert ic.shrink(1) == total // 2 and len(ic) == 0


def test_concurrent_decodes_run_once(jpeg: bytes) -> None:
    ic = an.ImageCache()
    calls = [0]
    real = _core.decode
    lock = threading.Lock()
    arrived = threading.Barrier(16)

    def counting_decode(*args: Any) -> Any:
        with lock:
            calls[0] += 1
        return real(*args)

    results: list[Any] = []

    def run() -> None:
        arrived.wait()
        results.append(ic.decode(jpeg))

    with switch_often(), mock.patch.object(_core, "decode", counting_decode):
        ts = [threading.Thread(target=run) for _ in range(16)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    assert calls[0] == 1  # one decode: the rest hit or waited on the flight
    assert len(results) == 16 and all(r.base is results[0].base for r in results)
