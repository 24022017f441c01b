"""The client services call each other with, against a bare HTTP/1.1 server on loopback: what it
sends, what it reads back, that it keeps connections, and that no answer is a CallFailed."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest

from omnistock.platform.client import CallTimedOut, ConnectError, ServiceClient


@dataclass
class Server:
    url: str
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    connections: int = 0
    delay_s: float = 0.0


async def _serve(
    server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    server.connections += 1
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name:
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            server.requests.append((lines[0], headers, body))
            await asyncio.sleep(server.delay_s)
            answer = orjson.dumps({"seen": len(server.requests)})
            writer.write(
                b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                b"Idempotent-Replayed: true\r\n"
                + f"Content-Length: {len(answer)}\r\n\r\n".encode()
                + answer
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    found = Server("")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve(found, reader, writer)

    listening = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    found.url = f"http://127.0.0.1:{port}"
    async with listening:
        yield found


async def test_a_call_sends_json_and_its_headers_and_reads_the_whole_answer(
    server: Server,
) -> None:
    client = ServiceClient(server.url, 5.0)
    try:
        answer = await client.request(
            "POST", "/v1/things", json={"amount": 1999}, headers={"Idempotency-Key": "k-1"}
        )
    finally:
        await client.aclose()
    ((line, headers, body),) = server.requests
    assert line == "POST /v1/things HTTP/1.1"
    assert headers["idempotency-key"] == "k-1"
    assert headers["content-type"] == "application/json"
    assert orjson.loads(body) == {"amount": 1999}
    assert (answer.status_code, answer.json()) == (201, {"seen": 1})
    assert answer.headers.get("idempotent-replayed") == "true"
    assert (answer.method, answer.path) == ("POST", "/v1/things")


async def test_calls_one_after_the_other_keep_their_connection(server: Server) -> None:
    client = ServiceClient(server.url, 5.0)
    try:
        for _ in range(3):
            await client.request("GET", "/v1/things/1")
    finally:
        await client.aclose()
    assert (len(server.requests), server.connections) == (3, 1)


async def test_a_service_that_is_not_there_is_a_failed_call() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = ServiceClient(f"http://127.0.0.1:{port}", 5.0)
    try:
        with pytest.raises(ConnectError):
            await client.request("GET", "/v1/things/1")
    finally:
        await client.aclose()


async def test_an_answer_later_than_the_timeout_is_a_failed_call(server: Server) -> None:
    server.delay_s = 1.0
    client = ServiceClient(server.url, 0.2)
    try:
        with pytest.raises(CallTimedOut):
            await client.request("GET", "/v1/things/1")
    finally:
        await client.aclose()
