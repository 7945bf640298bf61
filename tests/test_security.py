"""API_TOKEN, CORS, the dashboard's security headers, and what the logs may say."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from typing import Any

import pytest

from jobline.server import DASHBOARD, Settings, create_app
from tests.sse import SSEReader

TOKEN = "s3cret-token-value"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LOCAL = "local-token-from-run-py"


@pytest.fixture
async def guarded(aiohttp_client: Any, redis_url: str) -> Any:
    return await aiohttp_client(create_app(Settings(redis_url=redis_url, api_token=TOKEN)))


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/jobs"),
        ("POST", "/api/jobs"),
        ("GET", "/api/jobs/abc"),
        ("DELETE", "/api/jobs/abc"),
        ("POST", "/api/jobs/abc/cancel"),
        ("POST", "/api/jobs/bulk"),
        ("GET", "/api/jobs/stream"),
        ("GET", "/api/admin/queues"),
        ("POST", "/api/admin/queues/default/pause"),
        ("GET", "/api/admin/workers"),
        ("GET", "/api/openapi.json"),
    ],
)
async def test_every_api_route_needs_the_token(guarded: Any, method: str, path: str) -> None:
    response = await guarded.request(method, path, json={"name": "x"})
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("header", ["Bearer wrong", f"Bearer {TOKEN}x", TOKEN, f"Basic {TOKEN}", "Bearer "])
async def test_a_wrong_token_is_refused(guarded: Any, header: str) -> None:
    response = await guarded.get("/api/jobs", headers={"Authorization": header})
    assert response.status == 401


async def test_the_right_token_opens_the_api(guarded: Any) -> None:
    created = await guarded.post("/api/jobs", json={"name": "with token"}, headers=AUTH)
    assert created.status == 201
    listing = await guarded.get("/api/jobs", headers=AUTH)
    assert (await listing.json())["total"] == 1


async def test_a_refused_request_changes_nothing(guarded: Any) -> None:
    assert (await guarded.post("/api/jobs", json={"name": "sneaky"})).status == 401
    assert (await (await guarded.get("/api/jobs", headers=AUTH)).json())["total"] == 0


async def test_the_stream_takes_the_token_as_a_query_parameter(guarded: Any) -> None:
    assert (await guarded.get("/api/jobs/stream?access_token=nope")).status == 401
    response = await guarded.get(f"/api/jobs/stream?access_token={TOKEN}")
    assert response.status == 200
    stream = SSEReader(response)
    await guarded.post("/api/jobs", json={"name": "seen"}, headers=AUTH)
    assert (await stream.next()).json()["job"]["name"] == "seen"


async def test_only_the_stream_accepts_the_query_parameter(guarded: Any) -> None:
    assert (await guarded.get(f"/api/jobs?access_token={TOKEN}")).status == 401


@pytest.mark.parametrize("path", ["/", "/healthz"])
async def test_page_and_health_stay_public(guarded: Any, path: str) -> None:
    assert (await guarded.get(path)).status == 200


async def test_the_public_page_holds_no_job_data(guarded: Any) -> None:
    await guarded.post("/api/jobs", json={"name": "private-name-4711"}, headers=AUTH)
    assert "private-name-4711" not in await (await guarded.get("/")).text()


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


async def test_dashboard_policy_allows_exactly_its_own_inline_code(client: Any) -> None:
    response = await client.get("/")
    policy = response.headers["Content-Security-Policy"]
    html = DASHBOARD.read_text()
    (script,) = re.findall(r"<script>(.*?)</script>", html, re.S)
    (style,) = re.findall(r"<style>(.*?)</style>", html, re.S)
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert f"script-src {_hash(script)}" in policy
    assert f"style-src {_hash(style)}" in policy
    assert "default-src 'none'" in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_api_responses_are_nosniff(client: Any) -> None:
    assert (await client.get("/api/jobs")).headers["X-Content-Type-Options"] == "nosniff"


async def test_page_has_no_inline_handlers_or_external_resources() -> None:
    html = DASHBOARD.read_text()
    assert not re.search(r"\son[a-z]+\s*=", html.split("<script>")[0])
    assert not re.search(r"""(src|href)=["']https?://""", html)


async def test_a_page_opened_from_disk_may_call_the_api_with_the_local_token(aiohttp_client: Any, redis_url: str) -> None:
    client = await aiohttp_client(create_app(Settings(redis_url=redis_url, local_token=LOCAL)))
    preflight = await client.options(
        "/api/jobs",
        headers={"Origin": "null", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"},
    )
    assert preflight.status == 204
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    response = await client.get("/api/jobs", headers={"Origin": "null", "Authorization": f"Bearer {LOCAL}"})
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == "null"
    stream = await client.get(f"/api/jobs/stream?access_token={LOCAL}", headers={"Origin": "null"})
    assert stream.status == 200
    stream.close()


@pytest.mark.parametrize("origin", ["null", "https://evil.example", "http://127.0.0.1:9"])
async def test_without_a_token_no_other_origin_can_read_or_change_anything(
    aiohttp_client: Any, redis_url: str, origin: str
) -> None:
    client = await aiohttp_client(create_app(Settings(redis_url=redis_url, local_token=LOCAL)))
    job = await (await client.post("/api/jobs", json={"name": "mine"})).json()
    hostile = {"Origin": origin}
    assert (await client.get("/api/jobs", headers=hostile)).status == 401
    assert (await client.get("/api/jobs/stream", headers=hostile)).status == 401
    assert (await client.post("/api/jobs", json={"name": "evil"}, headers=hostile)).status == 401
    assert (await client.post("/api/admin/queues/default/pause", json={}, headers=hostile)).status == 401
    assert (await client.delete(f"/api/jobs/{job['id']}", headers=hostile)).status == 401
    wrong = {**hostile, "Authorization": "Bearer not-the-local-token"}
    assert (await client.get("/api/jobs", headers=wrong)).status == 401
    listing = await (await client.get("/api/jobs")).json()
    assert [j["name"] for j in listing["jobs"]] == ["mine"]
    queues = await (await client.get("/api/admin/queues")).json()
    assert not any(q["paused"] for q in queues["queues"])


async def test_a_page_of_another_origin_is_refused_even_with_no_local_token_set(client: Any) -> None:
    assert (await client.get("/api/jobs", headers={"Origin": "null"})).status == 401
    assert (await client.get("/api/jobs", headers={"Origin": "null", "Authorization": "Bearer "})).status == 401


async def test_curl_and_the_served_dashboard_need_no_token(client: Any) -> None:
    assert (await client.get("/api/jobs")).status == 200  # no Origin: curl, scripts
    own = f"http://{client.server.host}:{client.server.port}"
    response = await client.post("/api/jobs", json={"name": "from the page"}, headers={"Origin": own})
    assert response.status == 201


async def test_with_api_token_set_the_local_token_opens_nothing(aiohttp_client: Any, redis_url: str) -> None:
    app = create_app(Settings(redis_url=redis_url, api_token=TOKEN, local_token=LOCAL))
    client = await aiohttp_client(app)
    assert (await client.get("/api/jobs", headers={"Authorization": f"Bearer {LOCAL}"})).status == 401
    assert (await client.get("/api/jobs", headers={"Origin": "null", **AUTH})).status == 200


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8080", "127.0.0.1.nip.io", "192.168.1.9"])
async def test_a_request_for_another_host_name_is_refused(client: Any, host: str) -> None:
    for path in ("/api/jobs", "/", "/api/jobs/stream"):
        response = await client.get(path, headers={"Host": host})
        assert response.status == 421, path
        assert (await response.json())["error"]["code"] == "misdirected_request"


@pytest.mark.parametrize("host", ["localhost", "localhost:8080", "127.0.0.1:1", "[::1]:8080", "LOCALHOST."])
async def test_local_host_names_are_served(client: Any, host: str) -> None:
    assert (await client.get("/api/jobs", headers={"Host": host})).status == 200


async def test_allowed_hosts_adds_names(aiohttp_client: Any, redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, allowed_hosts=frozenset({"jobs.example.com"}))
    client = await aiohttp_client(create_app(settings))
    assert (await client.get("/api/jobs", headers={"Host": "jobs.example.com:8080"})).status == 200
    assert (await client.get("/api/jobs", headers={"Host": "other.example.com"})).status == 421


async def test_the_served_page_may_connect_to_its_own_origin_only(client: Any) -> None:
    policy = (await client.get("/")).headers["Content-Security-Policy"]
    assert "connect-src 'self'" in policy and "connect-src *" not in policy


async def test_other_origins_are_not_allowed_by_default(client: Any) -> None:
    preflight = await client.options(
        "/api/jobs", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status == 403
    response = await client.get("/api/jobs", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_cors_origins_are_configurable(aiohttp_client: Any, redis_url: str) -> None:
    app = create_app(Settings(redis_url=redis_url, cors_origins=frozenset({"https://ops.example"})))
    client = await aiohttp_client(app)
    response = await client.get("/api/jobs", headers={"Origin": "https://ops.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://ops.example"
    assert response.status == 401  # CORS lets the page read the answer; the token still decides
    refused = await client.get("/api/jobs", headers={"Origin": "null"})
    assert "Access-Control-Allow-Origin" not in refused.headers


async def test_a_cross_site_form_post_is_refused(client: Any) -> None:
    response = await client.post(
        "/api/jobs", data="name=evil", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status == 415
    assert (await (await client.get("/api/jobs")).json())["total"] == 0


async def test_access_log_never_shows_the_token_or_job_data(
    aiohttp_client: Any, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from jobline.security import AccessLogger

    app = create_app(Settings(redis_url=redis_url, api_token=TOKEN))
    client = await aiohttp_client(app, server_kwargs={"access_log_class": AccessLogger})
    with caplog.at_level(logging.DEBUG):
        created = await client.post(
            "/api/jobs", json={"name": "secret-job-name", "data": {"password": "hunter2"}}, headers=AUTH
        )
        assert created.status == 201
        response = await client.get(f"/api/jobs/stream?access_token={TOKEN}")
        response.close()
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert "/api/jobs" in logged
    assert TOKEN not in logged
    assert "secret-job-name" not in logged and "hunter2" not in logged
