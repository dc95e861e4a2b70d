"""Gauge modes, migration of existing metrics and the environment switch of
multi-worker mode, for tests/test_metrics_multiprocess.py (fresh interpreter,
AMULET_METRICS_DIR set by the test).  Prints one JSON object."""

from __future__ import annotations

import json
import os
import time

from amulet_native import metrics

assert metrics.multiprocess_dir() == os.environ["AMULET_METRICS_DIR"]
modes = ["sum", "livesum", "max", "livemax", "min", "livemin", "mostrecent", "livemostrecent"]
gauges = {m: metrics.Gauge(f"g_{m}", m, multiprocess_mode=m) for m in modes}
hist = metrics.Histogram("h_seconds", "h", ["k"], buckets=[1, 2])


def child(value: float, stay: bool) -> int:
    pid = os.fork()
    if pid == 0:
        for g in gauges.values():
            g.set(value)
        hist.labels("x").observe(value)
        if stay:
            time.sleep(30)
        os._exit(0)
    return pid


for g in gauges.values():
    g.set(5.0)  # the parent's own value
dead = [child(v, False) for v in (1.0, 9.0)]
for pid in dead:
    os.waitpid(pid, 0)
time.sleep(0.05)
alive = child(3.0, True)  # set last: the most recent value
time.sleep(0.5)
reg = metrics.REGISTRY
values = {m: reg.get_sample_value(f"g_{m}") for m in modes}
count = reg.get_sample_value("h_seconds_count", {"k": "x"})
os.kill(alive, 9)
os.waitpid(alive, 0)
after = {m: reg.get_sample_value(f"g_{m}") for m in modes}
print(json.dumps({"values": values, "after": after, "count": count}))
