"""The master's connections to model replicas (models/replica_client.py) when a replica
misbehaves: each failure is one clear error of the right kind (Unreachable: nothing was sent,
the router may try another replica; NoAnswer: the call may have run), the broken connection is
never reused, and the pool's count of connections stays exact. The replicas here are real TCP
servers on loopback that answer as scripted; test_model_replica_server.py runs the client
against the real replica servers."""

from __future__ import annotations

import asyncio
import socket
from typing import Awaitable, Callable, List

import pytest

from cdsw_agent.models import replica_client
from cdsw_agent.models.replica_client import NoAnswer, ReplicaClient, Unreachable

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    return head + await reader.readexactly(length)


class Replica:
    """A scripted replica: `handle` answers each connection; `connections` counts them."""

    def __init__(self, handle: Handler) -> None:
        self.handle, self.connections, self.requests = handle, 0, []  # type: ignore[var-annotated]

    async def __aenter__(self) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handle(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        return "http://127.0.0.1:%d/" % self.server.sockets[0].getsockname()[1]

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()


def _run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


def _no_answer(handle: Handler, message: str, timeout: float = 5.0) -> None:
    """A call to this replica ends in NoAnswer(message), and its connection is dropped."""
    async def test() -> None:
        async with Replica(handle) as url:
            client = ReplicaClient()
            with pytest.raises(NoAnswer, match=message):
                await client.post(url, "t", b"1", timeout)
            assert client._pools[url].open == 0

    _run(test)


def test_keep_alive_answers_and_the_request_sent() -> None:
    seen: List[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await _read_request(reader))
            writer.write(OK)

    async def test() -> None:
        replica = Replica(handle)
        async with replica as url:
            client = ReplicaClient()
            for _ in range(3):
                assert await client.post(url, "tok-1_x", b'{"a": 1}', 5) == (200, b"{}")
            assert replica.connections == 1
            client.close()
        port = url.rsplit(":", 1)[1].rstrip("/")
        assert seen[0] == (b"POST / HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nContent-Type: "
                           b"application/json\r\nX-CDSW-Model-Token: tok-1_x\r\n"
                           b"Content-Length: 8\r\n\r\n{\"a\": 1}" % port.encode())

    _run(test)


def test_nothing_listening_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused

        async def test() -> None:
            client = ReplicaClient()
            with pytest.raises(Unreachable, match="ConnectionRefusedError"):
                await client.post("http://127.0.0.1:%d/" % port, "t", b"1", 5)
            assert client._pools["http://127.0.0.1:%d/" % port].open == 0

        _run(test)


@pytest.mark.parametrize("answer, message", [
    (b"", "closed the connection before answering"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", "closed the connection before"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", "not HTTP"),
])
def test_a_broken_answer_is_no_answer_and_the_connection_is_not_reused(
        answer: bytes, message: str) -> None:
    calls = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _read_request(reader)
            calls[0] += 1
            if calls[0] == 1:
                writer.write(answer)  # and the server closes the connection
                await writer.drain()
                return
            writer.write(OK)

    async def test() -> None:
        replica = Replica(handle)
        async with replica as url:
            client = ReplicaClient()
            with pytest.raises(NoAnswer, match=message):
                await client.post(url, "t", b"1", 5)
            assert await client.post(url, "t", b"1", 5) == (200, b"{}")
            assert replica.connections == 2
            assert client._pools[url].open == 1
            client.close()

    _run(test)


def test_a_slow_replica_times_out_and_its_connection_is_dropped() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(60)

    _no_answer(handle, "no answer within 0.2 s", timeout=0.2)


def test_connection_close_chunked_answers_and_an_idle_connection_the_replica_closed() -> None:
    answers = [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
               b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\n{\"a\r\n5\r\n\": 1}\r\n0\r\n\r\n",
               OK]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(answers.pop(0))
        await writer.drain()  # then close: after `Connection: close`, and while idle

    async def test() -> None:
        replica = Replica(handle)
        async with replica as url:
            client = ReplicaClient()
            assert await client.post(url, "t", b"1", 5) == (200, b"{}")
            assert await client.post(url, "t", b"1", 5) == (500, b'{"a": 1}')
            await asyncio.sleep(0.1)  # the replica has closed the idle connection
            assert await client.post(url, "t", b"1", 5) == (200, b"{}")
            assert replica.connections == 3
            client.close()

    _run(test)


def test_connections_per_replica_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replica_client, "CONNECTIONS_PER_REPLICA", 2)
    busy = [0, 0]  # now, most at once

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _read_request(reader)
            busy[0] += 1
            busy[1] = max(busy)
            await asyncio.sleep(0.02)
            busy[0] -= 1
            writer.write(OK)

    async def test() -> None:
        replica = Replica(handle)
        async with replica as url:
            client = ReplicaClient()
            calls = [asyncio.ensure_future(client.post(url, "t", b"1", 5)) for _ in range(12)]
            await asyncio.sleep(0.005)
            calls[-1].cancel()  # a caller that gives up while it waits for a connection
            answers = await asyncio.gather(*calls, return_exceptions=True)
            assert answers[:-1] == [(200, b"{}")] * 11
            assert isinstance(answers[-1], asyncio.CancelledError)
            assert (replica.connections, busy[1], client._pools[url].open) == (2, 2, 2)
            client.close()

    _run(test)


def test_a_cancelled_call_drops_its_connection() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _read_request(reader)
            await asyncio.sleep(0.3)
            writer.write(OK)

    async def test() -> None:
        replica = Replica(handle)
        async with replica as url:
            client = ReplicaClient()
            call = asyncio.ensure_future(client.post(url, "t", b"1", 5))
            await asyncio.sleep(0.1)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert client._pools[url].open == 0  # its late answer can reach no other call
            assert await client.post(url, "t", b"2", 5) == (200, b"{}")
            assert replica.connections == 2
            client.close()

    _run(test)


def test_too_large_an_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replica_client, "MAX_ANSWER_BYTES", 1000)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000)
        await writer.drain()
        await asyncio.sleep(1)

    _no_answer(handle, "larger than 64 MiB")


def test_a_token_cannot_inject_headers() -> None:
    async def test() -> None:
        client = ReplicaClient()
        with pytest.raises(ValueError, match="printable ASCII"):
            await client.post("http://127.0.0.1:9/", "t\r\nX-Other: 1", b"1", 5)
        with pytest.raises(ValueError, match="http://HOST:PORT/"):
            await client.post("https://127.0.0.1:9/", "t", b"1", 5)

    _run(test)


def test_addresses_of_gone_replicas_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every redeploy brings new replica addresses: past MAX_POOLS, those whose connections are
    all gone are dropped; one still in use is kept."""
    monkeypatch.setattr(replica_client, "MAX_POOLS", 2)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(OK)
        await writer.drain()  # then close: the replica is gone

    async def keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _read_request(reader)
            writer.write(OK)

    async def test() -> None:
        client = ReplicaClient()
        async with Replica(handle) as gone, Replica(keep) as kept, Replica(keep) as new:
            assert await client.post(gone, "t", b"1", 5) == (200, b"{}")
            assert await client.post(kept, "t", b"1", 5) == (200, b"{}")
            await asyncio.sleep(0.1)  # the gone replica's connection has closed
            assert await client.post(new, "t", b"1", 5) == (200, b"{}")
            assert set(client._pools) == {kept, new}
            client.close()

    _run(test)
