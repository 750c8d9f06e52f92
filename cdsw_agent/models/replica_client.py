"""Calls from the master's model router to model replicas: pooled keep-alive HTTP/1.1
connections, each an asyncio protocol whose answers are parsed by httptools (the C parser
uvicorn itself uses).

Why not a general HTTP client: the forward is most of the master's CPU on a model call, and
aiohttp's client (timeout contexts, header multidicts, the cookie jar, tracing hooks, a response
object per call) cost 125-140 µs of CPU per call on the 2-core development machine where this
costs about 20 µs (benchmarks/README.md, "Model serving"). A replica is our own server
(engine/model_server.py) with one fixed exchange: `POST /` with a JSON body, a token header and
a Content-Length, answered with a status and a body. So the request head is built once per
replica, and only what that exchange needs is here: connect (with a timeout), send, parse,
keep the connection for the next call, time out, and say which of two things went wrong:

- `Unreachable`: the connection could not be made, so nothing was sent and the call may go to
  another replica;
- `NoAnswer`: the request was sent and no complete answer came back (the replica closed the
  connection, answered something that is not HTTP, answered too much, or took longer than the
  timeout). The call may have run, so it is not sent again.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Deque, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

import httptools

from ..engine.model_server import TOKEN_HEADER

CONNECT_TIMEOUT_SECONDS = 5.0
# idle connections are closed after this: shorter than a replica's keep-alive (75 s, in
# engine/model_server.py), so the master never sends on a connection the replica is closing
IDLE_SECONDS = 30.0
CONNECTIONS_PER_REPLICA = 256  # calls beyond this wait for a connection to be free
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # the replica's own limit on a request's body
# replicas come and go with every redeploy: past this many addresses, those with no connection
# left are forgotten
MAX_POOLS = 256


class Unreachable(Exception):
    """No connection to the replica: nothing was sent."""


class NoAnswer(Exception):
    """The request was sent and no complete answer came back; the message says why."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one call at a time."""

    def __init__(self) -> None:
        self.transport: Optional[asyncio.Transport] = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: Optional[asyncio.Future] = None
        self.body: List[bytes] = []
        self.size = 0
        self.closed = False
        self.idle_since = 0.0

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(NoAnswer("the replica's answer is not HTTP (%s)" % e))

    def eof_received(self) -> Optional[bool]:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.closed = True
        self._fail(NoAnswer("the replica closed the connection before answering"))

    # --- httptools callbacks
    def on_body(self, chunk: bytes) -> None:
        if self.waiter is None:  # more than one answer to one request
            self.close()
            return
        self.size += len(chunk)
        if self.size > MAX_ANSWER_BYTES:
            self._fail(NoAnswer("the replica's answer is larger than 64 MiB"))
            return
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), b"".join(self.body),
                               self.parser.should_keep_alive()))
        self.body, self.size = [], 0

    # --- used by the pool
    def send(self, data: bytes, waiter: asyncio.Future) -> None:
        self.waiter = waiter
        assert self.transport is not None
        self.transport.write(data)

    def timed_out(self, seconds: float) -> None:
        self._fail(NoAnswer("no answer within %g s" % seconds))

    def _fail(self, error: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()  # pending bytes are worthless: the call is over


class _ReplicaPool:
    """The connections to one replica address, for one event loop."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.host, self.port = host, port
        self.head = ("POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                     "%s: " % (path or "/", host, port, TOKEN_HEADER)).encode("latin-1")
        self.idle: List[_Connection] = []
        self.open = 0  # connections made or being made, idle or busy
        self.waiting: Deque[asyncio.Future] = deque()

    async def _acquire(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        while True:
            now = time.monotonic()
            while self.idle:
                conn = self.idle.pop()  # the most recently used: the least likely to be stale
                if not conn.closed and now - conn.idle_since < IDLE_SECONDS:
                    return conn
                self._discard(conn)
            if self.open < CONNECTIONS_PER_REPLICA:
                self.open += 1
                try:
                    _, conn = await asyncio.wait_for(loop.create_connection(
                        _Connection, self.host, self.port), CONNECT_TIMEOUT_SECONDS)
                except (OSError, asyncio.TimeoutError) as e:
                    self.open -= 1
                    self._wake()
                    # the type only: the answer goes to callers, who need no internal address
                    raise Unreachable(type(e).__name__) from None
                except BaseException:
                    self.open -= 1
                    self._wake()
                    raise
                return conn  # type: ignore[return-value]
            waiter = loop.create_future()
            self.waiting.append(waiter)
            try:
                await waiter  # a connection was released or discarded
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # pass the turn this caller no longer takes
                raise

    def _release(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        self.idle.append(conn)
        self._wake()

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self.open -= 1
        self._wake()

    def _wake(self) -> None:
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def post(self, token: str, payload: bytes, timeout: float) -> Tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        conn = await self._acquire(loop)
        waiter = loop.create_future()
        timer = loop.call_later(timeout, conn.timed_out, timeout)
        try:
            conn.send(b"".join((self.head, token.encode("latin-1"), b"\r\nContent-Length: ",
                                str(len(payload)).encode(), b"\r\n\r\n", payload)), waiter)
            status, body, keep_alive = await waiter
        except BaseException:  # a failure, or the caller's cancellation: the state is unknown
            self._discard(conn)
            raise
        finally:
            timer.cancel()
        if keep_alive and not conn.closed:
            self._release(conn)
        else:
            self._discard(conn)
        return status, body

    def unused(self) -> bool:
        """Drops the idle connections that are closed or expired; True when none is left and
        no call uses or waits for one."""
        now = time.monotonic()
        for conn in list(self.idle):
            if conn.closed or now - conn.idle_since >= IDLE_SECONDS:
                self.idle.remove(conn)
                self._discard(conn)
        return self.open == 0 and not self.waiting

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class ReplicaClient:
    """Connection pools by replica address, for the event loop that made this client."""

    def __init__(self) -> None:
        self._pools: Dict[str, _ReplicaPool] = {}

    def _pool(self, url: str) -> _ReplicaPool:
        pool = self._pools.get(url)
        if pool is None:
            if len(self._pools) >= MAX_POOLS:
                for old in [u for u, p in self._pools.items() if p.unused()]:
                    del self._pools[old]
            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname:
                raise ValueError("a replica address must be http://HOST:PORT/, not %r" % url)
            pool = self._pools[url] = _ReplicaPool(parts.hostname, parts.port or 80,
                                                   parts.path)
        return pool

    async def post(self, url: str, token: str, payload: bytes,
                   timeout: float) -> Tuple[int, bytes]:
        """(status, body) of the replica's answer to `payload`; raises Unreachable or
        NoAnswer."""
        if not (token.isascii() and token.isprintable()):  # no line break into the head
            raise ValueError("a replica token is printable ASCII")
        return await self._pool(url).post(token, payload, timeout)

    def close(self) -> None:
        """Closes the idle connections (at the server's shutdown); busy ones close when their
        call ends."""
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
