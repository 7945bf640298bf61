"""Failure groups: failed jobs grouped by a fingerprint of their last failure (type, exception
class, message with numbers, ids, hex and quoted strings replaced), counts exact through failures,
retries, deletes, cleans and retention, and bulk retry/delete by group."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from jobline.store import JobStore
from tests.conftest import create_job, wait_for_status


async def groups(client: Any, **query: Any) -> list[dict[str, Any]]:
    response = await client.get("/api/admin/failures", params=query)
    assert response.status == 200, await response.text()
    return (await response.json())["groups"]


async def fail_jobs(client: Any, store: JobStore, reasons: list[str], queue: str = "default", **fields: Any) -> list[str]:
    """Create one job per reason, claim them, and fail each for good with its reason."""
    ids = [(await create_job(client, name=f"job {i}", queue=queue, **fields))["id"] for i in range(len(reasons))]
    claimed = {job.id: job for job in await store.claim(queue, "w", len(ids))}
    for job_id, reason in zip(ids, reasons):
        await store.fail(claimed[job_id], reason, retry=False)
    return ids


async def test_messages_that_differ_in_numbers_ids_hex_and_quotes_are_one_group(client: Any, store: JobStore) -> None:
    await fail_jobs(
        client, store,
        [
            "KeyError: order 123 not found in 'warehouse-a' (0xdeadbeef) for job 0f8e2b1c9a7d",
            "KeyError: order 98765 not found in 'b' (0x1f) for job 6a1b2c3d4e5f",
            "ValueError: order 5 not found in 'a' (0x1) for job 0f8e2b1c9a7d",
        ],
    )  # fmt: skip
    found = await groups(client)
    assert [g["count"] for g in found] == [2, 1]
    top = found[0]
    assert top["type"] == "demo" and top["queue"] == "default"
    assert top["sample"].startswith("KeyError: order 98765")  # the latest
    assert len(top["jobIds"]) == 2 and top["firstSeen"] <= top["lastSeen"]
    assert len(top["fingerprint"]) == 16


async def test_the_type_is_part_of_the_fingerprint(client: Any, store: JobStore) -> None:
    await fail_jobs(client, store, ["RuntimeError: boom"], type="echo")
    await fail_jobs(client, store, ["RuntimeError: boom"], type="demo")
    assert sorted(g["type"] for g in await groups(client)) == ["demo", "echo"]


async def test_a_retried_attempt_is_not_counted_until_the_job_fails_for_good(client: Any, store: JobStore) -> None:
    job = await create_job(client, name="flaky", maxAttempts=2, backoffMs=0)
    [claimed] = await store.claim("default", "w", 1)
    await store.fail(claimed, "OSError: timeout after 30 s")
    assert await groups(client) == []
    delayed = (await (await client.get(f"/api/jobs/{job['id']}")).json())
    assert delayed["status"] == "delayed" and delayed["failureGroup"]  # every attempt gets a fingerprint


async def test_retry_delete_and_clean_take_jobs_out_of_their_group(client: Any, store: JobStore) -> None:
    ids = await fail_jobs(client, store, [f"IOError: disk {i} full" for i in range(4)])
    assert (await groups(client))[0]["count"] == 4
    await client.post(f"/api/jobs/{ids[0]}/retry", json={})
    assert (await client.delete(f"/api/jobs/{ids[1]}")).status == 204
    assert (await groups(client))[0]["count"] == 2
    await client.post("/api/admin/queues/default/clean", json={"status": "failed"})
    assert await groups(client) == []


async def test_retention_takes_jobs_out_of_their_group(client: Any, store: JobStore) -> None:
    await client.patch("/api/admin/queues/default", json={"retention": {"failed": {"maxCount": 1}}})
    await fail_jobs(client, store, ["E: x 1", "E: x 2", "E: x 3"])
    [group] = await groups(client)
    assert group["count"] == 1


async def test_bulk_retry_and_delete_by_group(client: Any, store: JobStore, start_worker: Any) -> None:
    timeouts = await fail_jobs(client, store, [f"TimeoutError: gateway {i}" for i in range(3)], queue="a")
    others = await fail_jobs(client, store, ["ValueError: nope"], queue="a")
    by_type = {g["sample"].split(":")[0]: g for g in await groups(client, queue="a")}
    response = await client.post(
        "/api/jobs/bulk", json={"action": "retry", "failureGroup": by_type["TimeoutError"]["fingerprint"]}
    )
    assert (await response.json())["affected"] == 3
    for job_id in timeouts:
        assert (await (await client.get(f"/api/jobs/{job_id}")).json())["status"] == "waiting"
    response = await client.post(
        "/api/jobs/bulk", json={"action": "delete", "failureGroup": by_type["ValueError"]["fingerprint"], "queue": "a"}
    )
    assert (await response.json())["affected"] == 1
    assert (await client.get(f"/api/jobs/{others[0]}")).status == 404
    assert await groups(client) == []


async def test_a_real_worker_failure_is_grouped(client: Any, start_worker: Any) -> None:
    await start_worker()
    ids = [(await create_job(client, name="f", type="fail", maxAttempts=1, data={"message": f"row {i} is bad"}))["id"] for i in range(3)]
    for job_id in ids:
        await wait_for_status(client, job_id, "failed")
    [group] = await groups(client)
    assert group["count"] == 3 and group["type"] == "fail" and group["sample"].startswith("RuntimeError: row")


async def test_bad_group_requests_are_400(client: Any) -> None:
    for body in (
        {"action": "retry", "failureGroup": "not-hex"},
        {"action": "retry", "failureGroup": "0123456789abcdef", "ids": ["x"]},
        {"action": "retry", "queue": "a", "status": "failed"},
    ):
        assert (await client.post("/api/jobs/bulk", json=body)).status == 400, body
    assert (await client.get("/api/admin/failures", params={"queue": "no spaces"})).status == 400


async def test_random_mix_matches_a_brute_force_count(client: Any, store: JobStore) -> None:
    rng = random.Random(7)
    messages = ["KeyError: user 1 missing", "KeyError: user 22 missing", "OSError: host 'db-1' down", "boom"]
    ids: list[str] = []
    for _ in range(4):
        ids += await fail_jobs(client, store, [rng.choice(messages) for _ in range(10)], queue=rng.choice(["x", "y"]))
        for job_id in rng.sample(ids, 4):
            action = rng.choice(["retry", "delete"])
            if action == "retry":
                await client.post(f"/api/jobs/{job_id}/retry", json={})
            else:
                await client.delete(f"/api/jobs/{job_id}")
        for queue in ("x", "y"):  # run what was retried, failing it again with a new message
            for job in await store.claim(queue, "w", 50):
                await store.fail(job, rng.choice(messages), retry=False)
    await client.post("/api/admin/queues/y/clean", json={"status": "failed", "olderThanMs": 0})
    failed = [j for j in (await (await client.get("/api/jobs", params={"status": "failed", "limit": 500})).json())["jobs"]]
    expected = Counter((j["queue"], j["failureGroup"]) for j in failed)
    found = {(g["queue"], g["fingerprint"]): g["count"] for g in await groups(client)}
    assert found == dict(expected)
    assert sum(found.values()) == len(failed)


async def test_a_groups_jobs_are_listed_by_failure_group(client: Any, store: JobStore) -> None:
    ids = await fail_jobs(client, store, ["KeyError: user 1", "KeyError: user 2", "OSError: disk"], queue="a")
    other = await fail_jobs(client, store, ["KeyError: user 3"], queue="b")
    key_errors = next(g for g in await groups(client, queue="a") if g["count"] == 2)
    in_a = await (await client.get("/api/jobs", params={"failureGroup": key_errors["fingerprint"], "queue": "a"})).json()
    assert sorted(j["id"] for j in in_a["jobs"]) == sorted(ids[:2]) and in_a["total"] == 2
    everywhere = await (await client.get("/api/jobs", params={"failureGroup": key_errors["fingerprint"]})).json()
    assert sorted(j["id"] for j in everywhere["jobs"]) == sorted(ids[:2] + other)  # the same fingerprint in b
    await client.post(f"/api/jobs/{ids[0]}/retry", json={})
    after = await (await client.get("/api/jobs", params={"failureGroup": key_errors["fingerprint"], "q": ids[0]})).json()
    assert after["total"] == 0  # retried: no longer in the group, even by its id
    assert (await client.get("/api/jobs", params={"failureGroup": "xyz"})).status == 400
