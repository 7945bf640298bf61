"""Finding jobs: `tags` on create, `tag=` and `q=` on GET /api/jobs, combinable with every filter,
`total` exact, and the indexes exact through deletes, cleans and retention (checked against a
brute-force computation over the same jobs)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from jobline import search
from jobline.store import JobStore
from tests.conftest import create_job


async def listed(client: Any, **query: Any) -> dict[str, Any]:
    response = await client.get("/api/jobs", params=query)
    assert response.status == 200, await response.text()
    return await response.json()


async def names_of(client: Any, **query: Any) -> list[str]:
    return [job["name"] for job in (await listed(client, **query))["jobs"]]


async def test_tags_are_stored_and_shown(client: Any) -> None:
    job = await create_job(client, name="tagged", tags=["customer:42", "eu"], delayMs=60_000)
    assert job["tags"] == ["customer:42", "eu"]
    assert (await (await client.get(f"/api/jobs/{job['id']}")).json())["tags"] == ["customer:42", "eu"]
    assert (await create_job(client, name="plain"))["tags"] == []


async def test_bad_tags_are_a_400_and_create_nothing(client: Any) -> None:
    for tags in (["has space"], ["x" * 65], [""], "not-a-list", [1], [f"t{i}" for i in range(11)]):
        response = await client.post("/api/jobs", json={"name": "x", "tags": tags})
        assert response.status == 400, tags
        assert (await response.json())["error"]["field"] == "tags"
    assert (await listed(client))["total"] == 0


async def test_tag_filters_exactly_and_all_tags_must_match(client: Any) -> None:
    await create_job(client, name="a", tags=["customer:42", "eu"])
    await create_job(client, name="b", tags=["customer:42"])
    await create_job(client, name="c", tags=["customer:420"])
    assert await names_of(client, tag="customer:42") == ["b", "a"]
    assert await names_of(client, tag=["customer:42", "eu"]) == ["a"]
    assert (await listed(client, tag="nobody"))["total"] == 0


async def test_q_finds_a_piece_of_the_name_whatever_its_case(client: Any) -> None:
    await create_job(client, name="Send Invoice 17")
    await create_job(client, name="resize photo")
    await create_job(client, name="INVOICE reminder")
    assert await names_of(client, q="invoice") == ["INVOICE reminder", "Send Invoice 17"]
    assert await names_of(client, q="VOICE 1") == ["Send Invoice 17"]
    assert (await listed(client, q="nothing like it"))["total"] == 0


async def test_q_finds_a_job_by_its_id(client: Any) -> None:
    job = await create_job(client, name="whatever", queue="elsewhere")
    await create_job(client, name="other")
    found = await listed(client, q=job["id"])
    assert [j["id"] for j in found["jobs"]] == [job["id"]] and found["total"] == 1


async def test_search_combines_with_status_queue_type_and_pages(client: Any) -> None:
    for i in range(6):
        await create_job(client, name=f"report {i}", queue="q1" if i % 2 else "q2", tags=["nightly"], delayMs=60_000 * (i % 3))
    await create_job(client, name="report x", type="echo", tags=["nightly"])
    assert await names_of(client, q="report", status="delayed", queue="q1") == ["report 5", "report 1"]
    assert await names_of(client, tag="nightly", type="echo") == ["report x"]
    assert await names_of(client, q="report", status="waiting,delayed", tag="nightly", type="demo") == [
        f"report {i}" for i in (5, 4, 3, 2, 1, 0)
    ]
    page = await listed(client, q="report", limit=2, offset=3)
    assert page["total"] == 7 and [j["name"] for j in page["jobs"]] == ["report 3", "report 2"]


async def test_bad_search_queries_are_400(client: Any) -> None:
    for query in ({"tag": "no spaces"}, {"q": "x" * 201}, {"tag": [f"t{i}" for i in range(11)]}):
        response = await client.get("/api/jobs", params=query)
        assert response.status == 400, query


async def test_a_flow_and_a_batch_carry_tags(client: Any) -> None:
    response = await client.post(
        "/api/jobs",
        json={"name": "parent", "tags": ["flow"], "children": [{"name": "child", "queue": "kids", "tags": ["flow", "kid"]}]},
    )
    assert response.status == 201, await response.text()
    response = await client.post("/api/jobs/batch", json={"jobs": [{"name": "b1", "tags": ["flow"]}, {"name": "b2"}]})
    assert response.status == 201
    assert await names_of(client, tag="flow") == ["b1", "child", "parent"]
    assert await names_of(client, tag="kid", queue="kids") == ["child"]


async def test_deleted_and_cleaned_jobs_leave_every_index(client: Any, store: JobStore, redis_client: Any) -> None:
    gone = await create_job(client, name="findme once", tags=["t"])
    kept = await create_job(client, name="findme twice", tags=["t"])
    assert (await client.delete(f"/api/jobs/{gone['id']}")).status == 204
    assert await names_of(client, q="findme") == ["findme twice"]
    assert await names_of(client, tag="t") == ["findme twice"]
    [claimed] = await store.claim("default", "w", 1)
    await store.complete(claimed, None)
    response = await client.post("/api/admin/queues/default/clean", json={"status": "completed"})
    assert (await response.json())["removed"] == 1
    assert (await listed(client, q="findme"))["total"] == 0 and (await listed(client, tag="t"))["total"] == 0
    assert claimed.id == kept["id"]
    keys = store.keys
    assert await redis_client.zcard(keys.names("default")) == 0
    assert await redis_client.exists(keys.tag_index("default", "t")) == 0


async def test_retention_removes_jobs_from_the_indexes(client: Any, store: JobStore) -> None:
    response = await client.patch("/api/admin/queues/default", json={"retention": {"completed": {"maxCount": 2}}})
    assert response.status == 200, await response.text()
    for i in range(5):
        await create_job(client, name=f"kept {i}", tags=["r"])
    for job in await store.claim("default", "w", 5):
        await store.complete(job, None)
    assert (await listed(client, q="kept"))["total"] == 2
    assert (await listed(client, tag="r"))["total"] == 2


@pytest.mark.parametrize("steps", ["default", "tiny"])
async def test_random_mix_matches_a_brute_force_search(
    client: Any, store: JobStore, monkeypatch: pytest.MonkeyPatch, steps: str
) -> None:
    """Creates, runs, failures, retries, deletes and cleans at random; then every search's ids
    and total equal a filter over every job the API still lists. With tiny steps, each search goes
    through many steps per queue, across several indexes (cursor, pages and counts between steps)."""
    if steps == "tiny":
        monkeypatch.setattr(search, "SCAN_STEP", {True: 3, False: 2})
    rng = random.Random(14)
    words, tags = ["alpha", "Beta", "gamma", "ÉCLAIR"], ["red", "green", "blue"]
    for _ in range(120):
        name = " ".join(rng.sample(words, 2)) + f" {rng.randint(0, 30)}"
        body = {"name": name, "queue": rng.choice(["q1", "q2", "q3"]), "tags": rng.sample(tags, rng.randint(0, 2))}
        if rng.random() < 0.2:
            body["delayMs"] = 60_000
        await create_job(client, **body)
    for queue in ("q1", "q2", "q3"):
        for job in await store.claim(queue, "w", 20):
            if rng.random() < 0.5:
                await store.complete(job, None)
            else:
                await store.fail(job, f"ValueError: bad row {rng.randint(1, 9)}", retry=False)
    everything = (await listed(client, limit=500))["jobs"]
    for job in rng.sample(everything, 15):
        await client.delete(f"/api/jobs/{job['id']}")
    await client.post("/api/jobs/bulk", json={"action": "retry", "status": "failed"})
    await client.post("/api/admin/queues/q2/clean", json={"status": "completed"})
    everything = (await listed(client, limit=500))["jobs"]
    queries: list[dict[str, Any]] = [
        {"q": "alpha"}, {"q": "éclair"}, {"q": "a 1"}, {"tag": "red"}, {"tag": ["red", "blue"]},
        {"q": "beta", "tag": "green", "status": "waiting"}, {"q": "gamma", "queue": "q1", "status": "waiting,delayed"},
        {"tag": "blue", "status": "completed"}, {"q": "zzz"}, {"q": everything[3]["id"]},
    ]  # fmt: skip
    for query in queries:
        expected = [j["id"] for j in everything if _matches(j, query)]
        found = await listed(client, limit=500, **query)
        assert [j["id"] for j in found["jobs"]] == expected, query
        assert found["total"] == len(expected), query
        small = await listed(client, limit=3, offset=1, **query)
        assert [j["id"] for j in small["jobs"]] == expected[1:4] and small["total"] == len(expected), query


def _matches(job: dict[str, Any], query: dict[str, Any]) -> bool:
    q = query.get("q")
    if q and q.casefold() not in job["name"].casefold() and q != job["id"]:
        return False
    wanted = query.get("tag", [])
    if not set([wanted] if isinstance(wanted, str) else wanted) <= set(job["tags"]):
        return False
    if "status" in query and job["status"] not in query["status"].split(","):
        return False
    return not ("queue" in query and job["queue"] != query["queue"])


async def test_a_schedules_jobs_carry_its_templates_tags(client: Any) -> None:
    made = await client.post(
        "/api/schedules", json={"id": "nightly", "everyMs": 3_600_000, "job": {"name": "nightly report", "tags": ["nightly"]}}
    )
    assert made.status == 201, await made.text()
    triggered = await client.post("/api/schedules/nightly/trigger")
    assert triggered.status == 201, await triggered.text()
    assert (await triggered.json())["tags"] == ["nightly"]
    assert await names_of(client, tag="nightly") == ["nightly report"]
