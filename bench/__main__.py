"""`python -m bench`: run Jobline's benchmark and print a table plus one JSON document.

It starts its own redis-server (or uses --redis-url, which it FLUSHALLs between workloads), the
server and workers as subprocesses, and stops every process it started, also on Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

from .client_workloads import client_enqueue
from .flow_workloads import flow, schedules
from .harness import QUICK, Harness, Processes, Sizes, start_redis
from .http_workloads import http_enqueue, listing
from .queue_workloads import memory_per_job, w1_drain_noop, w2_drain_sleep, w3_pickup_latency
from .redis_cost import redis_cost
from .report import WorkloadResult, document, dumps, table
from .search_workloads import search
from .settings_workloads import batch_create, retention
from .stream_workloads import fanout, job_streams

Workload = Callable[[Harness], Awaitable[WorkloadResult]]

WORKLOADS: dict[str, Workload] = {
    "w1": w1_drain_noop,
    "w2": w2_drain_sleep,
    "w3": w3_pickup_latency,
    "http": http_enqueue,
    "listing": listing,
    "fanout": fanout,
    "jobstreams": job_streams,
    "memory": memory_per_job,
    "client": client_enqueue,
    "rediscost": redis_cost,
    "batch": batch_create,
    "retention": retention,
    "flow": flow,
    "schedules": schedules,
    "search": search,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only", default=",".join(WORKLOADS), help=f"comma-separated workloads (default: all of {','.join(WORKLOADS)})"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: a smoke run of every code path in well under a minute"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the JSON document to PATH")
    parser.add_argument(
        "--redis-url", help="use this Redis instead of starting one (it is FLUSHALLed between workloads!)"
    )
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in WORKLOADS]
    if unknown or not args.only:
        parser.error(f"unknown workload(s) {', '.join(unknown)}: choose from {', '.join(WORKLOADS)}")
    return args


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def run(args: argparse.Namespace, sizes: Sizes, procs: Processes, meta: dict[str, Any]) -> list[WorkloadResult]:
    redis_url = args.redis_url or start_redis(procs, procs.logdir)[1]
    harness = Harness(redis_url, procs, sizes)
    results: list[WorkloadResult] = []
    try:
        info = await harness.redis.info("server")
        meta["redis"] = {"version": info["redis_version"], "started_by_bench": not args.redis_url}
        for name in args.only:
            progress(f"== {name} ...")
            t0 = time.perf_counter()
            try:
                result = await WORKLOADS[name](harness)
            except Exception as error:  # one workload failing must not stop the others
                result = WorkloadResult(name, name, error=f"{type(error).__name__}: {error}")
            result.details["wall_s"] = round(time.perf_counter() - t0, 2)
            results.append(result)
            progress(
                f"   {name}: {'ERROR ' + result.error if result.error else 'done'} in {result.details['wall_s']} s"
            )
    finally:
        await harness.close()
    return results


def headline(meta: dict[str, Any]) -> str:
    machine, redis_info = meta["machine"], meta.get("redis", {})
    text = (
        f"Jobline benchmark: {machine['cpus']} CPUs, load average {machine['load_average_at_start'][0]} at start, "
        f"Redis {redis_info.get('version', '?')}, {meta['duration_s']} s"
    )
    return text + (" (--quick: sizes too small for the targets to mean anything)" if meta["quick"] else "")


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the same clean-up as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    workdir = Path(tempfile.mkdtemp(prefix="jobline-bench-"))
    procs = Processes(workdir)
    meta: dict[str, Any] = {
        "benchmark": "jobline",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": args.quick,
        "workloads_run": args.only,
        "sizes": asdict(sizes),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    signal.signal(signal.SIGTERM, _terminate)
    t0 = time.perf_counter()
    try:
        results = asyncio.run(run(args, sizes, procs, meta))
    except KeyboardInterrupt:
        progress(f"interrupted; stopping every process the benchmark started (logs: {workdir})")
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # the clean-up itself must not be cut short
            signal.signal(sig, signal.SIG_IGN)
        procs.stop_all()
    meta["duration_s"] = round(time.perf_counter() - t0, 1)
    doc = document(results, meta)
    text = dumps(doc)
    print(headline(meta), table(results), sep="\n", end="\n\n", flush=True)
    print(text, flush=True)
    if args.json:
        Path(args.json).write_text(text + "\n")
    if doc["errors"]:
        progress(f"workload(s) failed: {', '.join(doc['errors'])}; process logs kept in {workdir}")
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
