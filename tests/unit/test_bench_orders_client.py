"""The orders benchmark's load client against a tiny HTTP/1.1 server: requests as sent,
answers as read, connections kept alive unless the server says otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from omnistock.bench.orders.client import ConnectionLost, LoadClient


class Server:
    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.connections = 0
        self.close_after = False
        self.hang_up_silently = False
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.requests.append(head + await reader.readexactly(length))
                body = b'{"order_id": "%d"}' % len(self.requests)
                closing = b"Connection: close\r\n" if self.close_after else b""
                writer.write(
                    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                    + closing
                    + b"Content-Length: %d\r\n\r\n" % len(body)
                    + body
                )
                await writer.drain()
                if self.close_after or self.hang_up_silently:
                    break
        except asyncio.IncompleteReadError:
            pass
        writer.close()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server()
    listening = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = listening.sockets[0].getsockname()[1]
    async with listening:
        yield state


async def test_requests_go_out_whole_and_share_a_kept_alive_connection(server: Server) -> None:
    client = LoadClient(f"http://127.0.0.1:{server.port}", {"Authorization": "Bearer t"})
    try:
        first = await client.post("/v1/orders", b'{"a": 1}', {"Idempotency-Key": "k1"})
        second = await client.post("/v1/orders", b'{"b": 22}', {"Idempotency-Key": "k2"})
    finally:
        await client.aclose()
    assert first == (201, b'{"order_id": "1"}')
    assert second == (201, b'{"order_id": "2"}')
    assert server.connections == 1
    head, _, body = server.requests[1].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/orders HTTP/1.1"
    assert {b"Authorization: Bearer t", b"Idempotency-Key: k2", b"Content-Length: 9"} <= set(lines)
    assert body == b'{"b": 22}'


async def test_a_connection_the_server_closes_is_not_used_again(server: Server) -> None:
    server.close_after = True
    client = LoadClient(f"http://127.0.0.1:{server.port}", {})
    try:
        for _ in range(2):
            assert (await client.post("/", b"{}", {}))[0] == 201
    finally:
        await client.aclose()
    assert server.connections == 2


async def test_a_server_gone_mid_request_is_a_lost_connection() -> None:
    async def hang_up(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    listening = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    async with listening:
        client = LoadClient(f"http://127.0.0.1:{port}", {})
        with pytest.raises((ConnectionLost, ConnectionResetError)):
            await client.post("/", b"{}", {})


async def test_a_kept_alive_connection_the_server_dropped_meanwhile_is_replaced(
    server: Server,
) -> None:
    server.hang_up_silently = True  # as a server does once its keep-alive timeout passes
    client = LoadClient(f"http://127.0.0.1:{server.port}", {})
    try:
        for _ in range(3):
            assert (await client.post("/", b"{}", {}))[0] == 201
    finally:
        await client.aclose()
    assert (len(server.requests), server.connections) == (3, 3)
