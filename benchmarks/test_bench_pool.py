"""Object pools and named locks against their peers.

Pools: one acquire/return cycle of a trivial object (``object()``), on one
thread and with 4 threads contending for ``max_size=2``:
``amulet_native.ObjectPool`` vs generic-connection-pool's threading
``ConnectionPool`` (background collector off) and SQLAlchemy's ``QueuePool``
(``pool_size=2, max_overflow=0``, a trivial creator, reset-on-return off, so
no DBAPI work is timed).  Locks: ``with lm.acquire(name)`` on one named lock
vs the usual hand-written pattern (a dict of ``threading.Lock`` behind a
global lock) and, as the floor, a bare ``threading.Lock``.

Every call of a measured function runs ``OPS`` cycles (``THREADS x OPS`` for
the contended group, including starting and joining the threads, the same for
every peer), so rounds are milliseconds long; the report divides by the cycle
count.  Rounds are paired with the amulet_native reference (see ``measure``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from conftest import measure

import amulet_native as an

OPS = 1000
THREADS = 4
CONTENDED_OPS = 250  # per thread

POOL_GROUP = f"pool acquire/release x{OPS}, 1 thread"
POOL_CONTENDED_GROUP = f"pool acquire/release x{CONTENDED_OPS}, {THREADS} threads, max_size=2"
LOCK_GROUP = f"named lock acquire/release x{OPS}"
LOCK_CONTENDED_GROUP = f"named lock acquire/release x{CONTENDED_OPS}, {THREADS} threads"

AMULET = "amulet_native"
POOL_PEERS = (AMULET, "generic-connection-pool", "SQLAlchemy QueuePool")
LOCK_PEERS = (AMULET, "dict of threading.Lock + global lock", "bare threading.Lock")


class _Conn:
    """A stand-in DBAPI connection: nothing to reset or close."""

    def close(self) -> None:
        pass

    def rollback(self) -> None:
        pass


def _cycle_fn(peer: str) -> Callable[[], None]:
    """One acquire/return cycle of a max_size=2 pool of `peer`."""
    if peer == AMULET:
        pool: Any = an.ObjectPool(_Conn, max_size=2)

        def cycle() -> None:
            with pool.acquire(timeout=30):
                pass

        return cycle
    if peer == "generic-connection-pool":
        gcp = pytest.importorskip("generic_connection_pool.threading")

        class Manager(gcp.BaseConnectionManager):  # type: ignore[misc]
            def create(self, endpoint: Any, timeout: float | None = None) -> _Conn:
                return _Conn()

            def dispose(self, endpoint: Any, conn: _Conn, timeout: float | None = None) -> None:
                conn.close()

        gpool = gcp.ConnectionPool(
            Manager(), min_idle=0, max_size=2, total_max_size=2, background_collector=False
        )

        def gcycle() -> None:
            with gpool.connection(endpoint="db", timeout=30):
                pass

        return gcycle
    if peer == "SQLAlchemy QueuePool":
        sa_pool = pytest.importorskip("sqlalchemy.pool")
        qpool = sa_pool.QueuePool(_Conn, pool_size=2, max_overflow=0, timeout=30,
                                  reset_on_return=None)

        def qcycle() -> None:
            qpool.connect().close()

        return qcycle
    raise ValueError(peer)


def _lock_fn(peer: str) -> Callable[[], None]:
    """One acquire/release of the lock named "resource" with `peer`."""
    if peer == AMULET:
        lm = an.LockManager()

        def cycle() -> None:
            with lm.acquire("resource"):
                pass

        return cycle
    if peer == "dict of threading.Lock + global lock":
        locks: dict[str, threading.Lock] = {}
        registry = threading.Lock()

        def get(name: str) -> threading.Lock:
            with registry:
                lock = locks.get(name)
                if lock is None:
                    lock = locks[name] = threading.Lock()
                return lock

        def dcycle() -> None:
            with get("resource"):
                pass

        return dcycle
    if peer == "bare threading.Lock":
        bare = threading.Lock()

        def bcycle() -> None:
            with bare:
                pass

        return bcycle
    raise ValueError(peer)


def _serial(cycle: Callable[[], None]) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            cycle()

    return run


def _threaded(cycle: Callable[[], None]) -> Callable[[int], None]:
    def run(n: int) -> None:
        def work() -> None:
            for _ in range(n):
                cycle()

        threads = [threading.Thread(target=work) for _ in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    return run


def _bench(benchmark: Any, make: Callable[[str], Callable[[], None]], peer: str, *, group: str,
           threaded: bool, n: int) -> None:
    wrap = _threaded if threaded else _serial
    fn = wrap(make(peer))
    ref = None if peer == AMULET else wrap(make(AMULET))
    measure(benchmark, fn, n, group=group, peer=peer, kind="sync", ref=ref)
    benchmark.extra_info["items"] = n * (THREADS if threaded else 1)


@pytest.mark.parametrize("peer", POOL_PEERS)
def test_pool_single_thread(benchmark: Any, peer: str) -> None:
    _bench(benchmark, _cycle_fn, peer, group=POOL_GROUP, threaded=False, n=OPS)


@pytest.mark.parametrize("peer", POOL_PEERS)
def test_pool_contended(benchmark: Any, peer: str) -> None:
    _bench(benchmark, _cycle_fn, peer, group=POOL_CONTENDED_GROUP, threaded=True,
           n=CONTENDED_OPS)


@pytest.mark.parametrize("peer", LOCK_PEERS)
def test_named_lock(benchmark: Any, peer: str) -> None:
    _bench(benchmark, _lock_fn, peer, group=LOCK_GROUP, threaded=False, n=OPS)


@pytest.mark.parametrize("peer", LOCK_PEERS)
def test_named_lock_contended(benchmark: Any, peer: str) -> None:
    _bench(benchmark, _lock_fn, peer, group=LOCK_CONTENDED_GROUP, threaded=True,
           n=CONTENDED_OPS)
