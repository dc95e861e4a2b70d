"""memory_limit: per-thread / per-task budgets over NumPy (NEP 49) and the decoders.

Everything here runs the real thing: NumPy allocating through the scope's
handler, real threads, real asyncio tasks, real JPEG/PNG decodes.  Exact byte
counts are asserted where the test controls every allocation in the scope
(np.empty / np.zeros of a known size allocate exactly nbytes of data).
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import io
import json
import struct
import subprocess
import sys
import textwrap
import threading
import tracemalloc
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from conftest import MEMORY_PROBES, jpeg_bytes, photo
from PIL import Image

import amulet_native as an
from amulet_native import _core
from amulet_native.memory import MemoryRefusal, current_usage

KB = 1024
MB = 1024 * 1024


def handler_name() -> str:
    name: str = np._core.multiarray.get_handler_name()  # type: ignore[attr-defined]
    return name


@pytest.fixture
def no_process_limit() -> Iterator[None]:
    yield
    an.set_process_memory_limit(None)


# ---- the basics --------------------------------------------------------------------


def test_over_budget_raises_memory_limit_error_with_numbers() -> None:
    with pytest.raises(an.MemoryLimitError) as info, an.memory_limit(mb=1) as usage:
        np.empty(2 * MB, np.uint8)
    err = info.value
    assert isinstance(err, MemoryError) and isinstance(err, an.AmuletError)
    assert err.code == "memory.limit"
    assert (err.requested, err.limit, err.in_use) == (2 * MB, MB, 0)
    assert usage.refused == MemoryRefusal(2 * MB, MB, 0, 0)
    assert usage.current == 0 and usage.refusals == 1
    # NumPy's own error is kept as the cause
    assert isinstance(err.__cause__, MemoryError)
    assert not isinstance(err.__cause__, an.AmuletError)


def test_accounting_is_exact_and_frees_are_credited() -> None:
    with an.memory_limit(max_bytes=100 * KB) as usage:
        a = np.empty(60 * KB, np.uint8)
        b = np.zeros(40 * KB, np.uint8)  # exactly the limit (calloc path)
        assert usage.current == 100 * KB
        with pytest.raises(MemoryError):
            np.empty(1, np.uint8)  # one byte above
        assert usage.refused == MemoryRefusal(1, 100 * KB, 100 * KB, 0)
        del a
        assert usage.current == 40 * KB
        c = np.empty(60 * KB, np.uint8)  # the freed bytes are available again
        del b, c
    assert usage.current == 0
    assert usage.peak == 100 * KB
    assert usage.limit == 100 * KB


def test_no_handler_outside_any_scope() -> None:
    default = handler_name()
    assert default == "default_allocator"
    assert _core.current_budget() is None and current_usage() is None
    with an.memory_limit(mb=10) as usage:
        assert handler_name() == "amulet_native.budget"
        cur = current_usage()
        assert cur is not None and cur.limit == usage.limit
    assert handler_name() == default
    assert _core.current_budget() is None


def test_unlimited_scope_only_measures() -> None:
    with an.memory_limit() as usage:
        a = np.empty(3 * MB, np.uint8)
    assert usage.limit is None and usage.peak == 3 * MB and usage.current == 3 * MB
    del a
    assert usage.current == 0


def test_caught_numpy_error_keeps_the_numbers_and_the_scope_usable() -> None:
    with an.memory_limit(max_bytes=10 * KB) as usage:
        try:
            np.empty(20 * KB, np.uint8)
        except MemoryError as e:
            assert not isinstance(e, an.MemoryLimitError)  # NumPy's, inside the scope
        assert usage.refused is not None and usage.refused.requested == 20 * KB
        ok = np.empty(10 * KB, np.uint8)
        assert usage.current == 10 * KB
        del ok


def test_other_exceptions_pass_through_untouched() -> None:
    with pytest.raises(KeyError), an.memory_limit(max_bytes=10 * KB):
        raise KeyError("x")
    # a MemoryError that our budget did not cause stays a plain MemoryError
    with pytest.raises(MemoryError) as info, an.memory_limit(max_bytes=10 * KB):
        raise MemoryError("somebody else's")
    assert not isinstance(info.value, an.MemoryLimitError)


def test_exit_without_enter_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="not entered"):
        an.memory_limit(mb=1).__exit__(None, None, None)
    with pytest.raises(TypeError):
        _core.budget_exit(object())


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        ((), {"mb": 0}, "mb"),
        ((), {"mb": -1}, "mb"),
        ((), {"mb": True}, "mb"),
        ((), {"mb": float("inf")}, "mb"),  # was an OverflowError
        ((), {"mb": float("nan")}, "mb"),
        ((), {"mb": 1e30}, "mb"),
        ((0,), {}, "max_bytes"),
        ((-5,), {}, "max_bytes"),
        ((1.5,), {}, "max_bytes"),
        ((True,), {}, "max_bytes"),
        ((2**63,), {}, "max_bytes"),
        ((10,), {"mb": 1}, "mb"),
    ],
)
def test_invalid_limits(args: tuple[Any, ...], kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(an.ValidationError) as info:
        an.memory_limit(*args, **kwargs)
    assert info.value.field == field


# ---- lifetime: arrays outliving their scope ------------------------------------------


def test_array_freed_after_scope_exit_is_credited_to_its_scope() -> None:
    with an.memory_limit(mb=1) as first:
        kept = np.empty(500 * KB, np.uint8)
    assert first.current == 500 * KB
    with an.memory_limit(max_bytes=10 * KB) as second:
        # freeing it here credits `first`, never `second`
        del kept
        assert second.current == 0 and second.refusals == 0
    assert first.current == 0


def test_array_outliving_scope_does_not_charge_a_new_scope() -> None:
    with an.memory_limit(mb=1) as first:
        kept = np.empty(800 * KB, np.uint8)
    with an.memory_limit(max_bytes=100 * KB) as second:
        kept[:] = 1  # writes allocate nothing
        view = kept[10:]
        assert second.current == 0
        with pytest.raises(MemoryError):
            kept.copy()  # a copy is a new allocation: charged here, refused
        del view
    del kept
    assert first.current == 0 and second.current == 0


def test_budget_lives_as_long_as_its_arrays() -> None:
    with an.memory_limit(mb=1) as usage:
        kept = np.empty(123, np.uint8)
    budget = usage._budget
    del usage
    gc.collect()
    assert budget.in_use == 123
    del kept
    assert budget.in_use == 0


# ---- nesting -----------------------------------------------------------------------


def test_nested_scopes_charge_every_enclosing_scope() -> None:
    with an.memory_limit(max_bytes=100 * KB) as outer:
        a = np.empty(30 * KB, np.uint8)
        with an.memory_limit(max_bytes=50 * KB) as inner:
            b = np.empty(50 * KB, np.uint8)
            assert inner.current == 50 * KB and outer.current == 80 * KB
            assert _core.current_budget() is not None
            assert _core.current_budget().depth == 1  # type: ignore[union-attr]
            with pytest.raises(MemoryError):
                np.empty(1, np.uint8)  # the inner limit
            assert inner.refused == MemoryRefusal(1, 50 * KB, 50 * KB, 0)
        assert outer.current == 80 * KB
        del a, b
    assert outer.current == 0 and inner.current == 0


def test_inner_limit_larger_than_outer_remainder_is_the_outer_one() -> None:
    with an.memory_limit(max_bytes=100 * KB) as outer:
        held = np.empty(90 * KB, np.uint8)
        with pytest.raises(an.MemoryLimitError) as info, an.memory_limit(mb=10) as inner:
            np.empty(20 * KB, np.uint8)
        assert (info.value.requested, info.value.limit, info.value.in_use) == (
            20 * KB, 100 * KB, 90 * KB,
        )
        assert inner.refused is not None and inner.refused.depth == 1
        assert outer.current == 90 * KB
        del held
    # the outer scope was left intact and usable
    assert outer.current == 0


def test_same_object_entered_twice_nests() -> None:
    limit = an.memory_limit(max_bytes=10 * KB)
    with limit as a:
        with limit as b:
            x = np.empty(4 * KB, np.uint8)
            assert b.current == 4 * KB and a.current == 4 * KB
        assert handler_name() == "amulet_native.budget"
        del x
    assert handler_name() == "default_allocator"


# ---- realloc ---------------------------------------------------------------------------


def test_ndarray_resize_charges_growth_and_credits_shrinking() -> None:
    with an.memory_limit(max_bytes=100 * KB) as usage:
        a = np.zeros(10 * KB, np.uint8)
        a.resize(60 * KB, refcheck=False)  # realloc, in place or moved
        assert usage.current == 60 * KB
        a.resize(5 * KB, refcheck=False)
        assert usage.current == 5 * KB
        with pytest.raises(MemoryError):
            a.resize(200 * KB, refcheck=False)
        assert usage.current == 5 * KB and a.size == 5 * KB  # unchanged after refusal
        b = np.resize(a, 20 * KB)  # a new array
        assert usage.current == 25 * KB
        del a, b
    assert usage.current == 0


# ---- threads ---------------------------------------------------------------------------


def test_each_thread_has_its_own_budget(fast_switch: None) -> None:
    errors: list[BaseException] = []
    results: dict[int, tuple[int, int]] = {}
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        limit = (i + 1) * 8 * KB
        try:
            with an.memory_limit(max_bytes=limit) as usage:
                barrier.wait()
                arrays = [np.empty(KB, np.uint8) for _ in range((i + 1) * 8)]
                try:
                    np.empty(1, np.uint8)
                except MemoryError:
                    pass
                else:
                    raise AssertionError("one byte above the limit was allowed")
                results[i] = (usage.current, usage.refusals)
                del arrays
            assert usage.current == 0
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert results == {i: ((i + 1) * 8 * KB, 1) for i in range(8)}


def test_threads_started_inside_a_scope_are_not_budgeted() -> None:
    seen: list[object] = []
    with an.memory_limit(max_bytes=10 * KB) as usage:

        def work() -> None:
            seen.append(_core.current_budget())
            seen.append(np.empty(MB, np.uint8).nbytes)  # far above the scope's limit

        t = threading.Thread(target=work)
        t.start()
        t.join()
    assert seen == [None, MB]
    assert usage.current == 0 and usage.refusals == 0


def test_copied_context_carries_the_scope_into_a_thread() -> None:
    out: list[BaseException] = []
    with an.memory_limit(max_bytes=10 * KB) as usage:
        ctx = contextvars.copy_context()

        def work() -> None:
            try:
                np.empty(MB, np.uint8)
            except MemoryError as e:
                out.append(e)

        t = threading.Thread(target=ctx.run, args=(work,))
        t.start()
        t.join()
    assert len(out) == 1 and usage.refusals == 1


def test_concurrent_alloc_free_in_many_scopes_returns_to_zero(fast_switch: None) -> None:
    usages: list[an.MemoryUsage] = []
    lock = threading.Lock()
    shared_outer: list[np.ndarray[Any, Any]] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with an.memory_limit(mb=4) as usage:
            with lock:
                usages.append(usage)
            live: list[np.ndarray[Any, Any]] = []
            for _ in range(300):
                if live and rng.random() < 0.5:
                    live.pop(int(rng.integers(len(live))))
                else:
                    live.append(np.empty(int(rng.integers(1, 4096)), np.uint8))
            # arrays handed to another thread and freed there
            with lock:
                shared_outer.extend(live)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # the arrays handed over are still charged to the scopes that made them
    assert sum(u.current for u in usages) == sum(a.nbytes for a in shared_outer)
    shared_outer.clear()
    assert [u.current for u in usages] == [0] * 6


# ---- asyncio ---------------------------------------------------------------------------


def test_hundred_tasks_with_different_budgets_do_not_leak(fast_switch: None) -> None:
    async def task(i: int) -> tuple[int, int, int]:
        limit = 4 * KB + i * 101
        with an.memory_limit(max_bytes=limit) as usage:
            held = []
            chunk = limit // 5
            for _ in range(4):
                held.append(np.empty(chunk, np.uint8))
                await asyncio.sleep(0)  # let the other 99 tasks run in between
            held.append(np.empty(limit - 4 * chunk, np.uint8))  # exactly up to the limit
            await asyncio.sleep(0)
            refused = 0
            try:
                np.empty(1, np.uint8)
            except MemoryError:
                refused = 1
            current = usage.current
            del held
        return current, refused, usage.current

    async def main() -> list[tuple[int, int, int]]:
        return await asyncio.gather(*(task(i) for i in range(100)))

    results = asyncio.run(main())
    assert results == [(4 * KB + i * 101, 1, 0) for i in range(100)]


def test_async_decorator_and_task_isolation() -> None:
    @an.memory_limit(max_bytes=64 * KB)
    async def handler(n: int) -> int:
        await asyncio.sleep(0)
        return int(np.zeros(n, np.uint8).nbytes)

    async def main() -> list[Any]:
        return list(
            await asyncio.gather(
                handler(32 * KB), handler(128 * KB), handler(64 * KB), return_exceptions=True
            )
        )

    ok1, refused, ok2 = asyncio.run(main())
    assert ok1 == 32 * KB and ok2 == 64 * KB
    assert isinstance(refused, an.MemoryLimitError) and refused.requested == 128 * KB


def test_to_thread_inherits_run_in_executor_does_not() -> None:
    def big() -> int:
        return int(np.empty(MB, np.uint8).nbytes)

    async def main() -> tuple[Any, Any, Any]:
        loop = asyncio.get_running_loop()
        with an.memory_limit(max_bytes=100 * KB) as usage:
            via_to_thread = await asyncio.gather(asyncio.to_thread(big), return_exceptions=True)
            via_executor = await loop.run_in_executor(None, big)  # no context: unbudgeted
            ctx = contextvars.copy_context()
            via_wrapped = await asyncio.gather(
                loop.run_in_executor(None, ctx.run, big), return_exceptions=True
            )
        return via_to_thread[0], via_executor, (via_wrapped[0], usage.refusals)

    to_thread, executor, (wrapped, refusals) = asyncio.run(main())
    assert isinstance(to_thread, MemoryError)
    assert executor == MB
    assert isinstance(wrapped, MemoryError)
    assert refusals == 2


# ---- decorators and aliases ----------------------------------------------------------------


def test_sync_decorator_gives_each_call_a_fresh_scope() -> None:
    @an.memory_limit(max_bytes=10 * KB)
    def f(n: int) -> int:
        return int(np.zeros(n, np.uint8).size)

    assert f(10 * KB) == 10 * KB
    assert f(10 * KB) == 10 * KB  # the first call's memory is not held against it
    with pytest.raises(an.MemoryLimitError):
        f(10 * KB + 1)
    assert f.__name__ == "f"


def test_aliases() -> None:
    with pytest.raises(an.MemoryLimitError) as info, an.memory_limit_context(1):
        np.empty(2 * MB, np.uint8)
    assert info.value.limit == MB

    @an.memory_efficient_operation
    def measured() -> int:
        return int(np.empty(3 * MB, np.uint8).nbytes)

    @an.memory_efficient_operation(mb=1)
    def limited() -> int:
        return int(np.empty(3 * MB, np.uint8).nbytes)

    @an.memory_efficient_operation(max_bytes=KB)
    async def limited_async() -> int:
        return int(np.empty(2 * KB, np.uint8).nbytes)

    assert measured() == 3 * MB
    with pytest.raises(an.MemoryLimitError):
        limited()
    with pytest.raises(an.MemoryLimitError):
        asyncio.run(limited_async())


# ---- decoders ----------------------------------------------------------------------------


def with_sof_size(jpeg: bytes, w: int, h: int) -> bytes:
    i = jpeg.index(b"\xff\xc0")
    return jpeg[: i + 5] + struct.pack(">HH", h, w) + jpeg[i + 9:]


@pytest.fixture(scope="module")
def small_jpeg() -> bytes:
    return jpeg_bytes(photo(64, 64))


def test_decode_refused_from_the_header_before_allocating(small_jpeg: bytes) -> None:
    huge = with_sof_size(small_jpeg, 10000, 10000)  # 300 MB of RGB, within default Limits
    tracemalloc.start()
    try:
        with pytest.raises(an.MemoryLimitError) as info, an.memory_limit(mb=20) as usage:
            an.decode(huge)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    err = info.value
    assert err.code == "memory.limit"
    assert err.requested == 10000 * 10000 * 3  # the predicted output size
    assert err.limit == 20 * MB
    assert err.context["limit_kind"] == "budget"
    assert usage.peak < 64 * KB  # the decoder's small state at most
    assert peak < MB  # NumPy (traced) allocated nothing big


def test_decode_inside_a_scope_is_charged_and_credited(small_jpeg: bytes) -> None:
    with an.memory_limit(mb=1) as usage:
        img = an.decode(small_jpeg)
    assert img.shape == (64, 64, 3)
    assert usage.current == img.nbytes  # the decoder's working memory was returned
    assert usage.peak >= img.nbytes
    del img
    assert usage.current == 0


def test_decoders_stay_usable_after_a_refusal(small_jpeg: bytes) -> None:
    for _ in range(3):
        with pytest.raises(an.MemoryLimitError), an.memory_limit(max_bytes=1000):
            an.decode(small_jpeg)
    assert an.decode(small_jpeg).shape == (64, 64, 3)
    with an.memory_limit(mb=1):
        assert an.decode(small_jpeg).shape == (64, 64, 3)


def test_progressive_jpeg_coefficient_buffers_are_charged() -> None:
    arr = photo(512, 512)
    baseline = jpeg_bytes(arr)
    progressive = jpeg_bytes(arr, progressive=True)
    out = 512 * 512 * 3
    limit = out + 64 * KB  # room for the output and the decoder's small state
    with an.memory_limit(max_bytes=limit) as usage:
        an.decode(baseline)
    assert usage.peak <= limit
    with pytest.raises(an.MemoryLimitError) as info, an.memory_limit(max_bytes=limit):
        an.decode(progressive)
    # 4:2:0: 64x64 luma blocks + 2 x 32x32 chroma blocks, 128 bytes each
    coef = (64 * 64 + 2 * 32 * 32) * 128
    assert info.value.requested == coef
    assert "coefficient" in str(info.value)
    with an.memory_limit(max_bytes=out + coef + 64 * KB) as usage:
        img = an.decode(progressive)
    assert usage.peak >= out + coef
    del img
    assert usage.current == 0  # the reservation was released


def test_png_working_memory_is_charged() -> None:
    arr = photo(256, 256)
    b = io.BytesIO()
    Image.fromarray(arr).save(b, "PNG")
    data = b.getvalue()
    out = arr.nbytes
    with an.memory_limit(max_bytes=out + MB) as usage:
        img = an.decode(data)
    assert usage.peak > out  # libpng/zlib state was charged on top of the output
    np.testing.assert_array_equal(img, arr)
    # zlib's inflate state (~7 KB) does not fit in what is left
    with pytest.raises(an.MemoryLimitError) as info, an.memory_limit(max_bytes=out + 2 * KB):
        an.decode(data)
    assert info.value.limit == out + 2 * KB


def test_decode_base64_is_charged(small_jpeg: bytes) -> None:
    text = an.b64encode(small_jpeg)
    with an.memory_limit(mb=1) as usage:
        img = an.decode_base64(text)
    assert usage.current == img.nbytes
    with pytest.raises(an.MemoryLimitError), an.memory_limit(max_bytes=KB):
        an.decode_base64(text)


def test_decode_many_workers_charge_the_callers_budget(small_jpeg: bytes) -> None:
    items = [small_jpeg] * 8
    one = 64 * 64 * 3
    limit = 5 * one
    with an.memory_limit(max_bytes=limit) as usage:
        results = an.decode_many(items, threads=4, errors="return")
    ok = [r for r in results if isinstance(r, np.ndarray)]
    refused = [r for r in results if isinstance(r, an.MemoryLimitError)]
    assert len(ok) + len(refused) == 8
    # the 8 decoders' own state is charged too, so fewer than 5 outputs fit
    assert 1 <= len(ok) < 5 and all(r.requested == one for r in refused)
    assert usage.peak <= limit
    assert usage.current == len(ok) * one  # workers returned their working memory
    expected = an.decode(small_jpeg)
    assert all(np.array_equal(a, expected) for a in ok)
    del ok, results
    assert usage.current == 0
    with pytest.raises(an.MemoryLimitError), an.memory_limit(max_bytes=one):
        an.decode_many(items, threads=2)


def test_memory_precheck_api() -> None:
    _core.memory_precheck(10**12)  # no scope: anything goes
    with an.memory_limit(max_bytes=10 * KB):
        _core.memory_precheck(10 * KB)
        with pytest.raises(an.MemoryLimitError) as info:
            _core.memory_precheck(10 * KB + 1)
    assert info.value.in_use == 0
    with pytest.raises(TypeError):
        _core.memory_precheck("1")  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        _core.memory_precheck(-1)


# ---- process limit -------------------------------------------------------------------------


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_process_limit_refuses_large_decodes(small_jpeg: bytes, no_process_limit: None) -> None:
    assert an.get_process_memory_limit() is None
    big = jpeg_bytes(photo(1024, 1024))  # 3 MiB output
    limit = rss() + 2 * MB
    an.set_process_memory_limit(limit)
    assert an.get_process_memory_limit() == limit
    with pytest.raises(an.MemoryLimitError) as info:
        an.decode(big)
    err = info.value
    assert err.code == "memory.process_limit"
    assert err.context["limit_kind"] == "process"
    assert err.requested == 1024 * 1024 * 3 and err.limit == limit
    assert err.in_use is not None and err.in_use > 0
    # small requests (under 1 MiB) are never checked: cheap and still allowed
    assert an.decode(small_jpeg).shape == (64, 64, 3)
    an.set_process_memory_limit(None)
    assert an.get_process_memory_limit() is None
    assert an.decode(big).shape == (1024, 1024, 3)


def test_process_limit_validation(no_process_limit: None) -> None:
    with pytest.raises(an.ValidationError):
        an.set_process_memory_limit(-1)
    with pytest.raises(an.ValidationError):
        an.set_process_memory_limit(0)
    an.set_process_memory_limit(mb=10_000)
    assert an.get_process_memory_limit() == 10_000 * MB


# ---- leaks ------------------------------------------------------------------------------------

LEAK_WORKER = MEMORY_PROBES + textwrap.dedent(r'''
    import asyncio, io, json, sys
    import numpy as np
    from PIL import Image
    import amulet_native as an

    arr = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    buf = io.BytesIO(); Image.fromarray(arr).save(buf, "JPEG", progressive=True)
    jpg = buf.getvalue()
    buf = io.BytesIO(); Image.fromarray(arr).save(buf, "PNG"); png = buf.getvalue()

    def once():
        with an.memory_limit(mb=1) as outer:
            kept = np.empty(1000, np.uint8)
            with an.memory_limit(max_bytes=60000):
                an.decode(jpg)
                an.decode(png)
                try:
                    with an.memory_limit(max_bytes=15000):  # no room for the coefficients
                        an.decode(jpg)
                    raise AssertionError("not refused")
                except an.MemoryLimitError:
                    pass
                try:
                    np.empty(30000, np.uint8)
                except MemoryError:
                    pass
            an.decode_many([jpg, png], threads=2)
        try:
            with an.memory_limit(max_bytes=100):
                np.zeros(1000)
        except an.MemoryLimitError:
            pass
        del kept  # freed after its scope
        assert outer.current == 0

    for _ in range(300):
        once()
    n = int(sys.argv[1])
    marks = [(heap(), rss())]
    for _ in range(2):
        for _ in range(n):
            once()
        marks.append((heap(), rss()))
    print(json.dumps(marks))
''')


@pytest.mark.slow
def test_no_leaks() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", LEAK_WORKER, "2000"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    marks = json.loads(proc.stdout)
    heap_growth = [marks[i + 1][0] - marks[i][0] for i in range(2)]
    rss_growth = [marks[i + 1][1] - marks[i][1] for i in range(2)]
    # A leak grows both halves; a one-time allocation shows in at most one.
    assert min(heap_growth) < 64 * 1024, heap_growth
    assert min(rss_growth) < 2 * 1024 * 1024, rss_growth


# ---- review: MemoryError translation must not mislabel -------------------------


def test_caught_refusal_does_not_relabel_a_later_unrelated_memory_error() -> None:
    # Before: any MemoryError leaving a scope that had *ever* refused became a
    # MemoryLimitError carrying the stale numbers of the caught refusal.
    class OtherMemoryError(MemoryError):
        pass

    for late in (MemoryError("system out of memory"), OtherMemoryError()):
        with pytest.raises(MemoryError) as info, an.memory_limit(max_bytes=10 * KB) as usage:
            try:
                np.empty(20 * KB, np.uint8)
            except MemoryError:
                pass
            assert usage.refused is not None
            raise late
        assert info.value is late and not isinstance(info.value, an.MemoryLimitError)


def test_numpy_error_of_another_size_is_not_relabelled() -> None:
    # the scope refused 20 KB earlier; a NumPy error for a different size is not ours
    with pytest.raises(MemoryError) as info, an.memory_limit(max_bytes=10 * KB):
        try:
            np.empty(20 * KB, np.uint8)
        except MemoryError as e:
            array_memory_error = type(e)
        # what NumPy raises when the system (not the budget) refuses 12345 bytes
        raise array_memory_error((12345,), np.dtype(np.uint8))
    assert not isinstance(info.value, an.MemoryLimitError)


@pytest.mark.parametrize(
    "refused",
    [
        lambda: np.empty(20 * KB, np.uint8),
        lambda: np.zeros((20, KB), np.uint8),
        lambda: np.concatenate([np.ones(10, np.uint8), np.ones(20 * KB, np.uint8)]),
        lambda: np.arange(10, dtype=np.uint8).resize(20 * KB, refcheck=False),
        lambda: np.fromstring(" ".join(["1"] * 5000), sep=" "),
    ],
    ids=["empty", "zeros", "concatenate", "resize", "fromstring"],
)
def test_numpy_refusals_become_memory_limit_errors(refused: Any) -> None:
    with pytest.raises(an.MemoryLimitError) as info, an.memory_limit(max_bytes=10 * KB) as u:
        refused()
    assert u.refused is not None
    assert info.value.requested == u.refused.requested
    assert info.value.limit == 10 * KB


def test_tiny_mb_is_one_byte_and_infinite_mb_is_refused_by_the_process_limit_too(
    no_process_limit: None,
) -> None:
    assert an.memory_limit(mb=1e-12).max_bytes == 1
    with pytest.raises(an.ValidationError) as info:
        an.set_process_memory_limit(mb=float("inf"))
    assert info.value.field == "mb"
    assert an.get_process_memory_limit() is None


# ---- review: the per-scope small-block cache ------------------------------------


def test_small_blocks_are_reused_with_exact_accounting_and_clean_zeros() -> None:
    # Blocks under 1 KiB are kept per scope for reuse (the ~5% overhead on tiny
    # arrays came from malloc/free).  A reused block must fit any size of its
    # class (ASan checks the writes under `make sanitize`), np.zeros must not see
    # a previous array's bytes, and every byte is still charged and credited.
    rng = np.random.default_rng(6)
    sizes = [0, 1, 15, 16, 17, 31, 32, 33, 1000, 1023, 1024, 1025, 4096]
    sizes += [int(x) for x in rng.integers(0, 1100, 200)]
    with an.memory_limit(max_bytes=256 * KB) as usage:
        live: list[np.ndarray] = []
        for i, n in enumerate(sizes):
            dirty = np.full(n, 0xAB, np.uint8)
            del dirty
            z = np.zeros(n, np.uint8)
            assert not z.any()
            z[:] = 0xCD  # the whole block is writable
            if i % 3 == 0:
                live.append(z)  # keep some so that the cache depth overflows too
            del z
        assert usage.current == sum(max(a.nbytes, 1) for a in live)
        grown = live[1]
        old = grown.nbytes
        grown.resize(5000, refcheck=False)  # realloc of a block that came from the cache
        assert grown.nbytes == 5000 and (grown[:old] == 0xCD).all() and not grown[old:].any()
        shrunk = np.full(3000, 7, np.uint8)
        shrunk.resize(5, refcheck=False)  # realloc down into a cache class, then freed
        assert (shrunk == 7).all()
        del live, grown, shrunk
        assert usage.current == 0
        assert usage.peak <= 256 * KB
    assert usage.current == 0


def test_small_block_cache_lives_with_arrays_that_outlive_the_scope() -> None:
    with an.memory_limit(max_bytes=64 * KB) as usage:
        kept = [np.full(n, 1, np.uint8) for n in range(1, 200)]
        for _ in range(20):
            tmp = np.ones(16) + 1.0
            del tmp
    assert usage.current == sum(a.nbytes for a in kept)
    # freed after the scope: into the (dead) scope's cache, credited to it
    del kept
    gc.collect()
    assert usage.current == 0
    with an.memory_limit(max_bytes=64 * KB) as other:
        again = np.ones(16)
        assert other.current == again.nbytes
        del again
    assert usage.current == 0 and other.current == 0


def test_decorating_a_generator_function_is_refused() -> None:
    # Before: the scope ended when the generator object was made, so the body's
    # allocations silently ran without a budget.
    def gen() -> Iterator[np.ndarray]:
        yield np.empty(20 * KB, np.uint8)

    async def agen() -> Any:
        yield np.empty(20 * KB, np.uint8)

    for f in (gen, agen):
        with pytest.raises(TypeError, match="generator"):
            an.memory_limit(max_bytes=10 * KB)(f)
        with pytest.raises(TypeError, match="generator"):
            an.memory_efficient_operation(mb=1)(f)
    with pytest.raises(TypeError, match="decorates a function"):
        an.memory_limit(mb=1)(42)  # type: ignore[type-var]
