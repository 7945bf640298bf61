"""The server at its edges (issue 17): malformed requests answered in the JSON error shape without
repeating a token, header and body time limits, Redis connections bounded under bursts, and the
open-file limit. The real runner on a real socket throughout, and a real Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as redis
from aiohttp import web

from jobline import security
from jobline import server
from jobline import serving
from jobline.server import Settings, create_app
from tests.conftest import ROOT, free_port, wait_until

SECRET = "s3cr3t-t0ken-4f1c9a"


@dataclass
class Served:
    app: web.Application
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(redis_url: str) -> AsyncIterator[Serve]:
    """The app behind the real runner and a TCP site, as `python server.py` serves it."""
    runners: list[web.AppRunner] = []

    async def start(**settings: Any) -> Served:
        app = create_app(Settings(redis_url=redis_url, **settings))
        runner = serving.GuardedAppRunner(app, access_log_class=security.AccessLogger)
        await runner.setup()
        runners.append(runner)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return Served(app, port)

    yield start
    for runner in runners:
        await runner.cleanup()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return Answer(int(status_line.split()[1]), headers, body)


async def exchange(port: int, request: bytes, timeout: float = 5) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


MALFORMED = {
    "request line over 32 KiB": f"GET /api/jobs?access_token={SECRET}{'a' * 33 * 1024} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "HTTP/9.9": f"GET /api/jobs?access_token={SECRET} HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n",
    "a space in the target": f"GET /api/jobs {SECRET} x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "Authorization over 8 KiB": f"GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {SECRET}{'x' * 9000}\r\n\r\n",
}


@pytest.mark.parametrize("request_text", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_request_gets_a_json_error_that_repeats_no_token(
    serve: Serve, caplog: pytest.LogCaptureFixture, request_text: str
) -> None:
    caplog.set_level(logging.DEBUG)
    served = await serve()
    raw = await exchange(served.port, request_text.encode())
    answer = parse(raw)
    assert 400 <= answer.status < 500, raw[:300]
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["error"]["code"] in ("bad_request", "too_large")
    assert SECRET not in raw.decode("latin-1")
    assert SECRET not in caplog.text


async def test_a_non_ascii_authorization_is_a_401_not_a_500(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    served = await serve(api_token="secret")
    request = b"GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer secret\xff\r\nConnection: close\r\n\r\n"
    answer = parse(await exchange(served.port, request))
    assert answer.status == 401
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["error"]["code"] == "unauthorized"
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_connection_whose_headers_do_not_arrive_in_time_is_closed(serve: Serve) -> None:
    served = await serve(header_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    started = time.monotonic()
    writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
    try:
        # meanwhile, another connection is served as usual
        other = parse(await exchange(served.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"))
        assert other.status == 200
        assert await asyncio.wait_for(reader.read(), 2.5) == b""
    finally:
        writer.close()
    assert 0.4 <= time.monotonic() - started < 2


async def test_a_body_that_does_not_arrive_in_time_is_a_408_and_creates_nothing(serve: Serve) -> None:
    served = await serve(body_timeout_s=0.5)
    head = b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    started = time.monotonic()
    raw = await exchange(served.port, head + b'{"name": "', timeout=2.5)  # then nothing: read() ends when it closes
    answer = parse(raw)
    assert answer.status == 408
    assert answer.json()["error"]["code"] == "request_timeout"
    assert time.monotonic() - started < 2
    async with aiohttp.ClientSession() as http, http.get(f"{served.url}/api/jobs") as response:
        assert (await response.json())["total"] == 0


async def client_count(redis_client: redis.Redis) -> int:
    return len(await redis_client.client_list())


async def burst(url: str, n: int) -> list[int]:
    """`n` requests at once, each on a connection of its own."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one() -> int:
            async with http.get(url) as response:
                await response.read()
                return response.status

        return await asyncio.gather(*(one() for _ in range(n)))


async def test_a_burst_of_health_checks_costs_redis_a_ping_a_second_on_one_connection(
    serve: Serve, redis_client: redis.Redis
) -> None:
    served = await serve()
    assert await burst(f"{served.url}/healthz", 1) == [200]  # its connection is open (and checked)
    before = await client_count(redis_client)
    await redis_client.config_resetstat()
    started = time.monotonic()
    statuses = await burst(f"{served.url}/healthz", 300)
    assert statuses == [200] * 300
    pings = (await redis_client.info("commandstats")).get("cmdstat_ping", {}).get("calls", 0)
    assert pings <= 1 + int(time.monotonic() - started)  # answers from a result at most 1 s old
    assert await client_count(redis_client) - before <= 2


async def test_a_burst_of_api_calls_waits_for_the_pool_and_its_idle_connections_are_closed(
    serve: Serve, redis_client: redis.Redis
) -> None:
    served = await serve()
    before = await client_count(redis_client)
    await redis_client.client_pause(500)  # Redis stalls for a moment: the calls pile up meanwhile
    statuses = await burst(f"{served.url}/api/jobs", 300)
    assert statuses == [200] * 300  # a busy pool is not a 503
    assert await client_count(redis_client) - before <= server.API_POOL_SIZE + 3
    await served.app[server.REDIS].connection_pool.close_idle(0)  # type: ignore[attr-defined]
    await wait_until(lambda: _near(client_count(redis_client), before), timeout=5)


async def _near(count: Awaitable[int], baseline: int) -> bool:
    return abs(await count - baseline) <= 3


# --- at the open-file limit: the real `python server.py`, limited to 256 descriptors -------------

FD_LIMIT = 256
FD_LIMIT_LINE = "at the open-file limit"


class ServerProcess:
    def __init__(self, redis_url: str, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if k not in ("API_TOKEN", "MAX_STREAMS", "ALLOWED_HOSTS")}
        cmd = [sys.executable, str(ROOT / "server.py"), "--port", str(self.port), "--redis-url", redis_url]
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT)),
            )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def fd_limited_server(redis_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:  # this test holds ~600 sockets of its own
        if hard != resource.RLIM_INFINITY and hard < 2048:
            pytest.skip(f"the test process's own open-file limit ({hard}) is too low")
        resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
    proc = ServerProcess(redis_url, tmp_path / "server.log")
    yield proc
    proc.stop()


async def get_status(url: str) -> int:
    """A GET on a fresh connection, so it needs the server to accept one."""
    timeout = aiohttp.ClientTimeout(total=2)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as response:
            return response.status
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return 0


async def test_at_the_open_file_limit_the_server_refuses_and_says_so_once_a_second(
    fd_limited_server: ServerProcess,
) -> None:
    srv = fd_limited_server
    await wait_until(lambda: _answers_200(srv.url + "/healthz"), timeout=10)
    streams: list[aiohttp.ClientResponse] = []
    silent: list[socket.socket] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        try:
            statuses = []
            for _ in range(200):  # one after another: each either holds a stream open or is refused
                response = await asyncio.wait_for(http.get(srv.url + "/api/jobs/stream"), 5)
                statuses.append(response.status)
                if response.status == 200:
                    streams.append(response)
                else:
                    assert response.status == 503 and response.headers.get("Retry-After"), response.status
                    response.release()
            assert 0 < statuses.count(200) <= (FD_LIMIT - 64) // 2  # the rest were refused
            assert await get_status(srv.url + "/api/jobs") == 200  # the cap left room for the API

            for _ in range(300):  # connections that send nothing, until accept() fails
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", srv.port))
                silent.append(sock)
            await wait_until(lambda: FD_LIMIT_LINE in srv.log(), timeout=5)
            first = time.monotonic()
            await asyncio.sleep(3)  # the log's rate over a few seconds at the limit
            lines = [line for line in srv.log().splitlines() if FD_LIMIT_LINE in line]
            assert 1 <= len(lines) <= time.monotonic() - first + 1.5, lines
        finally:
            for sock in silent:
                sock.close()
            for response in streams:
                response.close()

    await wait_until(lambda: _answers_200(srv.url + "/healthz"), timeout=10)
    assert "Traceback" not in srv.log()
    assert srv.proc.poll() is None


async def _answers_200(url: str) -> bool:
    return await get_status(url) == 200
