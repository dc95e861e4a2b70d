"""memory_limit: what a per-request budget costs.

Reference (``amulet_native``): the work inside ``memory_limit(mb=512)``, i.e.
with the scope's NEP 49 handler charging every NumPy allocation.  Peers:

* ``no scope (NumPy default handler)``: the same work outside any scope;
  peer / reference < 1 is the scope's overhead (0.95 = 5 % slower in a scope);
* ``tracemalloc``: the same work with the stdlib's allocation tracing on (the
  usual way to see per-request memory in Python; it observes, never limits).

The loops allocate temporaries of two sizes: 128 bytes (NumPy's small-block
cache, which a custom handler bypasses, is what the default handler wins on)
and 32 KiB.  No timing assertions: report.py shows the ratios.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _inputs import InputSet
from conftest import measure

import amulet_native as an

SMALL_GROUP = "memory_limit overhead: numpy loop, 128 B temporaries"
MEDIUM_GROUP = "memory_limit overhead: numpy loop, 32 KiB temporaries"
DECODE_GROUP = "memory_limit overhead: decode jpeg 640x480"

AMULET = "amulet_native"
NO_SCOPE = "no scope (NumPy default handler)"
TRACEMALLOC = "tracemalloc"
PEERS = (AMULET, NO_SCOPE, TRACEMALLOC)
LOOP = 200


def numpy_loop(a: np.ndarray[Any, Any]) -> float:
    """Allocation-heavy: four temporaries per iteration, little arithmetic."""
    total = 0.0
    for _ in range(LOOP):
        b = a + 1.0
        c = np.multiply(b, a)
        d = np.empty_like(c)
        np.add(c, b, out=d)
        total += float(d[0])
    return total


def in_scope(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def run(arg: Any) -> Any:
        with an.memory_limit(mb=512):
            return fn(arg)

    return run


def traced(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def run(arg: Any) -> Any:
        tracemalloc.start()
        try:
            return fn(arg)
        finally:
            tracemalloc.stop()

    return run


def variant(peer: str, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return {AMULET: in_scope(fn), NO_SCOPE: fn, TRACEMALLOC: traced(fn)}[peer]


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize(("group", "elements"), [(SMALL_GROUP, 16), (MEDIUM_GROUP, 4096)])
def test_numpy_loop(benchmark: Any, peer: str, group: str, elements: int) -> None:
    arr = np.linspace(0.0, 1.0, elements)
    ref = None if peer == AMULET else variant(AMULET, numpy_loop)
    out = measure(
        benchmark, variant(peer, numpy_loop), arr, group=group, peer=peer, kind="numpy", ref=ref
    )
    assert out == numpy_loop(arr)


@pytest.mark.parametrize("peer", PEERS)
def test_decode(benchmark: Any, inputs: InputSet, peer: str) -> None:
    data = inputs.jpeg["jpeg 640x480"].data
    ref = None if peer == AMULET else variant(AMULET, an.decode)
    out = measure(
        benchmark,
        variant(peer, an.decode),
        data,
        group=DECODE_GROUP,
        peer=peer,
        kind="decode",
        pixels=640 * 480,
        ref=ref,
    )
    assert out.shape == (480, 640, 3)
