"""Integration: per-request memory budgets around the streaming upload path.

The way a service uses them together: each request (an asyncio task or a
worker thread) reads its upload with a hard byte limit, decodes it inside its
own memory_limit, and one request over budget must fail alone while the others
finish and every budget returns to zero.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from conftest import jpeg_bytes, photo

import amulet_native as an

KB = 1024


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        await asyncio.sleep(0)
        yield data[i:i + size]


def test_concurrent_requests_read_decode_and_fail_alone(fast_switch: None) -> None:
    small = jpeg_bytes(photo(64, 96, seed=1))
    big = jpeg_bytes(photo(512, 768, seed=2))  # 1.1 MiB of RGB output
    expected = {len(small): an.decode(small), len(big): an.decode(big)}

    async def request(i: int) -> tuple[str, int, int]:
        data = big if i % 10 == 3 else small
        limit = 200 * KB  # enough for the small image, not for the big one
        with an.memory_limit(max_bytes=limit) as usage:
            try:
                body = await an.aread_limited(chunks(data, 997), 4 << 20)
                rgb = an.decode(body.data)
                await asyncio.sleep(0)
                np.testing.assert_array_equal(rgb, expected[len(data)])
                tmp = rgb.astype(np.float32)  # NumPy work is charged too
                outcome = "ok"
                del rgb, tmp
            except an.MemoryLimitError as e:
                assert e.limit == limit and e.requested is not None and e.in_use is not None
                assert e.requested > limit - e.in_use
                outcome = "refused"
        return outcome, usage.current, usage.peak

    async def main() -> list[tuple[str, int, int]]:
        return await asyncio.gather(*(request(i) for i in range(40)))

    results = asyncio.run(main())
    for i, (outcome, current, peak) in enumerate(results):
        assert outcome == ("refused" if i % 10 == 3 else "ok"), i
        assert current == 0 and peak <= 200 * KB
    # the library and NumPy are fine afterwards, with and without a scope
    assert an.decode(big).shape == (512, 768, 3)
    assert an.memory.current_usage() is None


def test_mapped_upload_decoded_inside_a_budget(tmp_path: Path) -> None:
    p = tmp_path / "upload.jpg"
    p.write_bytes(jpeg_bytes(photo(256, 256, seed=3)))
    with an.open_mapped(p) as m, an.memory_limit(max_bytes=1 << 20) as usage:
        rgb = an.decode(m, limits=an.Limits(max_bytes=0))
        assert usage.current >= rgb.nbytes  # the output is charged, the map is not copied
        with pytest.raises(an.MemoryLimitError), an.memory_limit(max_bytes=64 * KB):
            an.decode(m, limits=an.Limits(max_bytes=0))
        del rgb
    assert usage.current == 0


def test_threads_with_and_without_scopes_next_to_each_other(fast_switch: None) -> None:
    # One thread allocates freely while others run tight scopes; a thread started
    # inside a scope is not in it (threading.Thread does not copy the context).
    errors: list[BaseException] = []
    stop = threading.Event()

    def free_allocator() -> None:
        try:
            while not stop.is_set():
                a = np.ones(64 * KB, np.uint8)  # over any of the budgets below
                del a
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    def scoped(i: int) -> None:
        try:
            for _ in range(200):
                with an.memory_limit(max_bytes=8 * KB + i) as usage:
                    ok = np.ones(1 * KB, np.uint8)
                    with pytest.raises(MemoryError):  # NumPy's own, inside the scope
                        np.ones(9 * KB + i, np.uint8)
                    assert usage.refused is not None
                    assert usage.refused.requested == 9 * KB + i
                    del ok
                assert usage.current == 0
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    with an.memory_limit(max_bytes=KB) as outer:
        free = threading.Thread(target=free_allocator)
        free.start()
        workers = [threading.Thread(target=scoped, args=(i,)) for i in range(4)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        stop.set()
        free.join()
    assert errors == []
    assert outer.current == 0 and outer.refusals == 0
