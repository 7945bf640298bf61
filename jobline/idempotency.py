"""The `Idempotency-Key` request header (IETF httpapi draft): `@idempotent(STORE)` on a POST route.

For 24 hours, a request with a key the route has seen and the same body (compared by SHA-256) gets the
first response again, with `Idempotent-Replayed: true`, and the handler does not run; the same key with
another body is 422 `idempotency_mismatch`. A request first claims its key (`SET NX`): another request
with that key waits for it (polling, at most WAIT_S), then replays its response, or is 409 if it is still
running. Keys are per route path; the value is an opaque string (1-255 printable ASCII characters).

The handler's response is stored, a 4xx too (an invalid body stays invalid), but not a 5xx nor a 4xx
that is about the moment or the envelope rather than the body (NOT_STORED): then the claim is dropped
and a retry runs again. Errors raised before the handler (401, 413) never reach here.

The claim lasts CLAIM_MS, not 24 h: a server that dies mid-request must not lock its key for a day.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import re
import secrets
from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import scripts
from .connections import UNAVAILABLE, Client
from .errors import ApiError
from .http_errors import BODY_TIMEOUT, Handler, error_response
from .store import JobStore
from .validation import invalid

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
KEY_RE = re.compile(r"[\x20-\x7e]{1,255}")
TTL_MS = 24 * 3600 * 1000
CLAIM_MS = 60_000  # far longer than any create takes; after it, a dead server's claim is gone
WAIT_S = 5.0
POLL_S = 0.02
NOT_STORED = frozenset({408, 409, 413, 415, 425, 429})  # a retry may rightly get another answer
KEPT_HEADERS = ("Content-Type", "Location")


def idempotent(store: web.AppKey[JobStore]) -> Callable[[Handler], Handler]:
    """Make a POST handler honour Idempotency-Key. `store` finds the app's JobStore (Redis and keys)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            if HEADER not in request.headers:
                return await handler(request)
            key = parse_key(request.headers.getall(HEADER))
            body_hash = hashlib.sha256(await read_body(request)).hexdigest()
            jobs = request.app[store]
            redis_key = jobs.keys.idempotency(route_of(request), hashlib.sha256(key.encode()).hexdigest())
            claim = Claim(jobs.redis, redis_key, body_hash)
            stored = await claim.take()
            if stored is not None:
                return replay(stored)
            return await claim.run(handler, request)

        return guarded

    return decorate


def parse_key(values: list[str]) -> str:
    if len(values) != 1:
        raise invalid(HEADER, "send the header once")
    if not KEY_RE.fullmatch(values[0]):
        raise invalid(HEADER, "must be 1 to 255 printable ASCII characters")
    return values[0]


async def read_body(request: web.Request) -> bytes:
    """The raw body, within the body time limit as read_json reads it (aiohttp keeps it for the handler)."""
    try:
        async with asyncio.timeout(request.app[BODY_TIMEOUT]):
            return await request.read()
    except TimeoutError:
        request.protocol.close()  # no keep-alive: what is left of the body is never read
        raise ApiError(408, "request_timeout", "the request body did not arrive in time") from None


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


def stored(status: int) -> bool:
    return status < 500 and status not in NOT_STORED


def replay(record: dict[str, Any]) -> web.Response:
    body = None if record["body"] is None else record["body"].encode()
    return web.Response(status=record["status"], body=body, headers={**record["headers"], REPLAYED: "true"})


class Claim:
    """One request's hold on its key: take it (or find the response to replay), run, store or drop."""

    def __init__(self, client: Client, key: str, body_hash: str) -> None:
        self.client, self.key, self.body_hash = client, key, body_hash
        self.token = secrets.token_hex(8)  # so that only this request stores or drops its claim

    async def take(self) -> dict[str, Any] | None:
        """None once the key is ours; else the stored response, after waiting out a running request."""
        marker = json.dumps({"state": "running", "hash": self.body_hash, "token": self.token})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while not await self.client.set(self.key, marker, nx=True, px=CLAIM_MS):
            found = await self.client.get(self.key)
            if found is None:
                continue  # dropped or expired between the two calls: claim it again
            record = json.loads(found)
            if record["hash"] != self.body_hash:
                raise ApiError(422, "idempotency_mismatch", f"this {HEADER} came with another body; use a new key")
            if record["state"] == "done":
                return record
            if loop.time() >= deadline:
                raise ApiError(409, "conflict", "a request with this Idempotency-Key is in progress; retry later")
            await asyncio.sleep(POLL_S)
        return None

    async def run(self, handler: Handler, request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except ApiError as error:
            if not stored(error.status):
                await self.finish(None)
                raise
            response = error_response(error)
        except BaseException:
            await self.finish(None)
            raise
        await self.finish(self.record(response))
        return response

    def record(self, response: web.StreamResponse) -> str | None:
        if not isinstance(response, web.Response) or not stored(response.status):
            return None
        headers = {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}
        body = {"status": response.status, "body": response.text, "headers": headers}
        return json.dumps({"state": "done", "hash": self.body_hash, **body})

    async def finish(self, record: str | None) -> None:
        """Store the response for 24 h (with None: drop the claim, so a retry runs), if the claim is
        still ours. A Redis error is only logged: the client gets its answer either way."""
        try:
            await self.client.register_script(scripts.IDEMPOTENCY_FINISH)(
                keys=[self.key], args=[self.token, record or "", TTL_MS]
            )
        except UNAVAILABLE as error:
            log.warning("could not %s idempotency key %s: %s", "drop" if record is None else "store", self.key, error)
