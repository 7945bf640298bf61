"""The jobs API as the spec describes it: create, list, read, delete, and the actions on one job.

Real HTTP (aiohttp test client on `create_app`) against a real, throwaway redis-server.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import pytest

from jobline.keys import Keys
from jobline.models import API_FIELDS
from tests.conftest import create_job, wait_until, worker_registered

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FINISHED = {"completed", "failed", "cancelled"}
WORK_QUEUE = "work"  # jobs a test wants a worker to run; other jobs stay in "default", untouched


# -- helpers -------------------------------------------------------------------------------------


async def get_job(client: Any, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/jobs/{job_id}")
    assert response.status == 200, await response.text()
    return await response.json()


async def list_jobs(client: Any, query: str = "") -> dict[str, Any]:
    response = await client.get(f"/api/jobs{query}")
    assert response.status == 200, await response.text()
    return await response.json()


async def listed_ids(client: Any, query: str = "") -> list[str]:
    return [job["id"] for job in (await list_jobs(client, query))["jobs"]]


async def action(client: Any, job_id: str, name: str, **kwargs: Any) -> Any:
    return await client.post(f"/api/jobs/{job_id}/{name}", **kwargs)


async def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def without_logs(job: dict[str, Any]) -> dict[str, Any]:
    """The job as lists and events show it: without what only the single-job view has."""
    return {k: v for k, v in job.items() if k not in ("logs", "events", "state")}


def now_ms() -> int:
    return int(time.time() * 1000)


async def run_to_end(client: Any, start_worker: Any, concurrency: int = 5, **fields: Any) -> dict[str, Any]:
    """Create a job on the work queue, let a real worker run the queue until that job is finished,
    stop the worker, and return the job."""
    job = await create_job(client, queue=WORK_QUEUE, **fields)
    worker = await start_worker(queues=(WORK_QUEUE,), block_s=0.1, concurrency=concurrency)

    async def finished() -> bool:
        return (await get_job(client, job["id"]))["status"] in FINISHED

    await wait_until(finished)
    worker.request_stop()  # nothing may claim the job again (e.g. after a retry)
    await wait_until(lambda: _gone(worker))
    return await get_job(client, job["id"])


async def _gone(worker: Any) -> bool:
    return not await worker_registered(worker)


async def cancelled_job(client: Any, **fields: Any) -> dict[str, Any]:
    job = await create_job(client, **fields)
    response = await action(client, job["id"], "cancel")
    assert response.status == 200
    return await response.json()


# -- POST /api/jobs ------------------------------------------------------------------------------


async def test_create_answers_201_with_location_of_the_new_job(client: Any) -> None:
    response = await client.post("/api/jobs", json={"name": "hello"})
    assert response.status == 201
    job = await response.json()
    assert response.headers["Location"] == f"/api/jobs/{job['id']}"
    assert response.content_type == "application/json"


async def test_created_job_has_the_documented_defaults(client: Any) -> None:
    before = now_ms()
    job = await create_job(client, name="defaults")
    after = now_ms()
    assert list(job) == list(API_FIELDS)  # every field, no logs outside the single-job view
    assert ID_PATTERN.match(job["id"])
    assert job["name"] == "defaults"
    assert job["type"] == "demo"
    assert job["queue"] == "default"
    assert job["data"] == {}
    assert job["status"] == "waiting"
    assert job["priority"] == "normal"
    assert job["progress"] == 0
    assert job["action"] is None
    assert job["attemptsMade"] == 0
    assert job["maxAttempts"] == 3
    assert job["backoffMs"] == 1000
    assert job["timeoutMs"] is None
    assert before - 5000 <= job["createdAt"] <= after + 5000  # the Redis clock, same host
    for field in ("startedAt", "finishedAt", "runAt", "failedReason", "result", "workerId"):
        assert job[field] is None, field
    assert job["rev"] == 1


async def test_ids_are_url_safe_and_unique(client: Any) -> None:
    jobs = await asyncio.gather(*(create_job(client, name=f"job {i}") for i in range(20)))
    ids = [job["id"] for job in jobs]
    assert all(ID_PATTERN.match(i) for i in ids)
    assert len(set(ids)) == 20


async def test_every_create_option_is_honoured(client: Any) -> None:
    options = {
        "name": "all options",
        "type": "echo",
        "queue": "emails.v2",
        "data": {"to": ["a@example.com"], "nested": {"n": 1, "ok": True, "none": None}},
        "priority": "high",
        "maxAttempts": 7,
        "backoffMs": 250,
        "timeoutMs": 5000,
    }
    job = await create_job(client, **options)
    for field, value in options.items():
        assert job[field] == value, field
    assert job["status"] == "waiting"
    assert without_logs(await get_job(client, job["id"])) == job


async def test_zero_backoff_is_allowed(client: Any) -> None:
    job = await create_job(client, backoffMs=0)
    assert job["backoffMs"] == 0


async def test_delay_makes_the_job_delayed_until_run_at(client: Any) -> None:
    job = await create_job(client, delayMs=60_000)
    assert job["status"] == "delayed"
    assert abs(job["runAt"] - (job["createdAt"] + 60_000)) <= 50
    assert (await get_job(client, job["id"]))["status"] == "delayed"


async def test_zero_delay_means_waiting_now(client: Any) -> None:
    job = await create_job(client, delayMs=0)
    assert job["status"] == "waiting"
    assert job["runAt"] is None


# -- GET /api/jobs -------------------------------------------------------------------------------


async def test_list_is_newest_first(client: Any) -> None:
    ids = [(await create_job(client, name=f"job {i}"))["id"] for i in range(5)]
    assert await listed_ids(client) == ids[::-1]


async def test_list_echoes_total_limit_and_offset(client: Any) -> None:
    for i in range(3):
        await create_job(client, name=f"job {i}")
    body = await list_jobs(client, "?limit=2&offset=1")
    assert body["total"] == 3
    assert body["limit"] == 2
    assert body["offset"] == 1
    assert len(body["jobs"]) == 2


async def test_empty_list(client: Any) -> None:
    assert await list_jobs(client) == {"jobs": [], "total": 0, "limit": 50, "offset": 0}


async def test_listed_jobs_are_the_job_json_without_logs(client: Any) -> None:
    job = await create_job(client, name="listed", data={"k": [1, 2]})
    body = await list_jobs(client)
    assert body["jobs"] == [job]


async def test_pages_cover_every_job_once_in_order(client: Any) -> None:
    ids = [(await create_job(client, name=f"job {i}"))["id"] for i in range(30)]
    paged: list[str] = []
    for offset in range(0, 35, 7):
        body = await list_jobs(client, f"?limit=7&offset={offset}")
        assert body["total"] == 30
        assert len(body["jobs"]) == min(7, max(0, 30 - offset))
        paged += [job["id"] for job in body["jobs"]]
    assert paged == ids[::-1]


async def test_offset_past_the_end_is_an_empty_page(client: Any) -> None:
    await create_job(client)
    body = await list_jobs(client, "?offset=10")
    assert body["jobs"] == []
    assert body["total"] == 1


async def test_default_limit_is_50_and_total_counts_every_job(client: Any) -> None:
    for start in range(0, 300, 50):
        await asyncio.gather(*(create_job(client, name=f"job {i}") for i in range(start, start + 50)))
    body = await list_jobs(client)
    assert body["total"] == 300
    assert body["limit"] == 50
    assert len(body["jobs"]) == 50
    last = await list_jobs(client, "?limit=500&offset=280")
    assert last["total"] == 300 and len(last["jobs"]) == 20


async def test_limit_500_is_allowed(client: Any) -> None:
    body = await list_jobs(client, "?limit=500")
    assert body["limit"] == 500


@pytest.fixture
async def mixed_jobs(client: Any) -> dict[str, dict[str, Any]]:
    """Jobs across two queues, two types and three statuses, keyed by a short label."""
    jobs: dict[str, dict[str, Any]] = {}
    for queue in ("q1", "q2"):
        for job_type in ("alpha", "beta"):
            for status in ("waiting", "delayed", "cancelled"):
                label = f"{queue}/{job_type}/{status}"
                extra = {"delayMs": 600_000} if status == "delayed" else {}
                job = await create_job(client, name=label, queue=queue, type=job_type, **extra)
                if status == "cancelled":
                    assert (await action(client, job["id"], "cancel")).status == 200
                jobs[label] = job
    return jobs


def expected(jobs: dict[str, dict[str, Any]], queue: str = "*", job_type: str = "*", statuses: str = "*") -> list[str]:
    """Ids of the matching jobs, newest first (they were created in label order)."""
    out = []
    for label, job in jobs.items():
        q, t, s = label.split("/")
        if queue in ("*", q) and job_type in ("*", t) and (statuses == "*" or s in statuses.split(",")):
            out.append(job["id"])
    return out[::-1]


@pytest.mark.parametrize(
    ("query", "queue", "job_type", "statuses"),
    [
        ("?status=waiting", "*", "*", "waiting"),
        ("?status=delayed", "*", "*", "delayed"),
        ("?status=cancelled", "*", "*", "cancelled"),
        ("?status=completed", "*", "*", "completed"),
        ("?status=waiting,cancelled", "*", "*", "waiting,cancelled"),
        ("?status=waiting,delayed,cancelled", "*", "*", "waiting,delayed,cancelled"),
        ("?queue=q1", "q1", "*", "*"),
        ("?queue=nope", "nope", "*", "*"),
        ("?type=beta", "*", "beta", "*"),
        ("?queue=q2&type=alpha", "q2", "alpha", "*"),
        ("?status=delayed&queue=q2", "q2", "*", "delayed"),
        ("?status=waiting&type=alpha", "*", "alpha", "waiting"),
        ("?status=waiting,delayed&queue=q1&type=beta", "q1", "beta", "waiting,delayed"),
        ("?status=cancelled&queue=q2&type=beta", "q2", "beta", "cancelled"),
    ],
)
async def test_list_filters(
    client: Any, mixed_jobs: dict[str, dict[str, Any]], query: str, queue: str, job_type: str, statuses: str
) -> None:
    want = expected(mixed_jobs, queue, job_type, statuses)
    body = await list_jobs(client, query)
    assert [job["id"] for job in body["jobs"]] == want
    assert body["total"] == len(want)


async def test_filtered_list_pages_and_counts(client: Any, mixed_jobs: dict[str, dict[str, Any]]) -> None:
    want = expected(mixed_jobs, statuses="waiting,delayed")
    first = await list_jobs(client, "?status=waiting,delayed&limit=3")
    second = await list_jobs(client, "?status=waiting,delayed&limit=3&offset=3")
    assert first["total"] == second["total"] == len(want) == 8
    assert [j["id"] for j in first["jobs"] + second["jobs"]] == want[:6]


async def test_repeated_status_in_filter_counts_once(client: Any, mixed_jobs: dict[str, dict[str, Any]]) -> None:
    body = await list_jobs(client, "?status=waiting,waiting")
    assert body["total"] == len(expected(mixed_jobs, statuses="waiting"))


async def test_empty_filters_mean_no_filter(client: Any, mixed_jobs: dict[str, dict[str, Any]]) -> None:
    body = await list_jobs(client, "?status=&queue=&type=")
    assert body["total"] == len(mixed_jobs)


# -- GET /api/jobs/{id} --------------------------------------------------------------------------


async def test_get_returns_the_job_with_logs(client: Any) -> None:
    job = await create_job(client, name="one")
    got = await get_job(client, job["id"])
    assert got["logs"] == []
    assert without_logs(got) == job


async def test_get_unknown_job_is_404(client: Any) -> None:
    error = await assert_error(await client.get("/api/jobs/doesNotExist"), 404, "not_found")
    assert "job" in error["message"]


async def test_get_invalid_id_is_404(client: Any) -> None:
    await assert_error(await client.get("/api/jobs/a:b"), 404, "not_found")


# -- DELETE /api/jobs/{id} -----------------------------------------------------------------------


async def test_delete_answers_204_and_the_job_is_gone(client: Any) -> None:
    job = await create_job(client)
    keep = await create_job(client, name="keep")
    response = await client.delete(f"/api/jobs/{job['id']}")
    assert response.status == 204
    assert await response.read() == b""
    await assert_error(await client.get(f"/api/jobs/{job['id']}"), 404, "not_found")
    assert await listed_ids(client) == [keep["id"]]
    assert await listed_ids(client, "?status=waiting") == [keep["id"]]
    assert await listed_ids(client, "?queue=default&type=demo") == [keep["id"]]


async def test_delete_removes_every_key_of_the_job(client: Any, redis_client: Any) -> None:
    job = await create_job(client)
    assert (await client.delete(f"/api/jobs/{job['id']}")).status == 204
    assert [k async for k in redis_client.scan_iter(f"{Keys().job(job['id'])}*")] == []
    assert await redis_client.lrange(Keys().wait("default"), 0, -1) == []


async def test_delete_delayed_and_cancelled_jobs(client: Any) -> None:
    delayed = await create_job(client, delayMs=60_000)
    cancelled = await cancelled_job(client)
    for job in (delayed, cancelled):
        assert (await client.delete(f"/api/jobs/{job['id']}")).status == 204
    assert (await list_jobs(client))["total"] == 0


async def active_blocking_job(client: Any, start_worker: Any) -> tuple[dict[str, Any], Any]:
    """A job a real worker is running (it blocks until stopped), and that worker."""
    job = await create_job(client, queue=WORK_QUEUE, type="block", data={"seconds": 30})
    worker = await start_worker(queues=(WORK_QUEUE,), block_s=0.1)

    async def running() -> bool:
        return (await get_job(client, job["id"]))["action"] == "blocking"

    await wait_until(running)
    return await get_job(client, job["id"]), worker


async def test_delete_active_job_stops_it_first(client: Any, start_worker: Any) -> None:
    job, worker = await active_blocking_job(client, start_worker)
    assert (await client.delete(f"/api/jobs/{job['id']}")).status == 204
    await wait_until(lambda: job["id"] not in worker.running, timeout=5)
    await assert_error(await client.get(f"/api/jobs/{job['id']}"), 404, "not_found")
    assert (await list_jobs(client))["total"] == 0


async def test_delete_unknown_job_is_404(client: Any) -> None:
    await assert_error(await client.delete("/api/jobs/doesNotExist"), 404, "not_found")


async def test_delete_twice_is_404_the_second_time(client: Any) -> None:
    job = await create_job(client)
    assert (await client.delete(f"/api/jobs/{job['id']}")).status == 204
    await assert_error(await client.delete(f"/api/jobs/{job['id']}"), 404, "not_found")


# -- cancel --------------------------------------------------------------------------------------


async def test_cancel_waiting_job(client: Any) -> None:
    job = await create_job(client)
    response = await action(client, job["id"], "cancel")
    assert response.status == 200
    cancelled = await response.json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["finishedAt"] is not None
    assert without_logs(await get_job(client, job["id"])) == cancelled
    assert await listed_ids(client, "?status=waiting") == []
    assert await listed_ids(client, "?status=cancelled") == [job["id"]]


async def test_cancelled_job_is_never_run(client: Any, start_worker: Any) -> None:
    job = await cancelled_job(client, queue=WORK_QUEUE, type="noop")
    later = await run_to_end(client, start_worker, type="noop")
    assert later["status"] == "completed"
    after = await get_job(client, job["id"])
    assert after["status"] == "cancelled" and after["attemptsMade"] == 0


async def test_cancel_delayed_job(client: Any) -> None:
    job = await create_job(client, delayMs=60_000)
    response = await action(client, job["id"], "cancel")
    assert response.status == 200
    cancelled = await response.json()
    assert cancelled["status"] == "cancelled"
    assert await listed_ids(client, "?status=delayed") == []


async def test_cancel_active_job_stops_it(client: Any, start_worker: Any) -> None:
    job, worker = await active_blocking_job(client, start_worker)
    response = await action(client, job["id"], "cancel")
    assert response.status == 200
    cancelled = await response.json()
    assert cancelled["status"] == "cancelled"
    await wait_until(lambda: job["id"] not in worker.running, timeout=5)
    after = without_logs(await get_job(client, job["id"]))
    assert after == cancelled  # the stopped handler did not overwrite the outcome


async def test_concurrent_cancels_succeed_exactly_once(client: Any) -> None:
    job = await create_job(client)
    responses = await asyncio.gather(*(action(client, job["id"], "cancel") for _ in range(5)))
    assert sorted(r.status for r in responses) == [200, 409, 409, 409, 409]
    assert (await get_job(client, job["id"]))["rev"] == job["rev"] + 1


async def test_cancel_cancelled_job_is_409(client: Any) -> None:
    job = await cancelled_job(client)
    await assert_error(await action(client, job["id"], "cancel"), 409, "conflict")


async def test_cancel_completed_job_is_409(client: Any, start_worker: Any) -> None:
    job = await run_to_end(client, start_worker, type="noop")
    assert job["status"] == "completed"
    await assert_error(await action(client, job["id"], "cancel"), 409, "conflict")
    assert (await get_job(client, job["id"]))["status"] == "completed"


async def test_cancel_failed_job_is_409(client: Any, start_worker: Any) -> None:
    job = await run_to_end(client, start_worker, type="fail", maxAttempts=1)
    assert job["status"] == "failed"
    await assert_error(await action(client, job["id"], "cancel"), 409, "conflict")


async def test_cancel_unknown_job_is_404(client: Any) -> None:
    await assert_error(await action(client, "doesNotExist", "cancel"), 404, "not_found")


# -- retry ---------------------------------------------------------------------------------------


async def test_retry_failed_job(client: Any, start_worker: Any) -> None:
    job = await run_to_end(client, start_worker, type="fail", maxAttempts=1)
    assert job["status"] == "failed" and job["attemptsMade"] == 1
    response = await action(client, job["id"], "retry")
    assert response.status == 200
    retried = await response.json()
    assert retried["status"] == "waiting"
    assert retried["attemptsMade"] == 0
    assert retried["progress"] == 0
    assert retried["finishedAt"] is None
    assert retried["rev"] > job["rev"]
    assert without_logs(await get_job(client, job["id"])) == retried
    assert await listed_ids(client, "?status=waiting") == [job["id"]]
    assert await listed_ids(client, "?status=failed") == []


async def test_retry_cancelled_job(client: Any) -> None:
    job = await cancelled_job(client)
    response = await action(client, job["id"], "retry")
    assert response.status == 200
    retried = await response.json()
    assert retried["status"] == "waiting"
    assert retried["attemptsMade"] == 0
    assert retried["progress"] == 0
    assert retried["finishedAt"] is None
    assert await listed_ids(client, "?status=waiting") == [job["id"]]


async def test_retried_job_runs_again(client: Any, start_worker: Any) -> None:
    job = await cancelled_job(client, queue=WORK_QUEUE, type="noop")
    assert (await action(client, job["id"], "retry")).status == 200
    await run_to_end(client, start_worker, type="noop")
    after = await get_job(client, job["id"])
    assert after["status"] == "completed" and after["attemptsMade"] == 1


async def test_retry_waiting_job_is_409(client: Any) -> None:
    job = await create_job(client)
    await assert_error(await action(client, job["id"], "retry"), 409, "conflict")
    assert (await get_job(client, job["id"]))["rev"] == job["rev"]


async def test_retry_delayed_job_is_409(client: Any) -> None:
    job = await create_job(client, delayMs=60_000)
    await assert_error(await action(client, job["id"], "retry"), 409, "conflict")


async def test_retry_completed_job_is_409(client: Any, start_worker: Any) -> None:
    job = await run_to_end(client, start_worker, type="noop")
    await assert_error(await action(client, job["id"], "retry"), 409, "conflict")


async def test_retry_unknown_job_is_404(client: Any) -> None:
    await assert_error(await action(client, "doesNotExist", "retry"), 404, "not_found")


# -- promote -------------------------------------------------------------------------------------


async def test_promote_delayed_job(client: Any) -> None:
    job = await create_job(client, delayMs=600_000)
    response = await action(client, job["id"], "promote")
    assert response.status == 200
    promoted = await response.json()
    assert promoted["status"] == "waiting"
    assert promoted["runAt"] is None
    assert await listed_ids(client, "?status=waiting") == [job["id"]]
    assert await listed_ids(client, "?status=delayed") == []


async def test_promote_waiting_job_is_409(client: Any) -> None:
    job = await create_job(client)
    await assert_error(await action(client, job["id"], "promote"), 409, "conflict")


async def test_promote_cancelled_job_is_409(client: Any) -> None:
    job = await cancelled_job(client, delayMs=60_000)
    await assert_error(await action(client, job["id"], "promote"), 409, "conflict")


async def test_promote_unknown_job_is_404(client: Any) -> None:
    await assert_error(await action(client, "doesNotExist", "promote"), 404, "not_found")


# -- PATCH priority ------------------------------------------------------------------------------


async def test_patch_priority_of_waiting_job(client: Any) -> None:
    job = await create_job(client)
    response = await client.patch(f"/api/jobs/{job['id']}", json={"priority": "high"})
    assert response.status == 200
    patched = await response.json()
    assert patched["priority"] == "high"
    assert patched["status"] == "waiting"
    assert (await get_job(client, job["id"]))["priority"] == "high"


async def test_patched_high_job_runs_before_earlier_normal_jobs(client: Any, start_worker: Any) -> None:
    first = await create_job(client, name="first", queue=WORK_QUEUE, type="noop")
    second = await create_job(client, name="second", queue=WORK_QUEUE, type="noop")
    assert (await client.patch(f"/api/jobs/{second['id']}", json={"priority": "high"})).status == 200
    last = await run_to_end(client, start_worker, type="noop", concurrency=1)
    first, second = await get_job(client, first["id"]), await get_job(client, second["id"])
    assert first["status"] == second["status"] == "completed"
    assert second["finishedAt"] <= first["startedAt"] <= first["finishedAt"] <= last["startedAt"]


async def test_patch_priority_back_to_normal(client: Any) -> None:
    job = await create_job(client, priority="high")
    response = await client.patch(f"/api/jobs/{job['id']}", json={"priority": "normal"})
    assert response.status == 200
    assert (await response.json())["priority"] == "normal"


async def test_patch_priority_of_delayed_job(client: Any) -> None:
    job = await create_job(client, delayMs=60_000)
    response = await client.patch(f"/api/jobs/{job['id']}", json={"priority": "high"})
    assert response.status == 200
    patched = await response.json()
    assert patched["priority"] == "high"
    assert patched["status"] == "delayed"


async def test_patch_cancelled_job_is_409(client: Any) -> None:
    job = await cancelled_job(client)
    response = await client.patch(f"/api/jobs/{job['id']}", json={"priority": "high"})
    await assert_error(response, 409, "conflict")
    assert (await get_job(client, job["id"]))["priority"] == "normal"


async def test_patch_unknown_job_is_404(client: Any) -> None:
    response = await client.patch("/api/jobs/doesNotExist", json={"priority": "high"})
    await assert_error(response, 404, "not_found")


# -- action bodies -------------------------------------------------------------------------------


async def job_ready_for(client: Any, name: str) -> dict[str, Any]:
    """A job whose state allows the action."""
    if name == "cancel":
        return await create_job(client)
    if name == "promote":
        return await create_job(client, delayMs=60_000)
    return await cancelled_job(client)


EMPTY_BODIES = {
    "no body": {},
    "empty json body": {"data": b"", "headers": {"Content-Type": "application/json"}},
    "whitespace body": {"data": b"  \n", "headers": {"Content-Type": "application/json"}},
    "empty object": {"json": {}},
}


@pytest.mark.parametrize("name", ["cancel", "retry", "promote"])
@pytest.mark.parametrize("body", EMPTY_BODIES.values(), ids=EMPTY_BODIES.keys())
async def test_action_takes_an_empty_body_or_empty_object(client: Any, name: str, body: dict[str, Any]) -> None:
    job = await job_ready_for(client, name)
    response = await action(client, job["id"], name, **body)
    assert response.status == 200, await response.text()


BAD_BODIES = {
    "object with a field": (b'{"force": true}', "validation_error"),
    "array": (b"[]", "validation_error"),
    "null": (b"null", "validation_error"),
    "string": (b'"go"', "validation_error"),
    "number": (b"0", "validation_error"),
    "invalid json": (b"{", "invalid_json"),
}


@pytest.mark.parametrize("name", ["cancel", "retry", "promote"])
@pytest.mark.parametrize(("raw", "code"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_action_refuses_any_other_body(client: Any, name: str, raw: bytes, code: str) -> None:
    job = await job_ready_for(client, name)
    before = await get_job(client, job["id"])
    response = await action(client, job["id"], name, data=raw, headers={"Content-Type": "application/json"})
    await assert_error(response, 400, code)
    assert await get_job(client, job["id"]) == before


# -- rev -----------------------------------------------------------------------------------------


async def test_rev_grows_with_every_change(client: Any) -> None:
    job = await create_job(client)
    assert job["rev"] == 1
    revs = [job["rev"]]
    patched = await client.patch(f"/api/jobs/{job['id']}", json={"priority": "high"})
    revs.append((await patched.json())["rev"])
    revs.append((await (await action(client, job["id"], "cancel")).json())["rev"])
    revs.append((await (await action(client, job["id"], "retry")).json())["rev"])
    assert revs == sorted(set(revs))  # strictly increasing
    assert (await get_job(client, job["id"]))["rev"] == revs[-1]


async def test_rev_grows_through_a_run(client: Any, start_worker: Any) -> None:
    done = await run_to_end(client, start_worker, type="noop")
    assert done["status"] == "completed"
    assert done["rev"] >= 3  # created, claimed, completed


async def test_refused_action_does_not_change_rev(client: Any) -> None:
    job = await cancelled_job(client)
    await action(client, job["id"], "cancel")
    await action(client, job["id"], "promote")
    assert (await get_job(client, job["id"]))["rev"] == job["rev"]


# -- health --------------------------------------------------------------------------------------


async def test_healthz(client: Any) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"redis": "ok"}


# -- the job JSON built in Lua (events) equals the API's -----------------------------------------


async def latest_event_job(redis_client: Any, job_id: str) -> dict[str, Any]:
    """The newest `job` event of this job in the events stream, as its payload's job."""
    queue = await redis_client.hget(Keys().job(job_id), "queue")
    for _, fields in await redis_client.xrevrange(Keys().event_log(queue), count=10_000):
        if fields["e"] != "job":
            continue
        payload = json.loads(fields["d"])
        assert set(payload) == {"job"}
        if payload["job"]["id"] == job_id:
            return payload["job"]
    raise AssertionError(f"no job event for {job_id}")


async def assert_event_matches_api(client: Any, redis_client: Any, job_id: str) -> dict[str, Any]:
    api_job = without_logs(await get_job(client, job_id))
    event_job = await latest_event_job(redis_client, job_id)
    assert event_job == api_job
    assert list(event_job) == list(api_job)  # same fields, same order
    return api_job


NASTY_NAME = 'Ünïcødé "double" \'single\' back\\slash a/b </script> \t tab \n line \u2028 😀 中文 {"json": 1}'
NESTED_DATA = {
    "nested": {"list": [1, 2.5, -3e-7, None, True, False, "s", [], {}], "deep": {"a": {"b": {"c": [{"d": 1}]}}}},
    "empty": {},
    "emptyList": [],
    "unicode": "é😀中",
    "quotes": "\"'\\",
    "big": 2**62,
    "negative": -17,
}


async def test_event_json_matches_api_for_a_fresh_job_with_null_fields(client: Any, redis_client: Any) -> None:
    job = await create_job(client, name="fresh")
    api_job = await assert_event_matches_api(client, redis_client, job["id"])
    assert api_job["timeoutMs"] is None and api_job["result"] is None and api_job["action"] is None


async def test_event_json_matches_api_for_nested_data_and_a_nasty_name(client: Any, redis_client: Any) -> None:
    job = await create_job(client, name=NASTY_NAME, data=NESTED_DATA)
    api_job = await assert_event_matches_api(client, redis_client, job["id"])
    assert api_job["name"] == NASTY_NAME
    assert api_job["data"] == NESTED_DATA


async def test_event_json_matches_api_for_a_delayed_high_job_with_every_option(
    client: Any, redis_client: Any
) -> None:
    job = await create_job(
        client, name="opts", type="echo", queue="q.1", priority="high", delayMs=60_000,
        maxAttempts=9, backoffMs=0, timeoutMs=1234,
    )  # fmt: skip
    api_job = await assert_event_matches_api(client, redis_client, job["id"])
    assert api_job["runAt"] is not None


async def test_event_json_matches_api_after_cancel_and_retry(client: Any, redis_client: Any) -> None:
    job = await create_job(client, name="c")
    await action(client, job["id"], "cancel")
    await assert_event_matches_api(client, redis_client, job["id"])
    await action(client, job["id"], "retry")
    await assert_event_matches_api(client, redis_client, job["id"])


async def test_event_json_matches_api_for_a_result(client: Any, redis_client: Any, start_worker: Any) -> None:
    job = await run_to_end(client, start_worker, type="echo", name=NASTY_NAME, data=NESTED_DATA)
    assert job["status"] == "completed"
    assert job["result"] == NESTED_DATA
    assert job["logs"] == ["echoing"]
    api_job = await assert_event_matches_api(client, redis_client, job["id"])
    assert api_job["workerId"] and api_job["startedAt"] and api_job["finishedAt"]


async def test_event_json_matches_api_for_a_failed_reason(
    client: Any, redis_client: Any, start_worker: Any
) -> None:
    message = 'bad "thing" \\ ü 😀\nsecond line'
    job = await run_to_end(client, start_worker, type="fail", maxAttempts=1, data={"message": message})
    assert job["status"] == "failed"
    assert job["failedReason"] == f"RuntimeError: {message}"
    await assert_event_matches_api(client, redis_client, job["id"])


async def test_event_json_matches_api_for_an_active_job_with_an_action(
    client: Any, redis_client: Any, start_worker: Any
) -> None:
    job, _ = await active_blocking_job(client, start_worker)
    api_job = await assert_event_matches_api(client, redis_client, job["id"])
    assert api_job["status"] == "active" and api_job["progress"] == 1 and api_job["action"] == "blocking"
    assert (await action(client, job["id"], "cancel")).status == 200  # and the worker stops it


async def test_a_missing_job_is_404_naming_its_id(client: Any) -> None:
    response = await client.get("/api/jobs/no-such-job-42")
    assert response.status == 404
    error = (await response.json())["error"]
    assert error["code"] == "not_found" and "no-such-job-42" in error["message"]
