"""Bad input gets a clear 4xx in the error shape, never a 500, and changes nothing.

Every case goes over real HTTP to the app, backed by a real, throwaway redis-server.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from yarl import URL

from jobline.keys import Keys
from tests.conftest import create_job

JSON = {"Content-Type": "application/json"}


async def assert_error(response: Any, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    """The spec's error shape; a validation error names its field."""
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/json", text
    body = json.loads(text)
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    assert "Traceback" not in text
    if field is not None:
        assert error.get("field") == field or field in error["message"], error
    return error


async def assert_nothing_created(client: Any, redis_client: Any) -> None:
    response = await client.get("/api/jobs")
    assert response.status == 200
    assert (await response.json())["total"] == 0
    keys = Keys()
    assert [k async for k in redis_client.scan_iter(keys.job("*"))] == []
    assert await redis_client.zcard(keys.queue_jobs("default")) == 0
    assert await redis_client.smembers(keys.queues) == set()


async def post_raw(client: Any, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return await client.post("/api/jobs", data=body, headers=JSON if headers is None else headers)


async def post_job(client: Any, body: Any) -> Any:
    return await post_raw(client, json.dumps(body).encode())


# -- the body as a whole ------------------------------------------------------------------------

INVALID_JSON = {
    "truncated": b'{"name": "x"',
    "single quotes": b"{'name': 'x'}",
    "trailing comma": b'{"name": "x",}',
    "bare word": b"nope",
    "two documents": b'{"name": "x"} {"name": "y"}',
    "not utf-8": b'{"name": "\xff\xfe"}',
    "deeply nested": b'{"name": "x", "data": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
}


@pytest.mark.parametrize("body", INVALID_JSON.values(), ids=INVALID_JSON.keys())
async def test_invalid_json_is_400_invalid_json(client: Any, redis_client: Any, body: bytes) -> None:
    await assert_error(await post_raw(client, body), 400, "invalid_json")
    await assert_nothing_created(client, redis_client)


@pytest.mark.parametrize("body", [b"", b"   ", b"\n"], ids=["empty", "spaces", "newline"])
async def test_empty_body_is_400(client: Any, redis_client: Any, body: bytes) -> None:
    await assert_error(await post_raw(client, body), 400, "invalid_json")
    await assert_nothing_created(client, redis_client)


async def test_no_body_at_all_is_400(client: Any, redis_client: Any) -> None:
    await assert_error(await client.post("/api/jobs"), 400, "invalid_json")
    await assert_nothing_created(client, redis_client)


@pytest.mark.parametrize("body", [[], [{"name": "x"}], "x", 1, 1.5, None, True], ids=repr)
async def test_body_that_is_not_an_object_is_400(client: Any, redis_client: Any, body: Any) -> None:
    await assert_error(await post_job(client, body), 400, "validation_error")
    await assert_nothing_created(client, redis_client)


CONTENT_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "application/octet-stream"]


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
async def test_body_that_is_not_declared_json_is_415(client: Any, redis_client: Any, content_type: str) -> None:
    body = json.dumps({"name": "x"}).encode()
    response = await post_raw(client, body, {"Content-Type": content_type})
    await assert_error(response, 415, "unsupported_media_type")
    await assert_nothing_created(client, redis_client)


async def test_json_with_charset_is_accepted(client: Any) -> None:
    body = json.dumps({"name": "x"}).encode()
    response = await post_raw(client, body, {"Content-Type": "application/json; charset=utf-8"})
    assert response.status == 201


async def test_body_over_one_mebibyte_is_413(client: Any, redis_client: Any) -> None:
    body = json.dumps({"name": "x", "data": {"blob": "x" * (1024 * 1024)}}).encode()
    await assert_error(await post_raw(client, body), 413, "too_large")
    await assert_nothing_created(client, redis_client)


# -- name ---------------------------------------------------------------------------------------

BAD_NAMES = {
    "missing": {},
    "empty": {"name": ""},
    "blank": {"name": "   "},
    "201 chars": {"name": "x" * 201},
    "201 emoji": {"name": "😀" * 201},
    "number": {"name": 5},
    "null": {"name": None},
    "list": {"name": ["x"]},
    "object": {"name": {"x": 1}},
    "boolean": {"name": True},
    "NUL": {"name": "a\x00b"},
}


@pytest.mark.parametrize("body", BAD_NAMES.values(), ids=BAD_NAMES.keys())
async def test_bad_name_is_400(client: Any, redis_client: Any, body: dict[str, Any]) -> None:
    await assert_error(await post_job(client, body), 400, "validation_error", "name")
    await assert_nothing_created(client, redis_client)


async def test_name_that_is_not_unicode_text_is_400(client: Any, redis_client: Any) -> None:
    """A lone surrogate parses as JSON but is no valid text: refused, not a 500."""
    await assert_error(await post_raw(client, b'{"name": "bad \\ud800 text"}'), 400, "validation_error", "name")
    await assert_nothing_created(client, redis_client)


@pytest.mark.parametrize("name", ["x" * 200, "😀" * 200, "x", " padded "], ids=["200", "200 emoji", "1", "padded"])
async def test_name_of_1_to_200_characters_is_accepted(client: Any, name: str) -> None:
    job = await create_job(client, name=name)
    assert job["name"] == name


# -- unknown fields -----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["foo", "Name", "status", "id", "rev", "attemptsMade", "delay", "timeout"])
async def test_unknown_field_is_400(client: Any, redis_client: Any, field: str) -> None:
    response = await post_job(client, {"name": "x", field: 1})
    await assert_error(response, 400, "validation_error", field)
    await assert_nothing_created(client, redis_client)


# -- type and queue -----------------------------------------------------------------------------

BAD_NAMES_FOR_KEYS = {
    "colon": "a:b",
    "braces": "{x}",
    "star": "*",
    "question mark": "a?",
    "NUL": "a\x00",
    "space": "a b",
    "slash": "a/b",
    "non-ascii": "é",
    "trailing newline": "a\n",
    "65 chars": "x" * 65,
    "empty": "",
    "number": 5,
    "null": None,
    "list": ["a"],
    "object": {"a": 1},
    "boolean": True,
}


@pytest.mark.parametrize("field", ["type", "queue"])
@pytest.mark.parametrize("value", BAD_NAMES_FOR_KEYS.values(), ids=BAD_NAMES_FOR_KEYS.keys())
async def test_bad_type_or_queue_is_400(client: Any, redis_client: Any, field: str, value: Any) -> None:
    await assert_error(await post_job(client, {"name": "x", field: value}), 400, "validation_error", field)
    await assert_nothing_created(client, redis_client)


@pytest.mark.parametrize("field", ["type", "queue"])
@pytest.mark.parametrize("value", ["x" * 64, "a", "A-z_0.9", "emails.v2"])
async def test_good_type_or_queue_is_accepted(client: Any, field: str, value: str) -> None:
    job = await create_job(client, **{field: value})
    assert job[field] == value


# -- data ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [[], [1], "x", 1, 1.5, True, None], ids=repr)
async def test_data_that_is_not_an_object_is_400(client: Any, redis_client: Any, data: Any) -> None:
    await assert_error(await post_job(client, {"name": "x", "data": data}), 400, "validation_error", "data")
    await assert_nothing_created(client, redis_client)


def data_of_encoded_size(size: int) -> dict[str, str]:
    data = {"blob": "x" * (size - len('{"blob":""}'))}
    assert len(json.dumps(data, separators=(",", ":")).encode()) == size
    return data


async def test_data_over_64_kib_encoded_is_400(client: Any, redis_client: Any) -> None:
    body = {"name": "x", "data": data_of_encoded_size(64 * 1024 + 1)}
    await assert_error(await post_job(client, body), 400, "validation_error", "data")
    await assert_nothing_created(client, redis_client)


async def test_data_of_64_kib_encoded_is_accepted(client: Any) -> None:
    data = data_of_encoded_size(64 * 1024)
    job = await create_job(client, data=data)
    assert job["data"] == data


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity"])
async def test_data_with_non_json_numbers_is_400(client: Any, redis_client: Any, number: bytes) -> None:
    """NaN and Infinity are not JSON: a job holding them would break every strict JSON reader."""
    response = await post_raw(client, b'{"name": "x", "data": {"n": ' + number + b"}}")
    assert response.status == 400, await response.text()
    assert (await response.json())["error"]["code"] in ("invalid_json", "validation_error")
    await assert_nothing_created(client, redis_client)


# -- priority -----------------------------------------------------------------------------------


@pytest.mark.parametrize("priority", ["low", "HIGH", "urgent", "", 1, 0, True, None, [], ["high"], {}], ids=repr)
async def test_bad_priority_is_400(client: Any, redis_client: Any, priority: Any) -> None:
    response = await post_job(client, {"name": "x", "priority": priority})
    await assert_error(response, 400, "validation_error", "priority")
    await assert_nothing_created(client, redis_client)


# -- the integer options ------------------------------------------------------------------------

INT_FIELDS = ["delayMs", "maxAttempts", "backoffMs", "timeoutMs"]
BAD_INTS = {
    "negative": -1,
    "very negative": -(2**63),
    "huge": 10**12,
    "enormous": 10**30,
    "float": 1.5,
    "whole float": 2.0,
    "string": "10",
    "true": True,
    "false": False,
    "list": [1],
    "object": {"ms": 1},
}


@pytest.mark.parametrize("field", INT_FIELDS)
@pytest.mark.parametrize("value", BAD_INTS.values(), ids=BAD_INTS.keys())
async def test_bad_integer_option_is_400(client: Any, redis_client: Any, field: str, value: Any) -> None:
    await assert_error(await post_job(client, {"name": "x", field: value}), 400, "validation_error", field)
    await assert_nothing_created(client, redis_client)


@pytest.mark.parametrize("field", ["maxAttempts", "timeoutMs"])
async def test_zero_is_400_where_it_makes_no_sense(client: Any, redis_client: Any, field: str) -> None:
    await assert_error(await post_job(client, {"name": "x", field: 0}), 400, "validation_error", field)
    await assert_nothing_created(client, redis_client)


async def test_zero_delay_is_accepted(client: Any) -> None:
    assert (await create_job(client, delayMs=0))["status"] == "waiting"


async def test_zero_backoff_is_accepted(client: Any) -> None:
    assert (await create_job(client, backoffMs=0))["backoffMs"] == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("delayMs", 366 * 24 * 3600 * 1000), ("maxAttempts", 1), ("maxAttempts", 100), ("timeoutMs", 1)],
)
async def test_integer_option_in_range_is_accepted(client: Any, field: str, value: int) -> None:
    assert (await create_job(client, **{field: value}))[field if field != "delayMs" else "status"] == (
        value if field != "delayMs" else "delayed"
    )


async def test_exponent_notation_integer_is_400(client: Any, redis_client: Any) -> None:
    response = await post_raw(client, b'{"name": "x", "maxAttempts": 1e1}')
    await assert_error(response, 400, "validation_error", "maxAttempts")
    await assert_nothing_created(client, redis_client)


async def test_integer_with_thousands_of_digits_is_400(client: Any, redis_client: Any) -> None:
    response = await post_raw(client, b'{"name": "x", "delayMs": ' + b"9" * 5000 + b"}")
    assert response.status == 400, await response.text()
    await assert_nothing_created(client, redis_client)


# -- PATCH --------------------------------------------------------------------------------------

BAD_PATCHES = {
    "empty object": (b"{}", "validation_error"),
    "bad priority": (b'{"priority": "urgent"}', "validation_error"),
    "null priority": (b'{"priority": null}', "validation_error"),
    "list priority": (b'{"priority": ["high"]}', "validation_error"),
    "other field": (b'{"priority": "high", "name": "renamed"}', "validation_error"),
    "array": (b"[]", "validation_error"),
    "empty body": (b"", "invalid_json"),
    "invalid json": (b"{", "invalid_json"),
}


@pytest.mark.parametrize(("raw", "code"), BAD_PATCHES.values(), ids=BAD_PATCHES.keys())
async def test_bad_patch_is_400_and_changes_nothing(client: Any, raw: bytes, code: str) -> None:
    job = await create_job(client)
    response = await client.patch(f"/api/jobs/{job['id']}", data=raw, headers=JSON)
    await assert_error(response, 400, code)
    after = await (await client.get(f"/api/jobs/{job['id']}")).json()
    assert after["priority"] == "normal" and after["name"] == job["name"] and after["rev"] == job["rev"]


async def test_patch_as_text_plain_is_415(client: Any) -> None:
    job = await create_job(client)
    response = await client.patch(
        f"/api/jobs/{job['id']}", data=b'{"priority": "high"}', headers={"Content-Type": "text/plain"}
    )
    await assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize("name", ["cancel", "retry", "promote"])
async def test_action_body_as_text_plain_is_415(client: Any, name: str) -> None:
    job = await create_job(client)
    response = await client.post(
        f"/api/jobs/{job['id']}/{name}", data=b"{}", headers={"Content-Type": "text/plain"}
    )
    await assert_error(response, 415, "unsupported_media_type")
    after = await (await client.get(f"/api/jobs/{job['id']}")).json()
    assert after["status"] == "waiting" and after["rev"] == job["rev"]


# -- the list route's query ---------------------------------------------------------------------

BAD_QUERIES = {
    "limit 0": ("limit=0", "limit"),
    "limit 501": ("limit=501", "limit"),
    "limit -1": ("limit=-1", "limit"),
    "limit abc": ("limit=abc", "limit"),
    "limit empty": ("limit=", "limit"),
    "limit float": ("limit=1.5", "limit"),
    "limit exponent": ("limit=1e2", "limit"),
    "limit huge": ("limit=99999999999999999999", "limit"),
    "offset -1": ("offset=-1", "offset"),
    "offset abc": ("offset=abc", "offset"),
    "offset float": ("offset=0.5", "offset"),
    "unknown status": ("status=bogus", "status"),
    "capitalised status": ("status=Waiting", "status"),
    "one unknown among known": ("status=waiting,bogus", "status"),
    "queue with colon": ("queue=a:b", "queue"),
    "queue star": ("queue=*", "queue"),
    "queue braces": ("queue=%7Bx%7D", "queue"),
    "queue NUL": ("queue=a%00", "queue"),
    "queue newline": ("queue=a%0A", "queue"),
    "queue 65 chars": ("queue=" + "x" * 65, "queue"),
    "type with colon": ("type=a:b", "type"),
    "type star": ("type=*", "type"),
    "type space": ("type=a%20b", "type"),
    "type newline": ("type=a%0A", "type"),
}


@pytest.mark.parametrize(("query", "field"), BAD_QUERIES.values(), ids=BAD_QUERIES.keys())
async def test_bad_list_query_is_400(client: Any, query: str, field: str) -> None:
    response = await client.get(URL(f"/api/jobs?{query}", encoded=True))
    await assert_error(response, 400, "validation_error", field)


# -- ids ----------------------------------------------------------------------------------------

BAD_IDS = {
    "colon": "a:b",
    "braces": "%7Bx%7D",
    "star": "*",
    "star pattern": "jobline:job:*",
    "NUL": "%00",
    "NUL inside": "ab%00cd",
    "newline": "abc%0A",
    "space": "a%20b",
    "dots": "a.b",
    "65 chars": "x" * 65,
    "8,000 chars": "x" * 8_000,
    "10,000 chars": "x" * 10_000,
}
ID_ROUTES = [
    ("GET", "/api/jobs/{id}"),
    ("DELETE", "/api/jobs/{id}"),
    ("PATCH", "/api/jobs/{id}"),
    ("POST", "/api/jobs/{id}/cancel"),
    ("POST", "/api/jobs/{id}/retry"),
    ("POST", "/api/jobs/{id}/promote"),
]


@pytest.mark.parametrize(("method", "route"), ID_ROUTES, ids=[f"{m} {r}" for m, r in ID_ROUTES])
@pytest.mark.parametrize("raw_id", BAD_IDS.values(), ids=BAD_IDS.keys())
async def test_bad_id_is_404_not_found(client: Any, redis_client: Any, method: str, route: str, raw_id: str) -> None:
    await create_job(client)  # something that a pattern could match
    url = URL(route.replace("{id}", raw_id), encoded=True)
    body = {"json": {"priority": "high"}} if method == "PATCH" else {}
    response = await client.request(method, url, **body)
    await assert_error(response, 404, "not_found")
    listed = await (await client.get("/api/jobs")).json()
    assert listed["total"] == 1 and listed["jobs"][0]["status"] == "waiting"


# -- routes and methods -------------------------------------------------------------------------

UNKNOWN_ROUTES = [
    ("GET", "/api/nope"),
    ("GET", "/api/job"),
    ("GET", "/api/jobs/abc/logs"),
    ("POST", "/api/jobs/abc/explode"),
    ("GET", "/nope"),
]


@pytest.mark.parametrize(("method", "path"), UNKNOWN_ROUTES, ids=[f"{m} {p}" for m, p in UNKNOWN_ROUTES])
async def test_unknown_route_is_404_json(client: Any, method: str, path: str) -> None:
    await assert_error(await client.request(method, path), 404, "not_found")


WRONG_METHODS = [
    ("PUT", "/api/jobs"),
    ("DELETE", "/api/jobs"),
    ("PATCH", "/api/jobs"),
    ("PUT", "/api/jobs/abc"),
    ("POST", "/api/jobs/abc"),
    ("GET", "/api/jobs/abc/cancel"),
    ("DELETE", "/api/jobs/abc/retry"),
    ("POST", "/healthz"),
]


@pytest.mark.parametrize(("method", "path"), WRONG_METHODS, ids=[f"{m} {p}" for m, p in WRONG_METHODS])
async def test_wrong_method_is_405_json(client: Any, method: str, path: str) -> None:
    response = await client.request(method, path)
    await assert_error(response, 405, "method_not_allowed")


async def test_405_says_which_methods_are_allowed(client: Any) -> None:
    """HTTP requires a 405 to carry an Allow header."""
    response = await client.put("/api/jobs")
    assert response.status == 405
    assert {m.strip() for m in response.headers.get("Allow", "").split(",")} >= {"GET", "POST"}
