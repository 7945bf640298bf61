"""GET /api/openapi.json held to the app's router and responses; GET /metrics parsed as Prometheus text.

Parses /metrics with prometheus_client's own text parser (a dev dependency).
"""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobline import server
from tests.conftest import create_job
from tests.conftest import wait_for_status as wait_status

STATUSES = ("waiting", "delayed", "active", "completed", "failed", "cancelled", "waiting-children")
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
HOUR_MS = 3_600_000


# -- helpers -------------------------------------------------------------------------------------
async def get_ok(client: Any, path: str) -> Any:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    return await response.json()


async def openapi(client: Any) -> dict[str, Any]:
    return await get_ok(client, "/api/openapi.json")


def app_operations(redis_url: str) -> set[tuple[str, str]]:
    """(method, path) of every route the app registers; HEAD is aiohttp's automatic twin of GET."""
    app = server.create_app(server.Settings(redis_url=redis_url))
    out = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        assert route.method != "*", f"catch-all route {route.resource.canonical} cannot be described"
        out.add((route.method.lower(), route.resource.canonical))
    return out


def documented_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, item in doc["paths"].items() for method in item if method in METHODS}


async def metrics_text(client: Any) -> str:
    response = await client.get("/metrics")
    assert response.status == 200
    return await response.text()


async def metrics(client: Any) -> dict[str, Any]:
    """name -> family, parsed by prometheus_client (a counter's family name drops `_total`)."""
    return {f.name: f for f in text_string_to_metric_families(await metrics_text(client))}


def samples(family: Any, name: str | None = None) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for s in family.samples
        if name is None or s.name == name
    }


async def queue_counts(client: Any) -> dict[str, dict[str, int]]:
    return {q["name"]: q["counts"] for q in (await get_ok(client, "/api/admin/queues"))["queues"]}


async def make_activity(client: Any, start_worker: Any) -> dict[str, list[str]]:
    """Two queues with jobs in every status; returns the ids that finished, by queue."""
    await start_worker(queues=("alpha", "beta"), concurrency=2, grace_s=0.5)
    finished: dict[str, list[str]] = {"alpha": [], "beta": []}
    plan = {"alpha": (3, 1), "beta": (1, 2)}  # (completed, failed)
    for queue, (completed, failed) in plan.items():
        for _ in range(completed):
            finished[queue].append((await create_job(client, queue=queue, type="echo"))["id"])
        for _ in range(failed):
            finished[queue].append((await create_job(client, queue=queue, type="fail", maxAttempts=1))["id"])
    for ids in finished.values():
        for job_id in ids:
            await wait_status(client, job_id, "completed", "failed")
    blocking = [(await create_job(client, queue=q, type="block"))["id"] for q in ("alpha", "beta")]
    for job_id in blocking:
        await wait_status(client, job_id, "active")
    # both slots are taken: these stay where they are put
    await create_job(client, queue="alpha", type="echo")
    await create_job(client, queue="alpha", type="echo", delayMs=HOUR_MS)
    cancelled = await create_job(client, queue="beta", type="echo", delayMs=HOUR_MS)
    assert (await client.post(f"/api/jobs/{cancelled['id']}/cancel", json={})).status == 200
    return finished


# -- OpenAPI -------------------------------------------------------------------------------------
async def test_openapi_is_an_openapi_3_document(client: Any) -> None:
    response = await client.get("/api/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    doc = await response.json()
    assert re.fullmatch(r"3\.\d+\.\d+", doc["openapi"])
    assert doc["info"]["title"] and doc["info"]["version"]
    assert isinstance(doc["paths"], dict) and doc["paths"]
    assert all(path.startswith("/") for path in doc["paths"])


async def test_every_route_of_the_app_is_documented_with_its_method(client: Any, redis_url: str) -> None:
    doc = await openapi(client)
    routes = app_operations(redis_url)
    assert len(routes) >= 19  # the spec's table
    missing = sorted(routes - documented_operations(doc))
    assert missing == [], f"routes without an OpenAPI description: {missing}"


async def test_every_documented_operation_is_a_route_of_the_app(client: Any, redis_url: str) -> None:
    doc = await openapi(client)
    stale = sorted(documented_operations(doc) - app_operations(redis_url))
    assert stale == [], f"described but not served: {stale}"


async def test_every_spec_route_is_documented(client: Any) -> None:
    doc = await openapi(client)
    expected = {
        ("post", "/api/jobs"), ("get", "/api/jobs"), ("get", "/api/jobs/{id}"), ("delete", "/api/jobs/{id}"),
        ("post", "/api/jobs/{id}/cancel"), ("post", "/api/jobs/{id}/retry"), ("post", "/api/jobs/{id}/promote"),
        ("patch", "/api/jobs/{id}"), ("post", "/api/jobs/bulk"), ("post", "/api/jobs/batch"), ("get", "/api/jobs/stream"),
        ("get", "/api/admin/queues"), ("post", "/api/admin/queues/{name}/pause"),
        ("post", "/api/admin/queues/{name}/resume"), ("post", "/api/admin/queues/{name}/clean"),
        ("delete", "/api/admin/queues/{name}"),
        ("get", "/api/admin/workers"), ("get", "/healthz"), ("get", "/metrics"), ("get", "/api/openapi.json"),
        ("get", "/"),
    }  # fmt: skip
    assert expected <= documented_operations(doc)


async def test_every_operation_declares_its_path_parameters_and_responses(client: Any) -> None:
    doc = await openapi(client)
    for path, item in doc["paths"].items():
        wanted = set(re.findall(r"{(\w+)}", path))
        for method, op in item.items():
            if method not in METHODS:
                continue
            declared = {p["name"] for p in op.get("parameters", []) + item.get("parameters", []) if p["in"] == "path"}
            assert declared == wanted, (method, path)
            assert op.get("responses"), (method, path)
            assert all(re.fullmatch(r"[1-5]\d\d|default", code) for code in op["responses"]), (method, path)


async def test_every_schema_reference_resolves(client: Any) -> None:
    doc = await openapi(client)
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs
    for ref in refs:
        assert ref.startswith("#/"), ref
        target: Any = doc
        for part in ref[2:].split("/"):
            assert part in target, f"unresolved {ref}"
            target = target[part]


async def test_job_schema_lists_every_field_of_a_single_job(client: Any, start_worker: Any) -> None:
    await start_worker()
    job = await create_job(client, type="echo", data={"x": 1}, timeoutMs=5000)
    done = await wait_status(client, job["id"], "completed")
    schema = (await openapi(client))["components"]["schemas"]["Job"]
    assert "logs" in done
    undocumented = sorted(set(done) - set(schema["properties"]))
    assert undocumented == [], f"Job fields missing from the schema: {undocumented}"
    assert set(schema["required"]) <= set(done)


async def test_job_schema_status_enum_is_every_status(client: Any) -> None:
    schema = (await openapi(client))["components"]["schemas"]["Job"]
    assert sorted(schema["properties"]["status"]["enum"]) == sorted(STATUSES)


async def test_queue_schema_lists_every_field_of_the_queue_overview(client: Any) -> None:
    await create_job(client, queue="alpha", type="echo")
    [queue] = (await get_ok(client, "/api/admin/queues"))["queues"]
    schema = (await openapi(client))["components"]["schemas"]["Queue"]
    assert sorted(set(queue) - set(schema["properties"])) == []
    assert set(schema["required"]) <= set(queue)


async def test_worker_schema_lists_every_field_of_a_listed_worker(client: Any, start_worker: Any) -> None:
    await start_worker()
    [worker] = (await get_ok(client, "/api/admin/workers"))["workers"]
    schema = (await openapi(client))["components"]["schemas"]["Worker"]
    assert sorted(set(worker) - set(schema["properties"])) == []


# -- /metrics ------------------------------------------------------------------------------------
async def test_metrics_is_prometheus_text(client: Any) -> None:
    await create_job(client, queue="alpha", type="echo")
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    assert "version=0.0.4" in response.headers["Content-Type"]
    text = await response.text()
    assert text.endswith("\n")
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"jobline_jobs", "jobline_jobs_completed", "jobline_jobs_failed", "jobline_workers",
            "jobline_job_duration_seconds"} <= names  # fmt: skip


async def test_metrics_of_an_empty_store_parse(client: Any) -> None:
    families = await metrics(client)
    assert samples(families["jobline_workers"]) == {(): 0}
    assert samples(families["jobline_jobs"]) == {}


async def test_metrics_declare_each_family_once(client: Any) -> None:
    await create_job(client, queue="alpha", type="echo")
    await create_job(client, queue="beta", type="echo")
    types = re.findall(r"^# TYPE (\S+) ", await metrics_text(client), re.M)
    assert len(types) == len(set(types)), types


async def test_job_gauges_match_the_queue_counts(client: Any, start_worker: Any) -> None:
    await make_activity(client, start_worker)
    counts = await queue_counts(client)
    assert counts["alpha"] == {
        "waiting": 1, "delayed": 1, "active": 1, "completed": 3, "failed": 1, "cancelled": 0, "waiting-children": 0,
    }  # fmt: skip
    assert counts["beta"] == {
        "waiting": 0, "delayed": 0, "active": 1, "completed": 1, "failed": 2, "cancelled": 1, "waiting-children": 0,
    }  # fmt: skip
    family = (await metrics(client))["jobline_jobs"]
    assert family.type == "gauge"
    expected = {
        (("queue", queue), ("status", status)): count
        for queue, per_status in counts.items()
        for status, count in per_status.items()
    }
    assert samples(family) == expected


async def test_completed_and_failed_totals_count_finished_jobs_per_queue(client: Any, start_worker: Any) -> None:
    await make_activity(client, start_worker)
    families = await metrics(client)
    completed, failed = families["jobline_jobs_completed"], families["jobline_jobs_failed"]
    assert completed.type == failed.type == "counter"
    assert samples(completed, "jobline_jobs_completed_total") == {(("queue", "alpha"),): 3, (("queue", "beta"),): 1}
    assert samples(failed, "jobline_jobs_failed_total") == {(("queue", "alpha"),): 1, (("queue", "beta"),): 2}


async def test_failed_total_counts_a_retried_job_once(client: Any, start_worker: Any) -> None:
    await start_worker()
    job = await create_job(client, type="fail", maxAttempts=3, backoffMs=0)
    await wait_status(client, job["id"], "failed")
    family = (await metrics(client))["jobline_jobs_failed"]
    assert samples(family, "jobline_jobs_failed_total") == {(("queue", "default"),): 1}


async def test_totals_never_drop_when_jobs_are_cleaned(client: Any, start_worker: Any) -> None:
    await start_worker()
    ids = [(await create_job(client, type="echo"))["id"] for _ in range(2)]
    for job_id in ids:
        await wait_status(client, job_id, "completed")
    response = await client.post("/api/admin/queues/default/clean", json={"status": "completed"})
    assert (await response.json()) == {"removed": 2}
    families = await metrics(client)
    assert samples(families["jobline_jobs_completed"], "jobline_jobs_completed_total") == {(("queue", "default"),): 2}
    histogram = families["jobline_job_duration_seconds"]
    assert samples(histogram, "jobline_job_duration_seconds_count") == {(("queue", "default"),): 2}
    assert samples(families["jobline_jobs"])[(("queue", "default"), ("status", "completed"))] == 0


async def test_workers_gauge_counts_live_workers(client: Any, start_worker: Any) -> None:
    assert samples((await metrics(client))["jobline_workers"]) == {(): 0}
    await start_worker(queues=("alpha",))
    await start_worker(queues=("beta",))
    family = (await metrics(client))["jobline_workers"]
    assert family.type == "gauge"
    assert samples(family) == {(): 2}


def _bucket_bound(le: str) -> float:
    return math.inf if le == "+Inf" else float(le)


async def test_duration_histogram_counts_completed_jobs_in_cumulative_buckets(
    client: Any, start_worker: Any
) -> None:
    await start_worker(queues=("alpha",))
    ids = [(await create_job(client, queue="alpha", type="echo"))["id"] for _ in range(2)]
    ids += [(await create_job(client, queue="alpha", type="block", data={"seconds": 1.2}))["id"] for _ in range(2)]
    ids.append((await create_job(client, queue="alpha", type="fail", maxAttempts=1))["id"])
    for job_id in ids:
        await wait_status(client, job_id, "completed", "failed")
    families = await metrics(client)
    histogram = families["jobline_job_duration_seconds"]
    assert histogram.type == "histogram"
    completed_total = samples(families["jobline_jobs_completed"], "jobline_jobs_completed_total")[(("queue", "alpha"),)]
    assert completed_total == 4
    [count] = samples(histogram, "jobline_job_duration_seconds_count").values()
    assert count == completed_total  # the failed job is not in the histogram
    buckets = sorted(
        (_bucket_bound(s.labels["le"]), s.value)
        for s in histogram.samples
        if s.name == "jobline_job_duration_seconds_bucket" and s.labels["queue"] == "alpha"
    )
    bounds = [b for b, _ in buckets]
    values = [value for _, value in buckets]
    assert len(set(bounds)) == len(bounds) and bounds[-1] == math.inf
    assert values == sorted(values), "buckets must be cumulative"
    assert values[-1] == count
    by_bound = dict(buckets)
    assert by_bound[1.0] == 2  # the two echo jobs; the 1.2 s block jobs are above 1 s
    assert by_bound[math.inf] - by_bound[1.0] == 2
    [total_seconds] = samples(histogram, "jobline_job_duration_seconds_sum").values()
    assert 2.4 <= total_seconds < 30


@pytest.mark.parametrize("status", STATUSES)
async def test_every_status_of_every_queue_has_a_gauge(client: Any, status: str) -> None:
    await create_job(client, queue="alpha", type="echo")
    family = (await metrics(client))["jobline_jobs"]
    assert (("queue", "alpha"), ("status", status)) in samples(family)
