"""Serving many viewers: `python server.py --processes N` (real subprocesses sharing the port), and
a dashboard stream's ids across many queues."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from jobline.server import Settings, create_app
from tests.conftest import ROOT, create_job, free_port, wait_until
from tests.sse import SSEReader

PER_PROCESS = 3  # MAX_STREAMS of each process


class Server:
    """`python server.py --processes 2` in a session of its own, with its log."""

    def __init__(self, proc: asyncio.subprocess.Process, base: str) -> None:
        self.proc, self.base = proc, base
        self.log: list[str] = []

    async def read_until(self, pattern: str, count: int = 1, timeout: float = 20) -> list[re.Match[str]]:
        """Log lines until `count` of them match; their matches."""
        matches = [m for line in self.log if (m := re.search(pattern, line))]
        async with asyncio.timeout(timeout):
            while len(matches) < count:
                assert self.proc.stdout is not None
                line = (await self.proc.stdout.readline()).decode()
                assert line, f"the server exited: {''.join(self.log)}"
                self.log.append(line)
                if m := re.search(pattern, line):
                    matches.append(m)
        return matches

    async def exit_status(self, timeout: float = 15) -> int:
        async with asyncio.timeout(timeout):
            assert self.proc.stdout is not None
            self.log += (await self.proc.stdout.read()).decode().splitlines(keepends=True)
            return await self.proc.wait()


@pytest.fixture
async def server(redis_url: str, on_cluster: bool) -> AsyncIterator[Server]:
    port = free_port()
    args = ["--port", str(port), "--redis-url", redis_url, "--processes", "2", *(["--redis-cluster"] if on_cluster else [])]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "server.py"), *args,
        env={**os.environ, "MAX_STREAMS": str(PER_PROCESS)}, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    running = Server(proc, f"http://127.0.0.1:{port}")
    try:
        yield running
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


async def child_pids(server: Server) -> list[int]:
    """The two serving processes, from their start-up lines, once both listen."""
    started = await server.read_until(r"process (\d) of 2, pid (\d+)", count=2)
    assert sorted(m[1] for m in started) == ["1", "2"]
    return [int(m[2]) for m in started]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def open_streams(session: aiohttp.ClientSession, url: str, wanted: int, timeout: float = 10) -> list[SSEReader]:
    """Open streams until `wanted` are open. The kernel picks the process for each new connection,
    and one at its cap answers 503 (until it notices, within a second, that a stream was closed):
    this may take a few attempts."""
    opened: list[SSEReader] = []
    async with asyncio.timeout(timeout):
        while len(opened) < wanted:
            response = await session.get(url)
            if response.status == 200:
                opened.append(SSEReader(response))
            else:
                assert response.status == 503
                response.close()
                await asyncio.sleep(0.01)
    return opened


async def test_two_processes_share_the_port_each_with_its_own_streams_and_stop_on_sigterm(server: Server) -> None:
    pids = await child_pids(server)
    # a new connection per request, for the kernel to place (a kept-alive one stays with its process)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        # Each process takes at most PER_PROCESS streams: 2 x PER_PROCESS open means both serve
        # the port, each with subscriptions of its own; one more is refused by whichever it reaches.
        dashboards = await open_streams(session, f"{server.base}/api/jobs/stream", 2 * PER_PROCESS)
        refused = await session.get(f"{server.base}/api/jobs/stream")
        assert refused.status == 503
        refused.close()

        async with session.post(f"{server.base}/api/jobs", json={"name": "seen everywhere"}) as response:
            assert response.status == 201
            job = await response.json()
        for stream in dashboards:  # whichever process took the request, every stream has its event
            assert (await stream.next()).json()["job"]["id"] == job["id"]

        dashboards.pop().response.close()  # a slot frees up in one process: a job's stream takes it
        [job_stream] = await open_streams(session, f"{server.base}/api/jobs/{job['id']}/stream", 1)
        async with session.delete(f"{server.base}/api/jobs/{job['id']}") as response:
            assert response.status == 204
        assert (await job_stream.next()).event == "job-removed"

        os.kill(server.proc.pid, signal.SIGTERM)  # streams still open: they end, and so does each process
        assert await server.exit_status() == 0, "".join(server.log)
    assert not any(alive(pid) for pid in pids)


async def test_ctrl_c_stops_every_process(server: Server) -> None:
    pids = await child_pids(server)
    os.killpg(server.proc.pid, signal.SIGINT)  # what a terminal sends to the whole group
    assert await server.exit_status() == 0, "".join(server.log)
    assert not any(alive(pid) for pid in pids)


async def test_the_processes_stop_when_the_parent_is_killed(server: Server) -> None:
    pids = await child_pids(server)
    server.proc.kill()  # SIGKILL: no chance to pass anything on
    await server.proc.wait()
    await wait_until(lambda: not any(alive(pid) for pid in pids), timeout=15)


async def test_one_process_ending_stops_the_others_and_fails(server: Server) -> None:
    pids = await child_pids(server)
    os.kill(pids[0], signal.SIGKILL)
    assert await server.exit_status() == 1
    assert not alive(pids[1])


# == a dashboard's ids over many queues ==============================================================
@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> Any:
    return await aiohttp_client(create_app(settings))


async def test_ids_over_many_queues_name_each_queues_position_and_resume_exactly(client: Any) -> None:
    queues = [f"q{i:02d}" for i in range(40)]
    for queue in queues:  # the queues exist before the stream starts
        await create_job(client, queue=queue)
    response = await client.get("/api/jobs/stream")
    stream = SSEReader(response)
    jobs = [await create_job(client, queue=queue) for queue in reversed(queues)]
    events = await stream.collect(len(jobs))  # across queues, order follows arrival
    assert sorted(e.json()["job"]["id"] for e in events) == sorted(j["id"] for j in jobs)
    last = dict(part.split("=") for part in events[-1].id.split(","))  # type: ignore[union-attr]
    assert sorted(last) == queues  # one position per queue, in queue order
    assert [part.split("=")[0] for part in events[-1].id.split(",")] == queues  # type: ignore[union-attr]
    response.close()

    middle = events[19]
    resumed = SSEReader(await client.get("/api/jobs/stream", headers={"Last-Event-ID": middle.id}))  # type: ignore[dict-item]
    replayed = await resumed.collect(20)  # queue by queue: across queues, order follows arrival
    # exactly what came after it on the stream (on a cluster, events of different shards may
    # arrive in another order than they were published)
    assert sorted(e.json()["job"]["id"] for e in replayed) == sorted(e.json()["job"]["id"] for e in events[20:])
    assert replayed[-1].id == events[-1].id  # the same place
