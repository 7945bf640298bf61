"""Fuzzing the HTTP API from its own OpenAPI document, with Schemathesis.

The document the app serves at /api/openapi.json drives the requests: valid and invalid ones
(Schemathesis' positive and negative modes, its example, coverage and fuzzing phases) for every
operation except the endless SSE streams. The real server runs as a subprocess (`python server.py`)
against the tests' throwaway redis-server.

- test_api_conforms_to_its_openapi_document: every response passes four checks: never a 5xx (the
  spec: "never a traceback, never a 500 for bad input"); a status code the document lists for the
  operation; the documented Content-Type; a body that validates against the documented schema.
- test_job_routes_on_existing_jobs: the same for the {id} routes, on real jobs instead of 404s.
- test_document_and_app_agree_on_valid_input: what the document calls valid the app accepts, what it
  calls invalid the app rejects with a 4xx, and `Allow` lists the documented methods.
- test_numbers_too_big_for_a_float_are_rejected: a hand-picked input the generator cannot produce.

Bounded and reproducible: at most MAX_EXAMPLES generated cases per operation and test (plus the
deterministic example and coverage cases), `derandomize=True`, no example database. The last test
prints how many cases ran and how long they took.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
import schemathesis
from cronsim import CronSim
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from jobline import openapi
from tests.conftest import ROOT, RedisProcess, free_port
from jobline.validation import ID_RE, MAX_FLOW_DEPTH, MAX_FLOW_JOBS

MAX_EXAMPLES = 30
REQUEST_TIMEOUT_S = 10
CONFORMANCE = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
AGREEMENT = [not_a_server_error, positive_data_acceptance, negative_data_rejection, allow_header_conformance]

# The document as served: openapi_json() sends DOCUMENT through json.dumps, so its JSON round trip is
# what /api/openapi.json answers (test_served_document_is_the_fuzzed_one holds them together). Loading
# it here, not from the live server, gives one pytest item per operation at collection time.
DOCUMENT: dict[str, Any] = json.loads(json.dumps(openapi.DOCUMENT))
# An explicit config: a schemathesis.toml lying around must not change what CI runs.
schema = schemathesis.openapi.from_dict(DOCUMENT, config=schemathesis.Config()).exclude(
    path_regex=r"/stream$"  # endless SSE: the dashboard's stream, and a job's (tests/test_job_stream.py)
)

FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

RAN: Counter[str] = Counter()  # cases sent, per documented operation
STARTED: list[float] = []


class ServerProcess:
    """`python server.py` on a free port, against the given Redis."""

    def __init__(self, redis_url: str, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        cmd = [sys.executable, "server.py", "--host", "127.0.0.1", "--port", str(self.port), "--redis-url", redis_url]
        # The log goes to a file, not a pipe: an unread pipe fills up and the server blocks on its access log.
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def wait_healthy(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server.py exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server.py did not answer /healthz within {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def live_server(redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    import redis as sync_redis

    with sync_redis.Redis.from_url(redis_server.url) as r:
        r.flushall()
    server = ServerProcess(redis_server.url, tmp_path_factory.mktemp("fuzz") / "server.log")
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def http(live_server: ServerProcess) -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture
def seeded_ids(live_server: ServerProcess, http: requests.Session) -> list[str]:
    """Fresh real jobs for each {id} operation, in the states reachable without a worker."""
    ids = []
    for fields in (
        {"name": "fuzz waiting"},
        {"name": "fuzz high", "priority": "high", "queue": "fuzz"},
        {"name": "fuzz delayed", "delayMs": 3_600_000},
        {"name": "fuzz cancelled"},
    ):
        response = http.post(f"{live_server.url}/api/jobs", json=fields, timeout=REQUEST_TIMEOUT_S)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    cancelled = http.post(f"{live_server.url}/api/jobs/{ids[-1]}/cancel", timeout=REQUEST_TIMEOUT_S)
    assert cancelled.status_code == 200, cancelled.text
    return ids


IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")
CASES = itertools.count()


def run_case(case: Any, server: ServerProcess, http: requests.Session, checks: list[Any]) -> None:
    if not STARTED:
        STARTED.append(time.monotonic())
    RAN[case.operation.label] += 1
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and IDEMPOTENCY_KEY.fullmatch(key):
        # A valid key, made unique per case: generated cases reuse keys with other bodies, which the
        # API rightly answers 422 (idempotency_mismatch), a rule about history, not about one request.
        case.headers["Idempotency-Key"] = f"{key[:240]}-{next(CASES)}"
    response = case.call(base_url=server.url, session=http, timeout=REQUEST_TIMEOUT_S)
    if _oversized_flow(case.body) or _impossible_schedule(case):
        # A flow's size and depth limits (1,000 jobs, 10 levels) are written in words: no JSON
        # schema can count a tree; nor can it parse cron or know time zones. Such a body must be
        # refused (400, for that or another error it has; 404 when it was for no such schedule).
        assert response.status_code in (400, 404), response.text
        return
    case.validate_response(response, checks=checks)


def _impossible_schedule(case: Any) -> bool:
    """What a schedule body's schema cannot say: a cron expression that does not parse, a time zone
    that does not exist, or not exactly one of cron and everyMs."""
    body = case.body
    if not case.operation.path.startswith("/api/schedules") or case.method not in ("POST", "PATCH"):
        return False
    if not isinstance(body, dict):
        return False
    if case.method == "POST" or "cron" in body or "everyMs" in body:
        if (body.get("cron") is None) == (body.get("everyMs") is None):
            return True
    cron = body.get("cron")
    if isinstance(cron, str):
        try:
            if len(cron.split()) != 5:
                return True
            next(CronSim(cron, datetime(2000, 1, 1)))
        except Exception:  # noqa: BLE001 - any refusal of cronsim's
            return True
    zone = body.get("timezone")
    if isinstance(zone, str):
        try:
            ZoneInfo(zone)
        except Exception:  # noqa: BLE001
            return True
    return _oversized_flow(body.get("job"))


def _oversized_flow(body: Any) -> bool:
    trees = body.get("jobs") if isinstance(body, dict) and isinstance(body.get("jobs"), list) else [body]

    def size_depth(job: Any) -> tuple[int, int]:
        kids = job.get("children") if isinstance(job, dict) else None
        if not isinstance(kids, list) or not kids:
            return 1, 1
        below = [size_depth(kid) for kid in kids]
        return 1 + sum(n for n, _ in below), 1 + max(d for _, d in below)

    return any(n > MAX_FLOW_JOBS or d > MAX_FLOW_DEPTH for n, d in map(size_depth, trees))


@schema.parametrize()
@FUZZ_SETTINGS
def test_api_conforms_to_its_openapi_document(case: Any, live_server: ServerProcess, http: requests.Session) -> None:
    run_case(case, live_server, http, CONFORMANCE)


@schema.include(path_regex=r"\{id\}").parametrize()
@FUZZ_SETTINGS
def test_job_routes_on_existing_jobs(
    case: Any, live_server: ServerProcess, http: requests.Session, seeded_ids: list[str]
) -> None:
    """The {id} routes again, with a schema-valid generated id swapped for a real job's (chosen from the
    generated one, so a run is reproducible); the rest of the request stays as generated. Invalid ids
    (negative mode) are sent as they are: they must still be a documented 404."""
    generated = (case.path_parameters or {}).get("id")
    if isinstance(generated, str) and ID_RE.fullmatch(generated):
        case.path_parameters["id"] = seeded_ids[sum(map(ord, generated)) % len(seeded_ids)]
    run_case(case, live_server, http, CONFORMANCE)


@schema.parametrize()
@FUZZ_SETTINGS
def test_document_and_app_agree_on_valid_input(
    case: Any, live_server: ServerProcess, http: requests.Session
) -> None:
    """The document is the contract clients and tools read: a request it calls valid must not get a 4xx
    for being invalid, one it calls invalid must not be accepted, and OPTIONS' Allow must list the
    documented methods of the path."""
    run_case(case, live_server, http, AGREEMENT)


def test_served_document_is_the_fuzzed_one(live_server: ServerProcess, http: requests.Session) -> None:
    response = http.get(f"{live_server.url}/api/openapi.json", timeout=REQUEST_TIMEOUT_S)
    assert response.status_code == 200
    assert response.json() == DOCUMENT


def _strict_json(text: str) -> Any:
    """JSON as a browser reads it: NaN and Infinity are not JSON."""

    def reject(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=reject)


@pytest.mark.parametrize("number", ["1e999", "-1e999"])
def test_numbers_too_big_for_a_float_are_rejected(
    live_server: ServerProcess, http: requests.Session, number: str
) -> None:
    """Python's json reads 1e999 as float('inf'); the generator never sends it (it only produces real
    JSON numbers that fit a float), so it is hand-picked here. The app must not store it and then answer
    with `Infinity`, which no JSON parser (JSON.parse, the dashboard) accepts."""
    body = '{"name": "overflow", "data": {"n": %s}}' % number
    response = http.post(
        f"{live_server.url}/api/jobs",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=REQUEST_TIMEOUT_S,
    )
    not_json = None
    try:
        _strict_json(response.text)
    except ValueError as error:
        not_json = str(error)
    if response.status_code == 201:  # keep the bad job out of every later listing
        http.delete(f"{live_server.url}{response.headers['Location']}", timeout=REQUEST_TIMEOUT_S)
    assert not_json is None, f"POST /api/jobs {body} -> {response.status_code}, a body that is not JSON: {response.text}"
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in {"invalid_json", "validation_error"}


def test_fuzz_case_count_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    """Runs last (file order): how many cases the Schemathesis tests above sent, and in how long."""
    total = sum(RAN.values())
    if not total:
        pytest.skip("no Schemathesis test ran in this session (deselected?)")
    elapsed = time.monotonic() - STARTED[0]
    lines = [
        f"schemathesis {schemathesis.__version__}: {total} cases over {len(RAN)} operations in {elapsed:.1f} s",
        *(f"  {count:5d}  {label}" for label, count in sorted(RAN.items())),
    ]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert total >= len(RAN)
