"""A small Server-Sent Events reader for the tests (the wire format, parsed as a browser would)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class Event:
    event: str
    data: str
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class SSEReader:
    response: aiohttp.ClientResponse
    comments: list[str] = field(default_factory=list)
    retry: int | None = None

    async def next(self, timeout: float = 10) -> Event:
        return await asyncio.wait_for(self._next(), timeout)

    async def _next(self) -> Event:
        event, data, event_id = "message", [], None
        while True:
            raw = await self.response.content.readline()
            if not raw:
                raise EOFError("stream closed")
            line = raw.decode().rstrip("\n")
            if line == "":
                if data:
                    return Event(event, "\n".join(data), event_id)
                event, data, event_id = "message", [], None
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                event_id = value
            elif name == "retry":
                self.retry = int(value)

    async def collect(self, count: int, timeout: float = 10) -> list[Event]:
        return [await self.next(timeout) for _ in range(count)]

    async def until(self, predicate: Any, timeout: float = 10) -> list[Event]:
        """Read events until one matches; returns all read, the match last."""
        seen: list[Event] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = await self.next(max(deadline - loop.time(), 0.01))
            seen.append(event)
            if predicate(event):
                return seen
