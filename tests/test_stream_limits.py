"""The stream under pressure (issue 17): slow readers that Redis cuts off, killed subscriptions, a
cursor the capped log overtook, and the cap on open streams. Real Redis throughout."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import redis.asyncio as redis

from jobline import stream
from jobline.connections import connect
from jobline.keys import Keys
from jobline.models import Priority
from jobline.server import Settings, create_app
from jobline.store import JobStore
from tests.conftest import create_job, wait_until
from tests.sse import Event, SSEReader

EVENTS = Keys().event_log("default")  # the tests' jobs are all in the default queue


@pytest.fixture
async def client(aiohttp_client: Any, redis_url: str) -> Any:
    return await aiohttp_client(create_app(Settings(redis_url=redis_url, sse_ping_s=0.5)))


async def open_stream(client: Any, last_event_id: str | None = None) -> SSEReader:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    response = await client.get("/api/jobs/stream", headers=headers)
    assert response.status == 200, await response.text()
    return SSEReader(response)


async def logged_ids(redis_client: redis.Redis, after: str) -> list[str]:
    """The SSE ids of the events logged after `after` (an SSE id)."""
    position = after.removeprefix("default=")
    return [f"default={event_id}" for event_id, _ in await redis_client.xrange(EVENTS, min=f"({position}")]


async def read_through(reader: SSEReader, last_id: str, timeout: float = 30) -> list[Event]:
    """Every event up to and including `last_id` (events arrive in id order)."""
    events = await reader.until(lambda e: e.id == last_id or e.event == "reset", timeout=timeout)
    assert events[-1].event != "reset", "the stream was reset: it lost its place"
    return events


async def pubsub_ids(redis_client: redis.Redis) -> set[str]:
    return {c["id"] for c in await redis_client.client_list(_type="pubsub")}


def with_the_loop_blocked(work: Callable[[JobStore], Awaitable[Any]], redis_url: str) -> Any:
    """Run `work` on a store of its own in another thread while this thread's event loop, and the
    app's stream with it, stands still: whatever Redis publishes meanwhile waits unread in the
    stream's socket, and the stream sees a killed subscription only after all of it."""
    outcome: list[Any] = []

    async def run() -> None:
        client = connect(redis_url)
        try:
            outcome.append(await work(JobStore(client)))
        except Exception as error:  # noqa: BLE001 - handed to the test's thread
            outcome.append(error)
        finally:
            await client.aclose()

    thread = threading.Thread(target=asyncio.run, args=(run(),))
    thread.start()
    thread.join()  # blocks the loop on purpose
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


async def flip_priority(store: JobStore, job_id: str, times: int) -> None:
    for i in range(times):
        await store.set_priority(job_id, Priority.HIGH if i % 2 == 0 else Priority.NORMAL)


# == no gap, even for slow readers ===================================================================
def _small_receive_buffer(addr_info: Any) -> socket.socket:
    """A client socket with a small receive window (set before connect), so a reader that stops
    reading makes the server's writes wait at once instead of filling megabytes of kernel buffers."""
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


@pytest.fixture
async def small_output_buffer(redis_client: redis.Redis) -> AsyncIterator[None]:
    """Redis cuts a pub/sub subscriber that lags by 256 KiB (its default is 32 MiB)."""
    original = (await redis_client.config_get("client-output-buffer-limit"))["client-output-buffer-limit"]
    await redis_client.config_set("client-output-buffer-limit", "pubsub 256kb 128kb 1")
    try:
        yield
    finally:
        await redis_client.config_set("client-output-buffer-limit", original)


async def test_a_slow_reader_that_redis_cuts_off_still_gets_every_event_once_in_order(
    client: Any, redis_client: redis.Redis, store: JobStore, small_output_buffer: None
) -> None:
    async with asyncio.timeout(90), aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(socket_factory=_small_receive_buffer)
    ) as session:
        reader = SSEReader(await session.get(client.make_url("/api/jobs/stream")))
        job = await create_job(client, data={"blob": "x" * 3000})  # ~3.3 KB an event
        start = await reader.next()
        assert start.json()["job"]["id"] == job["id"]
        (subscription,) = await pubsub_ids(redis_client)

        # The reader stops reading: the stream's writes wait, it stops reading its subscription,
        # and Redis cuts it at 256 KiB behind, with events it already sent still unread in the socket.
        started = time.monotonic()
        await flip_priority(store, job["id"], 3000)
        await wait_until(lambda: cut_off(redis_client, subscription), timeout=10)
        flooded = time.monotonic() - started

        wanted = await logged_ids(redis_client, after=start.id)  # type: ignore[arg-type]
        assert len(wanted) == 3000
        received = await read_through(reader, wanted[-1])
        print(f"\nslow reader: 3000 events in {flooded:.1f} s, cut off; read back in {time.monotonic() - started:.1f} s")
        assert [e.id for e in received] == wanted  # every event, once, in order
        assert "subscription lost, resuming" in reader.comments  # it noticed the cut, and resumed


async def cut_off(redis_client: redis.Redis, subscription: str) -> bool:
    """Redis dropped the stream's first subscription (nothing else closes it while the client stays)."""
    return subscription not in await pubsub_ids(redis_client)


async def test_a_slow_reader_whose_subscription_is_killed_gets_every_event_once_in_order(
    client: Any, redis_client: redis.Redis, store: JobStore
) -> None:
    """CLIENT KILL TYPE pubsub while the stream is stuck writing to a reader that has stopped
    reading: events Redis already sent wait unread in the socket, followed by its end."""
    async with asyncio.timeout(60), aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(socket_factory=_small_receive_buffer)
    ) as session:
        reader = SSEReader(await session.get(client.make_url("/api/jobs/stream")))
        job = await create_job(client, data={"blob": "x" * 3000})
        start = await reader.next()

        flips = 0
        while not await subscription_lagging(redis_client):  # the stream has stopped reading Redis
            assert flips < 3000, "the stream kept up with 3000 events its reader never read"
            await flip_priority(store, job["id"], 50)
            flips += 50
        assert await redis_client.execute_command("CLIENT", "KILL", "TYPE", "pubsub") == 1
        await flip_priority(store, job["id"], 50)  # and more while it resubscribes

        wanted = await logged_ids(redis_client, after=start.id)  # type: ignore[arg-type]
        received = await read_through(reader, wanted[-1])
        print(f"\nkilled after {flips} events, with output waiting in Redis")
        assert [e.id for e in received] == wanted


async def subscription_lagging(redis_client: redis.Redis) -> bool:
    """Redis holds output for the stream's subscription: the socket between them is full."""
    return any(int(c["omem"]) > 0 for c in await redis_client.client_list(_type="pubsub"))


async def test_a_subscription_killed_with_events_unread_in_its_socket_loses_none(
    client: Any, redis_url: str, redis_client: redis.Redis
) -> None:
    async with asyncio.timeout(30):
        reader = await open_stream(client)
        job = await create_job(client)
        start = await reader.next()

        async def flood_then_kill(store: JobStore) -> int:
            await flip_priority(store, job["id"], 100)
            return await store.redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")

        # 100 events in the stream's socket, then the end of its subscription
        assert with_the_loop_blocked(flood_then_kill, redis_url) == 1
        wanted = await logged_ids(redis_client, after=start.id)  # type: ignore[arg-type]
        received = await read_through(reader, wanted[-1])
        assert [e.id for e in received] == wanted

        later = await create_job(client)  # and it is live again on its new subscription
        assert (await reader.next()).json()["job"]["id"] == later["id"]


async def test_a_stream_whose_place_was_trimmed_from_the_log_meanwhile_is_reset(
    client: Any, redis_url: str, redis_client: redis.Redis
) -> None:
    """A reader so slow that the log's cap overtook it cannot be replayed without a gap: reset."""
    async with asyncio.timeout(30):
        reader = await open_stream(client)
        job = await create_job(client)
        await reader.next()

        async def kill_flood_trim(store: JobStore) -> int:
            # killed first: these 100 events reach the stream only through the log, which drops them
            killed = await store.redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            await flip_priority(store, job["id"], 100)
            await store.redis.xtrim(EVENTS, maxlen=10, approximate=False)
            return killed

        assert with_the_loop_blocked(kill_flood_trim, redis_url) == 1
        reset = await reader.next()
        assert reset.event == "reset"
        assert reset.id == "default=" + (await redis_client.xrevrange(EVENTS, count=1))[0][0]
        later = await create_job(client)
        assert (await reader.next()).json()["job"]["id"] == later["id"]


# == at most MAX_STREAMS open streams ==============================================================
@pytest.fixture
async def capped(aiohttp_client: Any, redis_url: str) -> Any:
    return await aiohttp_client(create_app(Settings(redis_url=redis_url, sse_ping_s=0.5, max_streams=3)))


async def opens(client: Any) -> bool:
    response = await client.get("/api/jobs/stream")
    response.close()
    return response.status == 200


async def test_past_max_streams_a_stream_gets_503_with_retry_after_until_one_closes(capped: Any) -> None:
    readers = [await open_stream(capped) for _ in range(3)]

    refused = await capped.get("/api/jobs/stream")
    assert refused.status == 503
    assert int(refused.headers["Retry-After"]) > 0
    body = await refused.json()
    assert body["error"]["code"] == "unavailable" and body["error"]["message"]

    readers[0].response.close()  # the server notices within a second and frees the slot
    await wait_until(lambda: opens(capped), timeout=5)
    job = await create_job(capped)  # the others are unaffected
    for reader in readers[1:]:
        assert (await reader.next()).json()["job"]["id"] == job["id"]


async def test_a_stream_that_fails_frees_its_slot(capped: Any, redis_client: redis.Redis) -> None:
    readers = [await open_stream(capped) for _ in range(2)]
    await create_job(capped)
    for reader in readers:
        await reader.next()
    await redis_client.delete(EVENTS)
    # the event log with the wrong type: a stream fails before it starts (500)...
    await redis_client.set(EVENTS, "not a stream")
    try:
        assert (await capped.get("/api/jobs/stream")).status == 500
        # ...and the open ones fail on their next replay, once their subscriptions are cut
        await redis_client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        for reader in readers:
            with pytest.raises((EOFError, aiohttp.ClientPayloadError)):
                await reader.next()
    finally:
        await redis_client.delete(EVENTS)
    assert capped.server.app[stream.STREAMS].count == 0
    for _ in range(3):  # all three slots are free
        await open_stream(capped)


async def test_shutdown_ends_every_stream_and_frees_its_slot(capped: Any) -> None:
    for _ in range(3):
        await open_stream(capped)
    started = time.monotonic()
    await capped.server.close()
    assert time.monotonic() - started < 3
    assert capped.server.app[stream.STREAMS].count == 0
