"""GET /api/jobs/stream: events, order, lossless resume, reset, pings, and no leaked connections."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import pytest

from jobline.server import Settings, create_app
from jobline.store import JobStore
from tests.conftest import create_job, stream_listeners, wait_until
from tests.sse import SSEReader


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> Any:
    """The app with a short ping interval, so idle and dead connections show up quickly."""
    return await aiohttp_client(create_app(replace(settings, sse_ping_s=0.2)))


async def open_stream(client: Any, last_event_id: str | None = None, query: str = "") -> SSEReader:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    response = await client.get(f"/api/jobs/stream{query}", headers=headers)
    assert response.status == 200
    return SSEReader(response)


async def test_stream_is_event_stream_with_retry_hint(client: Any) -> None:
    stream = await open_stream(client)
    assert stream.response.headers["Content-Type"].startswith("text/event-stream")
    await create_job(client)
    await stream.next()
    assert stream.retry and stream.retry > 0


async def test_created_job_is_announced_with_full_job(client: Any) -> None:
    stream = await open_stream(client)
    job = await create_job(client, name="announce me", data={"steps": 2})
    event = await stream.next()
    assert event.event == "job"
    assert event.id
    assert event.json()["job"] == job


async def test_events_of_a_job_arrive_in_rev_order_from_created_to_completed(
    client: Any, start_worker: Any
) -> None:
    stream = await open_stream(client)
    job = await create_job(client, data={"steps": 4, "stepMs": 20})
    await start_worker()
    events = await stream.until(lambda e: e.event == "job" and e.json()["job"]["status"] == "completed")
    jobs = [e.json()["job"] for e in events if e.event == "job" and e.json()["job"]["id"] == job["id"]]
    revs = [j["rev"] for j in jobs]
    assert revs == sorted(revs) and len(set(revs)) == len(revs)
    assert [j["status"] for j in jobs][0] == "waiting"
    assert "active" in [j["status"] for j in jobs]
    progress = [j["progress"] for j in jobs]
    assert progress == sorted(progress) and progress[-1] == 100
    assert [j["action"] for j in jobs if j["status"] == "active" and j["progress"]][0] == "Navigating to page"


async def test_event_ids_are_distinct_and_each_resumes_after_its_event(client: Any) -> None:
    stream = await open_stream(client)
    for i in range(5):
        await create_job(client, name=f"job {i}")
    events = await stream.collect(5)
    assert len({e.id for e in events}) == 5
    for i, event in enumerate(events):
        resumed = await open_stream(client, query=f"?lastEventId={quote(event.id)}")
        rest = await resumed.collect(4 - i) if i < 4 else []
        assert [e.id for e in rest] == [e.id for e in events[i + 1 :]]
        resumed.response.close()


async def test_deleted_job_is_announced_as_removed(client: Any) -> None:
    stream = await open_stream(client)
    job = await create_job(client)
    await stream.next()
    assert (await client.delete(f"/api/jobs/{job['id']}")).status == 204
    event = await stream.next()
    assert event.event == "job-removed"
    assert event.json() == {"id": job["id"]}


async def test_resume_replays_exactly_the_missed_events_then_goes_live(client: Any) -> None:
    stream = await open_stream(client)
    first = await create_job(client, name="seen")
    seen = await stream.next()
    stream.response.close()

    missed_a = await create_job(client, name="missed a")
    missed_b = await create_job(client, name="missed b")
    await client.post(f"/api/jobs/{missed_a['id']}/cancel", json={})

    resumed = await open_stream(client, last_event_id=seen.id)
    replayed = await resumed.collect(3)
    assert [(e.json()["job"]["id"], e.json()["job"]["status"]) for e in replayed] == [
        (missed_a["id"], "waiting"),
        (missed_b["id"], "waiting"),
        (missed_a["id"], "cancelled"),
    ]
    live = await create_job(client, name="live")
    event = await resumed.next()
    assert event.json()["job"]["id"] == live["id"]  # no duplicate of the replayed ones, no gap
    assert first["id"] not in [e.json()["job"]["id"] for e in replayed]


async def test_resume_accepts_the_id_as_a_query_parameter(client: Any) -> None:
    stream = await open_stream(client)
    await create_job(client)
    seen = await stream.next()
    stream.response.close()
    missed = await create_job(client)
    resumed = await open_stream(client, query=f"?lastEventId={seen.id}")
    assert (await resumed.next()).json()["job"]["id"] == missed["id"]


@pytest.mark.parametrize("bad_id", ["garbage", "99999999999999-0", "1-x", ""])
async def test_invalid_or_unknown_last_event_id_gets_reset(client: Any, bad_id: str) -> None:
    await create_job(client)
    stream = await open_stream(client, query=f"?lastEventId={bad_id}")
    if bad_id == "":
        return  # an empty id is no resume at all: a plain live stream
    event = await stream.next()
    assert event.event == "reset"


async def test_reset_carries_the_latest_event_id_and_resuming_from_it_is_not_reset_again(
    client: Any, store: JobStore
) -> None:
    await create_job(client)
    await create_job(client)
    stream = await open_stream(client, last_event_id="garbage")
    reset = await stream.next()
    assert reset.event == "reset"
    assert reset.id == "default=" + (await store.redis.xrevrange(store.keys.event_log("default"), count=1))[0][0]
    stream.response.close()

    resumed = await open_stream(client, last_event_id=reset.id)
    job = await create_job(client)
    event = await resumed.next()
    assert event.event == "job" and event.json()["job"]["id"] == job["id"]  # no second reset


async def test_reset_on_an_empty_log_carries_id_0_0_and_resuming_from_it_is_not_reset_again(client: Any) -> None:
    stream = await open_stream(client, last_event_id="garbage")
    reset = await stream.next()
    assert (reset.event, reset.id) == ("reset", "0-0")
    stream.response.close()

    resumed = await open_stream(client, last_event_id=reset.id)
    job = await create_job(client)
    event = await resumed.next()
    assert event.event == "job" and event.json()["job"]["id"] == job["id"]


async def test_id_older_than_the_retained_history_gets_reset(client: Any, store: JobStore) -> None:
    stream = await open_stream(client)
    await create_job(client)
    oldest = await stream.next()
    stream.response.close()
    # 10,300 more events push the first one out of the capped history
    job = await create_job(client)
    from jobline.models import Priority

    for i in range(5150):
        await store.set_priority(job["id"], Priority.HIGH if i % 2 == 0 else Priority.NORMAL)
        await store.set_priority(job["id"], Priority.NORMAL if i % 2 == 0 else Priority.HIGH)
    resumed = await open_stream(client, last_event_id=oldest.id)
    assert (await resumed.next()).event == "reset"


async def test_idle_stream_sends_pings(client: Any) -> None:
    stream = await open_stream(client)
    with pytest.raises(asyncio.TimeoutError):
        await stream.next(timeout=1)
    assert "ping" in stream.comments


async def test_fifty_dropped_clients_leave_no_redis_connections(client: Any, redis_client: Any) -> None:
    streams = [await open_stream(client) for _ in range(50)]
    await wait_until(lambda: _count_is(redis_client, 50))
    for stream in streams:
        stream.response.close()
    await wait_until(lambda: _count_is(redis_client, 0), timeout=10)


async def _count_is(redis_client: Any, expected: int) -> bool:
    return await stream_listeners(redis_client) == expected


async def test_server_stops_promptly_with_streams_open(redis_url: str) -> None:
    """aiohttp waits for open handlers on shutdown: every stream must end by itself within a second."""
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT, free_port

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "server.py"), "--port", str(port), "--redis-url", redis_url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            await wait_until(lambda: _healthy(session, port), timeout=15)
            streams = [await session.get(f"http://127.0.0.1:{port}/api/jobs/stream") for _ in range(10)]
            server.send_signal(signal.SIGTERM)
            started = time.monotonic()
            while server.poll() is None and time.monotonic() - started < 10:
                await asyncio.sleep(0.05)
            assert server.poll() == 0, "the server did not exit within 10 s of SIGTERM"
            assert time.monotonic() - started < 5
            for response in streams:
                response.close()
    finally:
        server.kill()
        server.wait()


async def _healthy(session: Any, port: int) -> bool:
    try:
        async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
            return response.status == 200
    except OSError:
        return False
