"""Memory stays flat over thousands of thread-safe structure lifetimes and
error paths (queue rings, condition variables, get_or_create flights holding
exceptions, priority comparisons that raise, async wake-up callbacks).

Same method as test_leaks.py: a fresh subprocess, a warm-up, then two halves
measured with glibc's heap counter and the RSS; a leak grows both halves.
Marked slow: RSS readings mean nothing under the sanitizers' allocators.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import MEMORY_PROBES

HEAP_BOUND = 64 * 1024
RSS_BOUND = 2 * 1024 * 1024

WORKER = MEMORY_PROBES + textwrap.dedent(r'''
    import asyncio, gc, json, queue
    import amulet_native as an

    class Bad:
        def __lt__(self, other):
            raise RuntimeError("no order")

    def fail():
        raise ValueError("factory failed " * 200)  # > 512 bytes: malloc, counted by heap()

    async def async_round(q):
        t = asyncio.ensure_future(q.aget())
        await asyncio.sleep(0)
        await q.aput(b"x" * 100)
        await t
        try:
            await q.aget(timeout=0)
        except queue.Empty:
            pass

    loop = asyncio.new_event_loop()

    def once(i):
        q = an.ThreadSafeQueue(4, kind=("fifo", "lifo", "priority")[i % 3])
        for k in range(4):
            q.put((k, b"payload" * 100))
        try:
            q.put_nowait((9, ""))
        except queue.Full:
            pass
        while not q.empty():
            q.get()
        try:
            q.get(timeout=0)
        except queue.Empty:
            pass
        q.close()
        try:
            q.put(1)
        except an.QueueClosed:
            pass
        p = an.ThreadSafeQueue(kind="priority")
        p.put(Bad())
        try:
            p.put(Bad())
        except RuntimeError:
            pass
        big = an.ThreadSafeQueue()
        for k in range(100):
            big.put(k)
        d = an.ThreadSafeDict({"a": 1})
        d.get_or_create("b", list)
        try:
            d.get_or_create("c", fail)
        except ValueError:
            pass
        d.update_with("a", lambda v: v + 1)
        d.compare_and_swap("a", 2, 3)
        list(d.items())
        c = an.AtomicCounter(i)
        c.increment()
        try:
            c.increment(2**63)
        except OverflowError:
            pass
        loop.run_until_complete(async_round(an.ThreadSafeQueue()))

    for i in range(WARMUP):
        once(i)
    gc.collect()
    marks = [(heap(), rss())]
    for half in range(2):
        for i in range(HALF):
            once(i)
        gc.collect()
        marks.append((heap(), rss()))
    print(json.dumps(marks))
''')


@pytest.mark.slow
def test_sync_structures_do_not_leak() -> None:
    code = "WARMUP, HALF = 500, 2500\n" + WORKER
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (h0, r0), (h1, r1), (h2, r2) = json.loads(proc.stdout)
    heap_growth = (h1 - h0, h2 - h1)
    rss_growth = (r1 - r0, r2 - r1)
    assert min(heap_growth) <= HEAP_BOUND, f"heap grows by {heap_growth} bytes per half"
    assert min(rss_growth) <= RSS_BOUND, f"RSS grows by {rss_growth} bytes per half"
