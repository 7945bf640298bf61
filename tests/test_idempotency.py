"""The Idempotency-Key header on the create routes: replay, mismatch, concurrency, expiry.

Real HTTP (aiohttp test client on `create_app`) against a real, throwaway redis-server; the last tests
drive `@idempotent` on a small app of their own to reach the cases the jobs API cannot provoke (a 5xx,
a request still running).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as redis
from aiohttp import web

from jobline import idempotency
from jobline.api import STORE
from jobline.errors import ApiError
from jobline.http_errors import BODY_TIMEOUT, errors_as_json
from jobline.keys import Keys
from jobline.server import Settings, create_app
from jobline.store import JobStore

DAY_MS = 24 * 3600 * 1000


def redis_key(key: str, route: str = "/api/jobs") -> str:
    return Keys().idempotency(route, hashlib.sha256(key.encode()).hexdigest())


async def post(client: Any, key: str | None, body: Any, path: str = "/api/jobs") -> tuple[Any, Any]:
    headers = {} if key is None else {"Idempotency-Key": key}
    response = await client.post(path, json=body, headers=headers)
    return response, await response.json()


async def total(client: Any) -> int:
    response = await client.get("/api/jobs")
    assert response.status == 200, await response.text()
    return (await response.json())["total"]


async def test_same_key_and_body_replays_the_first_response(client: Any) -> None:
    first, created = await post(client, "order-42", {"name": "send invoice", "data": {"order": 42}})
    assert first.status == 201
    assert "Idempotent-Replayed" not in first.headers
    again, replayed = await post(client, "order-42", {"name": "send invoice", "data": {"order": 42}})
    assert again.status == 201
    assert replayed == created
    assert again.headers["Location"] == first.headers["Location"] == f"/api/jobs/{created['id']}"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content_type == "application/json"
    assert await total(client) == 1


async def test_the_same_key_with_another_body_is_422_and_creates_nothing(client: Any) -> None:
    first, _ = await post(client, "k1", {"name": "a"})
    assert first.status == 201
    response, body = await post(client, "k1", {"name": "b"})
    assert response.status == 422
    assert body["error"]["code"] == "idempotency_mismatch"
    assert "Idempotency-Key" in body["error"]["message"]
    assert await total(client) == 1


async def test_the_body_is_compared_byte_for_byte(client: Any) -> None:
    """Same JSON, other bytes (a space): another body, as the draft's fingerprint of the payload."""
    headers = {"Idempotency-Key": "bytes", "Content-Type": "application/json"}
    assert (await client.post("/api/jobs", data=b'{"name":"a"}', headers=headers)).status == 201
    response = await client.post("/api/jobs", data=b'{"name": "a"}', headers=headers)
    assert response.status == 422
    assert await total(client) == 1


async def test_concurrent_requests_with_one_key_create_one_job(client: Any) -> None:
    results = await asyncio.gather(*(post(client, "burst", {"name": "once"}) for _ in range(20)))
    assert {response.status for response, _ in results} == {201}
    assert len({body["id"] for _, body in results}) == 1
    assert sum("Idempotent-Replayed" not in response.headers for response, _ in results) == 1
    assert await total(client) == 1


async def test_without_the_header_every_request_creates(client: Any, redis_client: redis.Redis) -> None:
    for _ in range(2):
        response, _ = await post(client, None, {"name": "same"})
        assert response.status == 201
    assert await total(client) == 2
    assert await redis_client.keys("jobline:idem:*") == []


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there"])
async def test_an_invalid_key_is_400_naming_the_header(client: Any, key: str) -> None:
    response = await client.post("/api/jobs", json={"name": "a"}, headers={"Idempotency-Key": key})
    assert response.status == 400, await response.text()
    error = (await response.json())["error"]
    assert error["code"] == "validation_error"
    assert error["field"] == "Idempotency-Key"
    assert await total(client) == 0


async def test_the_longest_key_and_a_second_header(client: Any) -> None:
    response, _ = await post(client, "~" * 255, {"name": "a"})
    assert response.status == 201
    twice = [("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
    response = await client.post("/api/jobs", json={"name": "a"}, headers=twice)
    assert response.status == 400
    assert (await response.json())["error"]["field"] == "Idempotency-Key"


async def test_a_validation_error_is_stored_and_replayed(client: Any) -> None:
    """The same invalid body stays invalid: the first 400 is the answer for 24 h, like a 201."""
    first, error = await post(client, "bad", {"name": ""})
    assert first.status == 400
    assert error["error"]["code"] == "validation_error"
    again, replayed = await post(client, "bad", {"name": ""})
    assert again.status == 400
    assert replayed == error
    assert again.headers["Idempotent-Replayed"] == "true"
    fixed, _ = await post(client, "bad", {"name": "fixed"})
    assert fixed.status == 422  # a corrected body needs a new key
    assert await total(client) == 0


async def test_a_415_is_not_stored(client: Any) -> None:
    """About the envelope, not the body: the client fixes its Content-Type and retries with the key."""
    body, key = b'{"name":"a"}', {"Idempotency-Key": "ct"}
    response = await client.post("/api/jobs", data=body, headers={**key, "Content-Type": "text/plain"})
    assert response.status == 415
    response = await client.post("/api/jobs", data=body, headers={**key, "Content-Type": "application/json"})
    assert response.status == 201
    assert await total(client) == 1


async def test_the_stored_response_expires_after_24_hours(client: Any, redis_client: redis.Redis) -> None:
    response, _ = await post(client, "ttl", {"name": "a"})
    assert response.status == 201
    assert DAY_MS - 60_000 < await redis_client.pttl(redis_key("ttl")) <= DAY_MS


async def test_keys_are_per_route(client: Any) -> None:
    one, job = await post(client, "shared", {"name": "a"})
    batch, jobs = await post(client, "shared", {"jobs": [{"name": "a"}]}, path="/api/jobs/batch")
    assert (one.status, batch.status) == (201, 201)
    assert "Idempotent-Replayed" not in batch.headers
    again, replayed = await post(client, "shared", {"jobs": [{"name": "a"}]}, path="/api/jobs/batch")
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert replayed == jobs
    assert await total(client) == 2


async def test_a_request_refused_before_the_handler_is_not_stored(
    aiohttp_client: Any, settings: Settings, redis_client: redis.Redis
) -> None:
    client = await aiohttp_client(create_app(replace(settings, api_token="secret")))
    response, _ = await post(client, "auth", {"name": "a"})
    assert response.status == 401
    assert await redis_client.exists(redis_key("auth")) == 0
    response = await client.post(
        "/api/jobs", json={"name": "a"}, headers={"Idempotency-Key": "auth", "Authorization": "Bearer secret"}
    )
    assert response.status == 201


# -- the mechanism on an app of its own ----------------------------------------------------------


async def mini_client(aiohttp_client: Any, redis_client: redis.Redis, handler: Any) -> Any:
    app = web.Application(middlewares=[errors_as_json])
    app[BODY_TIMEOUT] = 5.0
    app[STORE] = JobStore(redis_client)
    app.router.add_post("/things", idempotency.idempotent(STORE)(handler))
    return await aiohttp_client(app)


async def test_a_5xx_drops_the_claim_so_a_retry_runs(aiohttp_client: Any, redis_client: redis.Redis) -> None:
    calls = []

    async def flaky(request: web.Request) -> web.Response:
        calls.append(1)
        if len(calls) == 1:
            raise ApiError(503, "unavailable", "try again")
        return web.json_response({"call": len(calls)}, status=201)

    client = await mini_client(aiohttp_client, redis_client, flaky)
    first, _ = await post(client, "k", {"x": 1}, path="/things")
    assert first.status == 503
    assert await redis_client.exists(redis_key("k", "/things")) == 0
    second, body = await post(client, "k", {"x": 1}, path="/things")
    third, replayed = await post(client, "k", {"x": 1}, path="/things")
    assert (second.status, third.status) == (201, 201)
    assert body == replayed == {"call": 2}
    assert len(calls) == 2


async def test_a_request_still_running_after_the_wait_is_409(
    aiohttp_client: Any, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idempotency, "WAIT_S", 0.2)
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"done": True}, status=201)

    client = await mini_client(aiohttp_client, redis_client, slow)
    first = asyncio.create_task(post(client, "slow", {}, path="/things"))
    await asyncio.sleep(0.05)
    marker_ttl = await redis_client.pttl(redis_key("slow", "/things"))
    assert 0 < marker_ttl <= idempotency.CLAIM_MS  # a dead server's claim goes after a minute, not a day
    waiting, body = await post(client, "slow", {}, path="/things")
    assert waiting.status == 409
    assert body["error"]["code"] == "conflict"
    mismatch, body = await post(client, "slow", {"other": 1}, path="/things")
    assert mismatch.status == 422  # a mismatch is known at once, even while the first runs
    release.set()
    response, _ = await first
    assert response.status == 201
    replayed, body = await post(client, "slow", {}, path="/things")
    assert replayed.status == 201 and body == {"done": True}
