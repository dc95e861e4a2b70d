"""Multi-worker scenario for tests/test_metrics_multiprocess.py, run in a fresh
interpreter: python _metrics_mp_scenario.py DIR ROUNDS N.

Four forked workers per round increment shared metrics; one of them is
SIGKILLed mid-write, one closes cleanly, the others exit without closing (a
crash as far as the arena can tell).  Each finished increment is also counted
in a shared arena record, so the parent can check that no finished increment
was lost.  Prints one JSON object with what the test asserts on."""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time

from amulet_native import _core, metrics

directory, rounds, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
arena = metrics.multiprocess(directory)
path = os.path.join(directory, "metrics.arena")
jobs = metrics.Counter("mp_jobs", "Jobs done.", ["worker"])
lat = metrics.Histogram("mp_latency_seconds", "Latency.", buckets=[0.5, 1])
live = metrics.Gauge("mp_live_workers", "Live workers.", multiprocess_mode="livesum")
peak = metrics.Gauge("mp_peak", "Largest worker index.", multiprocess_mode="max")
sizes = metrics.Summary("mp_size_bytes", "Sizes.")
done_id = arena.record("test:done", 1, "shared")


def worker(k: int) -> None:
    a = metrics._mp_arena  # the same object: after fork it holds the child's own slot
    assert a is not None and a.slot != 0
    live.inc()
    child = jobs.labels(str(k))
    for i in range(n if k else 1000 * n):  # worker 0 runs until it is killed
        child.inc()
        a.add(done_id, 0, 1)  # counted only after the increment returned
        lat.observe(0.25)
        sizes.observe(i + 1)
    peak.set(k)
    if k == 1:
        a.close()  # a clean exit folds its own slot
    os._exit(0)  # the others: no clean-up at all


def scrape_total(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(prefix))


kills = 0
out: dict[str, list[float]] = {"st_size": [], "st_blocks": [], "records": [], "scrape_s": []}
rnd = random.Random(11)
for r in range(rounds):
    pids = []
    for k in range(4):
        pid = os.fork()
        if pid == 0:
            try:
                worker(k)
            finally:
                os._exit(1)
        pids.append(pid)
    time.sleep(rnd.uniform(0.001, 0.02))
    os.kill(pids[0], signal.SIGKILL)  # mid-write (or just after the end)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            kills += 1
        elif os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"worker failed: {status}")
    t0 = time.perf_counter()
    text = metrics.generate_latest().decode()
    out["scrape_s"].append(time.perf_counter() - t0)
    st = os.stat(path)
    out["st_size"].append(st.st_size)
    out["st_blocks"].append(st.st_blocks * 512)
    out["records"].append(arena.stats()["records"])

# PID reuse: a slot that names our own pid with another start time belongs to
# a dead process whose pid we reuse -- it must be folded, exactly once.
start = _core.Arena.proc_start_time(os.getpid())
rec = arena.record('["s","mp_jobs","counter",["reuse"]]', 1, "add")
jobs.labels("reuse")
forged = arena._forge_slot(os.getpid(), start + 1)
arena._slot_add_f64(rec, forged, 0, 5.0)

# any worker serves all: a fresh child scrapes, the parent compares
rfd, wfd = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(rfd)
    body = metrics.generate_latest()
    os.write(wfd, body)
    os._exit(0)
os.close(wfd)
chunks = []
while True:
    b = os.read(rfd, 1 << 16)
    if not b:
        break
    chunks.append(b)
os.waitpid(pid, 0)
child_text = b"".join(chunks).decode()
text = metrics.generate_latest().decode()
stats = arena.stats()
print(json.dumps({
    **out,
    "kills": kills,
    "done": arena.load(done_id, 0),
    "jobs_total": scrape_total(text, "mp_jobs_total{worker=\"") - 5.0,
    "reuse": scrape_total(text, 'mp_jobs_total{worker="reuse"}'),
    "child_jobs_total": scrape_total(child_text, "mp_jobs_total{worker=\"") - 5.0,
    "lat_count": scrape_total(text, "mp_latency_seconds_count"),
    "size_count": scrape_total(text, "mp_size_bytes_count"),
    "live": scrape_total(text, "mp_live_workers "),
    "peak": scrape_total(text, "mp_peak "),
    "folds": stats["folds"],
    "live_slots": stats["live_slots"],
    "overflow": stats["overflow"],
    "rounds": rounds,
    "n": n,
}))
