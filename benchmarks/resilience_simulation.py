"""A dependency down for 10 s under 64 concurrent callers: how much load do
the callers' retries put on it, and how fast does service come back?

    PYTHONPATH=. python benchmarks/resilience_simulation.py [--outage 10] [--callers 64] [--json out.json]

Timeline per scenario: 1 s healthy, ``outage`` s failing 100% (every call
still costs the dependency 2 ms of work before failing), then 5 s healthy.
Each of the 64 caller threads sends a request, waits 10 ms, and repeats.

Scenarios (same retry settings: 5 attempts, exponential backoff with full
jitter from 50 ms, capped at 1 s):
- tenacity: ``@tenacity.retry`` around the call (what services do today);
- amulet_native: ``@retry(budget=RetryBudget(0.2, 10, ttl=10))`` around a
  ``CircuitBreaker(window=50, minimum_calls=20, wait_in_open=1)``.

Measured: calls that reached the dependency during the outage (the load on a
service trying to come back), and the recovery time: from the end of the
outage to the first 100 ms bin in which >= 90% of requests succeed.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import amulet_native as an
from amulet_native import resilience as rs


class DependencyDown(ConnectionError):
    pass


class Dependency:
    def __init__(self, down_from: float, down_until: float) -> None:
        self.down_from = down_from
        self.down_until = down_until
        self.lock = threading.Lock()
        self.calls_during_outage = 0
        self.calls = 0

    def __call__(self) -> str:
        now = time.monotonic()
        down = self.down_from <= now < self.down_until
        with self.lock:
            self.calls += 1
            if down:
                self.calls_during_outage += 1
        time.sleep(0.002)
        if down:
            raise DependencyDown("503")
        return "ok"


def tenacity_client(dep: Dependency) -> Callable[[], str]:
    import tenacity

    return tenacity.retry(
        stop=tenacity.stop_after_attempt(5),
        wait=tenacity.wait_random_exponential(multiplier=0.05, max=1.0),
        retry=tenacity.retry_if_exception_type(DependencyDown),
        reraise=True,
    )(dep)


def amulet_client(dep: Dependency, tag: str) -> Callable[[], str]:
    budget = an.RetryBudget(ratio=0.2, min_per_second=10, ttl=10, name=f"sim-{tag}")
    breaker = an.CircuitBreaker(
        f"sim-{tag}",
        window=50,
        minimum_calls=20,
        failure_rate=0.5,
        wait_in_open=1.0,
        half_open_calls=5,
    )
    return an.retry(
        on=DependencyDown, attempts=5, wait=rs.backoff(initial=0.05, max=1.0), budget=budget
    )(breaker(dep))


def run(
    name: str, make: Callable[[Dependency], Callable[[], str]], callers: int, outage: float
) -> dict[str, Any]:
    t0 = time.monotonic()
    down_from, down_until = t0 + 1.0, t0 + 1.0 + outage
    end = down_until + 5.0
    dep = Dependency(down_from, down_until)
    client = make(dep)
    results: list[tuple[float, bool]] = []
    lock = threading.Lock()

    def caller() -> None:
        local: list[tuple[float, bool]] = []
        while time.monotonic() < end:
            try:
                client()
                ok = True
            except Exception:  # noqa: BLE001 - DependencyDown or CircuitOpenError
                ok = False
            local.append((time.monotonic(), ok))
            time.sleep(0.01)
        with lock:
            results.extend(local)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # recovery: first 100 ms bin after the outage with >= 90% successes
    bins: dict[int, list[bool]] = {}
    for t, ok in results:
        if t >= down_until:
            bins.setdefault(int((t - down_until) * 10), []).append(ok)
    recovery = None
    for b in sorted(bins):
        v = bins[b]
        if len(v) >= 5 and sum(v) / len(v) >= 0.9:
            recovery = b / 10
            break
    out = {
        "scenario": name,
        "calls_during_outage": dep.calls_during_outage,
        "calls_total": dep.calls,
        "requests": len(results),
        "requests_ok": sum(1 for _, ok in results if ok),
        "recovery_s": recovery,
    }
    print(json.dumps(out))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--outage", type=float, default=10.0)
    ap.add_argument("--callers", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    runs = []
    for i in range(a.repeat):
        runs.append(run("tenacity", tenacity_client, a.callers, a.outage))
        runs.append(
            run(
                "amulet_native retry(budget) + CircuitBreaker",
                lambda d, i=i: amulet_client(d, str(i)),
                a.callers,
                a.outage,
            )
        )
    if a.json:
        from _versions import collect

        a.json.write_text(
            json.dumps(
                {"machine": collect(), "outage_s": a.outage, "callers": a.callers, "runs": runs},
                indent=1,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
