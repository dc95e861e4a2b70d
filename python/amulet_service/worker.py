"""The job worker: ``python -m amulet_service.worker`` (needs REDIS_URL).

Loads the model once (RQ forks a work-horse per job from this process, which
inherits it), then serves the ``amulet`` queue.  When Redis goes away the
worker waits and reconnects instead of exiting, so jobs resume when it is back.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from .app import build_model
from .jobs import QUEUE_NAME, set_worker_model
from .settings import Settings, SettingsError

log = logging.getLogger("amulet_service.worker")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(message)s")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"amulet_service.worker: bad setting: {exc}", file=sys.stderr)
        return 2
    if not settings.redis_url:
        print("amulet_service.worker: REDIS_URL is required", file=sys.stderr)
        return 2
    import redis
    from rq import Queue, Worker

    model, gallery = build_model(settings)
    set_worker_model(model, gallery.refresh if gallery is not None else None)
    conn = redis.Redis.from_url(settings.redis_url)
    log.info("pid %d serving queue %r with %s", os.getpid(), QUEUE_NAME, model.name)
    stopping = threading.Event()
    while not stopping.is_set():
        try:
            worker = Worker([Queue(QUEUE_NAME, connection=conn)], connection=conn)
            worker.work(logging_level="WARNING")
            return 0  # stopped by a signal
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # RQ's own signal handlers are gone once work() has returned: ours
            # make a SIGTERM/SIGINT during the back-off end the worker.
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stopping.set())
            log.warning("redis unavailable (%s); retrying in 1 s", exc)
            stopping.wait(1.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
