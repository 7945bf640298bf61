"""A stream's place in the event logs, and the SSE text it sends.

The SSE `id` of an event is a cursor: for each queue, the log entry id of the last event sent
(`queue=ms-seq,...` in queue order, or `0-0` before any; opaque to clients). Both streams write
one after every event, so the cursor keeps each queue's part of its text and the id after an event
is one join, not a format (and sort) of every queue: with a few hundred queues that was most of
what an event cost.
"""

from __future__ import annotations

import re

from .validation import NAME_RE

MAX_CURSOR_QUEUES = 10_000
_ENTRY_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")

EventId = tuple[int, int]
START: EventId = (0, 0)  # before a log's first entry
Entry = tuple[str, dict[str, str]]  # a log entry: its id, its fields


def parse_event_id(raw: str) -> EventId | None:
    match = _ENTRY_ID.match(raw)
    return (int(match[1]), int(match[2])) if match else None


def entry_position(entry_id: str) -> EventId:
    """An entry id as Redis gave it (always well-formed): quicker than parse_event_id."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def format_event_id(event_id: EventId) -> str:
    return f"{event_id[0]}-{event_id[1]}"


def parse_cursor(raw: str | None) -> dict[str, EventId] | None:
    """`queue=ms-seq,...` (or `0-0`: no event yet) as {queue: position}; None if malformed."""
    if raw == "0-0":
        return {}
    cursor: dict[str, EventId] = {}
    for part in (raw or "").split(",", MAX_CURSOR_QUEUES):
        queue, _, position = part.partition("=")
        event_id = parse_event_id(position)
        if not NAME_RE.fullmatch(queue) or event_id is None:
            return None
        cursor[queue] = event_id
    return cursor


class Cursor:
    """Per queue, the log position of the last event written to the client. Its text, the SSE id,
    is `queue=ms-seq,...` in queue order (a queue at START is left out: missing means the same),
    or `0-0`; each queue's part of it is kept, ready to join."""

    def __init__(self, positions: dict[str, EventId] | None = None) -> None:
        self.positions = {q: e for q, e in sorted((positions or {}).items()) if e != START}
        self.parts = {q: f"{q}={format_event_id(e)}" for q, e in self.positions.items()}

    def __contains__(self, queue: str) -> bool:
        return queue in self.positions

    def get(self, queue: str) -> EventId:
        return self.positions.get(queue, START)

    @property
    def text(self) -> str:
        return ",".join(self.parts.values()) or "0-0"

    def advance(self, batch: Batch) -> None:
        """Past a batch's events, once they are written."""
        self.positions.update(batch.after)
        self.parts = batch.parts


def sse(event: str, data: str, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


class Batch:
    """Events to send in one write. The cursor moves past them only once they are written: a batch
    cut short by a broken subscription is dropped, and replayed from the event logs."""

    def __init__(self, cursor: Cursor, final_event: str | None = None) -> None:
        self.cursor, self.final_event = cursor, final_event
        self.after: dict[str, EventId] = {}  # the positions this batch moves
        self.parts = cursor.parts  # the id's parts after the last event added (copied on write)
        self.chunks: list[str] = []
        self.final = False  # holds final_event: the stream ends once it is written

    def add(self, queue: str, entry_id: str, event: str, payload: str) -> None:
        event_id = entry_position(entry_id)
        if event_id <= (self.after.get(queue) or self.cursor.get(queue)):
            return  # sent already (replay and live overlap)
        if self.parts is self.cursor.parts:
            self.parts = dict(self.parts)
        if queue not in self.parts:  # a queue's first event: keep the text in queue order
            self.parts = dict(sorted({**self.parts, queue: ""}.items()))
        self.parts[queue] = f"{queue}={entry_id}"
        self.after[queue] = event_id
        self.chunks.append(f"id: {','.join(self.parts.values())}\nevent: {event}\ndata: {payload}\n\n")
        self.final = self.final or event == self.final_event


