"""A stream's pub/sub connection, read by a protocol of its own instead of by redis-py.

Every open stream holds one subscription and gets its own copy of every message, so the cost of
reading one copy is paid once per event and per stream. Through redis-py a copy went through the
transport's StreamReader, then a chain of five coroutines (read_response and its timeout and
error handling, the parser's read, the StreamReader's read) and a `can_read` per message. Here the
transport hands its bytes straight to a hiredis reader, and the stream wakes up once for whatever
arrived: a stream that fell behind gets everything pending in one go. Reads go into one buffer
(a plain Protocol gets a new 256 KiB bytes object for each).

redis-py still opens, authenticates and configures the connection (TLS, AUTH, HELLO and the rest
come from the client's URL and options); only then is it handed over, and redis-py never touches it
again.
"""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
import redis.asyncio as redis
import redis.exceptions

# Stop reading the socket while this much arrived that the stream has not taken yet (it is stuck
# writing to a slow client): Redis then holds the rest, and cuts the subscription at its
# output-buffer limit for slow subscribers, instead of this process buffering without bound.
HIGH_WATER_BYTES = 256 * 1024
READ_SIZE = 64 * 1024
Reply = list[Any]  # e.g. ["message", channel, data], ["psubscribe", pattern, count]


class Subscription(asyncio.BufferedProtocol):
    """Replies in order, as they come, to whoever waits in `replies()`; `close()` ends it."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer  # held: a StreamWriter closes its transport when it is collected
        self._transport: asyncio.Transport = writer.transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()  # looked up once: each lookup is a getpid() system call
        self._parser = hiredis.Reader(encoding="utf-8", errors="replace")
        self._buffer = memoryview(bytearray(READ_SIZE))  # read into, then copied by the parser
        self._replies: list[Reply] = []
        self._unread_bytes = 0  # received since the stream last took the replies
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None

    @classmethod
    async def open(cls, client: redis.Redis, command: str, *channels: str) -> Subscription:
        """A new connection to `client`'s Redis that sent `command` (SUBSCRIBE or PSUBSCRIBE);
        its confirmation comes among the replies."""
        connection = client.connection_pool.make_connection()  # a connection of its own, outside the pool
        await connection.connect()
        # The handshake's replies are all read: nothing is buffered on redis-py's side.
        writer = connection._writer
        assert writer is not None
        connection._reader = connection._writer = None  # ours now: redis-py must not close it again
        subscription = cls(writer)
        writer.transport.set_protocol(subscription)
        writer.transport.write(hiredis.pack_command((command, *channels)))
        return subscription

    # -- asyncio.BufferedProtocol -------------------------------------------------------------
    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._parser.feed(self._buffer, 0, nbytes)
        reply = self._parser.gets()
        while reply is not False:
            self._replies.append(reply)
            reply = self._parser.gets()
        self._unread_bytes += nbytes
        if self._unread_bytes > HIGH_WATER_BYTES and not self._paused:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._error = redis.exceptions.ConnectionError(f"subscription closed{f' ({exc})' if exc else ''}")
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- for the stream -----------------------------------------------------------------------
    async def replies(self) -> list[Reply]:
        """Every reply received since the last call, in order; waits for one if there is none.
        Once the connection is gone (after what arrived before), raises ConnectionError."""
        if not self._replies and self._error is None:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if not self._replies:
            raise self._error  # type: ignore[misc]
        replies, self._replies = self._replies, []
        self._unread_bytes = 0
        if self._paused:
            self._paused = False
            self._transport.resume_reading()
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):  # e.g. NOPERM: an ACL forbids the channel
                raise redis.exceptions.ResponseError(str(reply))
        return replies

    def close(self) -> None:
        """Ends the subscription: a `replies()` waiting now or later raises ConnectionError."""
        self._transport.close()
