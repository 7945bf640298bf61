"""`python worker.py` / `jobline-worker`: settings from flags and the environment, signals, and the run."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from .validation import NAME_RE, NAME_RULE
from .tasks import load_handlers
from .worker import Worker, WorkerSettings

log = logging.getLogger("jobline.worker")


def parse_settings(argv: Sequence[str] | None = None) -> WorkerSettings:
    env = os.environ
    parser = argparse.ArgumentParser(description="Run Jobline jobs from Redis.")
    parser.add_argument("--queue", action="append", dest="queues", help="queue to serve; repeatable (env JOBLINE_QUEUES, comma-separated; default: default)")
    parser.add_argument("--concurrency", type=int, default=int(env.get("JOBLINE_CONCURRENCY", 5)), help="jobs run at once (env JOBLINE_CONCURRENCY; default 5)")
    parser.add_argument("--redis-url", default=env.get("REDIS_URL", WorkerSettings.redis_url), help="Redis URL (env REDIS_URL)")
    parser.add_argument("--tasks", action="append", dest="task_modules", help="module with handlers (a TASKS dict, else its public functions, async or plain); repeatable (env JOBLINE_TASKS, comma-separated)")
    parser.add_argument("--lease-ms", type=int, default=int(env.get("JOBLINE_LEASE_MS", WorkerSettings.lease_ms)), help="silence after which a worker counts as dead and its jobs are recovered (env JOBLINE_LEASE_MS; default 10000)")
    parser.add_argument("--grace", type=float, default=float(env.get("JOBLINE_GRACE_S", WorkerSettings.grace_s)), help="seconds active jobs may finish on SIGTERM (env JOBLINE_GRACE_S; default 25)")
    parser.add_argument("--redis-cluster", action="store_true", default=env.get("REDIS_CLUSTER", "").lower() in ("1", "true", "yes"), help="REDIS_URL is a node of a Redis Cluster (env REDIS_CLUSTER=1)")
    args = parser.parse_args(argv)
    queues = args.queues or [q for q in env.get("JOBLINE_QUEUES", "default").split(",") if q]
    modules = args.task_modules or [m for m in env.get("JOBLINE_TASKS", "").split(",") if m]
    for queue in queues:
        if not NAME_RE.fullmatch(queue):
            parser.error(f"invalid queue name {queue!r}: {NAME_RULE}")
    if not 1 <= args.concurrency <= 1000:
        parser.error("--concurrency must be between 1 and 1000")
    if args.lease_ms < 500:
        parser.error("--lease-ms must be at least 500")
    return WorkerSettings(
        redis_url=args.redis_url,
        redis_cluster=args.redis_cluster,
        queues=tuple(dict.fromkeys(queues)),
        concurrency=args.concurrency,
        task_modules=tuple(modules),
        lease_ms=args.lease_ms,
        grace_s=args.grace,
    )


async def serve(settings: WorkerSettings) -> None:
    worker = Worker(settings, load_handlers(settings.task_modules))
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal() -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            worker.request_stop()
        else:  # a second Ctrl-C: no more grace
            log.warning("second signal: putting active jobs back now")
            for job_id in list(worker.running):
                worker.stop_job(job_id, "shutdown")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    await worker.run()


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_settings(argv)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # --tasks modules relative to where the worker is started
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(settings))
