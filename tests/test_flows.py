"""Flows: a tree of jobs created at once; a parent waits for its children, then runs exactly once;
a child's failure, cancel or removal never leaves its parent waiting forever."""

from __future__ import annotations

from typing import Any

from jobline.models import NewJob, Priority
from jobline.store import JobStore
from tests.conftest import create_job, wait_all, wait_for_status


async def get(client: Any, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/jobs/{job_id}")
    assert response.status == 200, await response.text()
    return await response.json()


async def children_of(client: Any, job_id: str, **query: Any) -> dict[str, Any]:
    response = await client.get(f"/api/jobs/{job_id}/children", params=query)
    assert response.status == 200, await response.text()
    return await response.json()


def counts(total: int, completed: int = 0, failed: int = 0, cancelled: int = 0) -> dict[str, int]:
    pending = total - completed - failed - cancelled
    return {"total": total, "completed": completed, "failed": failed, "cancelled": cancelled, "pending": pending}


async def test_a_parent_waits_for_its_children_then_runs_once_with_their_results(
    client: Any, start_worker: Any
) -> None:
    parent = await create_job(client, name="fan-in", type="collect", children=[
        {"name": "a", "type": "echo", "data": {"n": 1}},
        {"name": "b", "type": "echo", "queue": "other", "data": {"n": 2}},
        {"name": "c", "type": "echo", "data": {"n": 3}},
    ])  # fmt: skip
    assert parent["status"] == "waiting-children" and parent["children"] == counts(3)
    kids = (await children_of(client, parent["id"]))["jobs"]
    assert [k["name"] for k in kids] == ["a", "b", "c"] and all(k["parentId"] == parent["id"] for k in kids)
    await start_worker(queues=("default", "other"))
    done = await wait_for_status(client, parent["id"], "completed", "failed")
    assert done["status"] == "completed" and done["attemptsMade"] == 1
    assert done["children"] == counts(3, completed=3)
    assert done["result"] == {"children": {k["id"]: k["data"] for k in kids}}
    finished = [await get(client, k["id"]) for k in kids]
    assert max(k["finishedAt"] for k in finished) <= done["startedAt"]


async def test_a_flow_is_created_whole_or_not_at_all(client: Any) -> None:
    response = await client.post("/api/jobs", json={"name": "p", "children": [{"name": "ok"}, {"name": ""}]})
    assert response.status == 400
    assert (await response.json())["error"]["field"] == "children[1].name"
    deep: dict[str, Any] = {"name": "leaf"}
    for level in range(10):
        deep = {"name": f"level {level}", "children": [deep]}
    assert (await client.post("/api/jobs", json=deep)).status == 400  # 11 levels
    wide = {"name": "p", "children": [{"name": f"c{i}"} for i in range(1000)]}
    assert (await client.post("/api/jobs", json=wide)).status == 400  # 1,001 jobs
    assert (await (await client.get("/api/jobs")).json())["total"] == 0


async def test_children_are_listed_in_pages(client: Any) -> None:
    parent = await create_job(client, name="p", children=[{"name": f"c{i}", "delayMs": 60_000} for i in range(5)])
    page = await children_of(client, parent["id"], limit=2, offset=2)
    assert [j["name"] for j in page["jobs"]] == ["c2", "c3"] and page["total"] == 5
    assert (await client.get("/api/jobs/nope/children")).status == 404


async def test_a_failed_child_fails_its_parent_at_once_and_stops_its_siblings(
    client: Any, start_worker: Any
) -> None:
    parent = await create_job(client, name="p", type="collect", children=[
        {"name": "breaks", "type": "fail", "maxAttempts": 1, "data": {"message": "disk full"}},
        {"name": "later", "type": "echo", "delayMs": 60_000},
    ])  # fmt: skip
    await start_worker()
    failed = await wait_for_status(client, parent["id"], "failed")
    kids = (await children_of(client, parent["id"]))["jobs"]
    assert failed["failedReason"] == f"child {kids[0]['id']} failed: RuntimeError: disk full"
    assert failed["attemptsMade"] == 0  # it never ran
    assert (await wait_for_status(client, kids[1]["id"], "cancelled"))["status"] == "cancelled"


async def test_a_child_with_on_failure_ignore_lets_the_parent_run(client: Any, start_worker: Any) -> None:
    parent = await create_job(client, name="p", type="collect", children=[
        {"name": "optional", "type": "fail", "maxAttempts": 1, "onFailure": "ignore"},
        {"name": "needed", "type": "echo", "data": {"x": 1}},
    ])  # fmt: skip
    await start_worker()
    done = await wait_for_status(client, parent["id"], "completed", "failed")
    assert done["status"] == "completed" and done["children"] == counts(2, completed=1, failed=1)


async def test_a_cancelled_or_deleted_child_fails_its_parent(client: Any) -> None:
    for how in ("cancel", "delete"):
        parent = await create_job(client, name=how, children=[{"name": "c", "delayMs": 60_000}])
        [kid] = (await children_of(client, parent["id"]))["jobs"]
        if how == "cancel":
            assert (await client.post(f"/api/jobs/{kid['id']}/cancel")).status == 200
        else:
            assert (await client.delete(f"/api/jobs/{kid['id']}")).status == 204
        failed = await wait_for_status(client, parent["id"], "failed")
        expected = "was cancelled" if how == "cancel" else "was deleted"
        assert failed["failedReason"] == f"child {kid['id']} {expected}"
        assert failed["children"] == counts(1, cancelled=1)


async def test_cancelling_or_deleting_a_parent_reaches_every_descendant(client: Any) -> None:
    tree = {"name": "root", "children": [{"name": "mid", "children": [{"name": "leaf", "delayMs": 60_000}]}]}
    root = await create_job(client, **tree)
    [mid] = (await children_of(client, root["id"]))["jobs"]
    [leaf] = (await children_of(client, mid["id"]))["jobs"]
    assert (await client.post(f"/api/jobs/{root['id']}/cancel")).status == 200
    assert [(await get(client, j["id"]))["status"] for j in (root, mid, leaf)] == ["cancelled"] * 3
    assert (await client.delete(f"/api/jobs/{root['id']}")).status == 204
    for job in (root, mid, leaf):
        assert (await client.get(f"/api/jobs/{job['id']}")).status == 404


async def test_retrying_a_failed_parent_retries_its_failed_children_and_waits_again(
    client: Any, start_worker: Any
) -> None:
    parent = await create_job(client, name="p", type="collect", children=[
        {"name": "flaky", "type": "fail", "maxAttempts": 1}, {"name": "fine", "type": "echo"},
    ])  # fmt: skip
    await start_worker()
    await wait_for_status(client, parent["id"], "failed")
    kids = (await children_of(client, parent["id"]))["jobs"]
    await wait_all(client, [kids[1]["id"]], "completed", "cancelled")
    retried = await client.post(f"/api/jobs/{parent['id']}/retry")
    assert retried.status == 200
    body = await retried.json()
    assert body["status"] == "waiting-children" and body["children"]["pending"] >= 1
    again = await wait_for_status(client, kids[0]["id"], "failed")
    assert again["attemptsMade"] == 1  # it ran again
    assert (await wait_for_status(client, parent["id"], "failed"))["failedReason"].startswith(f"child {kids[0]['id']}")


async def test_a_chain_runs_in_order(client: Any, start_worker: Any) -> None:
    chain = {"name": "C", "type": "echo", "children": [
        {"name": "B", "type": "echo", "queue": "other", "children": [{"name": "A", "type": "echo"}]},
    ]}  # fmt: skip
    c = await create_job(client, **chain)
    await start_worker(queues=("default", "other"))
    c_done = await wait_for_status(client, c["id"], "completed")
    [b] = (await children_of(client, c["id"]))["jobs"]
    [a] = (await children_of(client, b["id"]))["jobs"]
    assert a["finishedAt"] <= b["startedAt"] and b["finishedAt"] <= c_done["startedAt"]


async def test_a_child_end_left_undelivered_reaches_its_parent(
    client: Any, store: JobStore, start_worker: Any
) -> None:
    """A worker killed between a child's ack and its parent's update (the parent may be on another
    shard): the child's end waits in its queue's outbox, and any worker of that queue delivers it."""
    parent = await create_job(client, name="p", type="collect", children=[{"name": "c", "queue": "kids", "type": "echo"}])
    [claimed] = await store.claim("kids", "a-worker-about-to-die", 1)
    done, _ = await store.complete(claimed, {"ok": True})  # the ack, then nothing: the worker is gone
    assert done and (await get(client, parent["id"]))["status"] == "waiting-children"
    await start_worker(queues=("kids", "default"))
    finished = await wait_for_status(client, parent["id"], "completed", timeout=10)
    assert finished["result"] == {"children": {claimed.id: {"ok": True}}}


async def test_a_job_event_says_parent_and_children(client: Any, store: JobStore) -> None:
    await store.enqueue(NewJob("solo", "noop", "default", {}, Priority.NORMAL, 0, 3, 1000, None))
    parent = await create_job(client, name="p", children=[{"name": "c", "delayMs": 60_000}])
    listed = (await (await client.get("/api/jobs")).json())["jobs"]
    by_name = {j["name"]: j for j in listed}
    assert by_name["solo"]["parentId"] is None and by_name["solo"]["children"] is None
    assert by_name["c"]["parentId"] == parent["id"] and by_name["p"]["children"] == counts(1)
