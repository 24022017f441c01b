"""The load generator's HTTP client: keep-alive HTTP/1.1 connections to one server, taken from
a free list, speaking just what ``omnistock serve`` answers (a status line, headers, a body of
``content-length`` bytes). A pooled general-purpose client costs the bench a millisecond or
more of CPU per request on this kind of machine, which the services measured would otherwise
have had."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit


class ConnectionLost(Exception):
    pass


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> tuple[int, bytes, bool]:
        """(status, body, whether the connection may carry another request)."""
        self.writer.write(request)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            raise ConnectionLost("the server closed the connection") from None
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:
            raise ConnectionLost(f"an answer without content-length: {lines[0]}")
        body = await self.reader.readexactly(int(headers["content-length"]))
        return status, body, headers.get("connection", "").lower() != "close"

    def close(self) -> None:
        self.writer.close()


class LoadClient:
    """POSTs JSON to one server over as many connections as there are requests in flight."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        address = urlsplit(base_url)
        self._host, self._port = address.hostname or "127.0.0.1", address.port or 80
        common = {
            "Host": f"{self._host}:{self._port}",
            "Content-Type": "application/json",
            **headers,
        }
        self._head = "".join(f"{name}: {value}\r\n" for name, value in common.items())
        self._idle: list[_Connection] = []

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = (
            f"POST {path} HTTP/1.1\r\n{self._head}{extra}Content-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1") + body
        while self._idle:
            connection = self._idle.pop()
            try:
                return await self._exchange(connection, request)
            except (ConnectionLost, ConnectionResetError, BrokenPipeError):
                # The server closes connections left idle past its keep-alive timeout (between
                # phases): the request never reached it, and it carries its Idempotency-Key.
                continue
        return await self._exchange(await self._connect(), request)

    async def _exchange(self, connection: _Connection, request: bytes) -> tuple[int, bytes]:
        try:
            status, answer, reusable = await connection.exchange(request)
        except BaseException:
            connection.close()
            raise
        if reusable:
            self._idle.append(connection)
        else:
            connection.close()
        return status, answer

    async def _connect(self) -> _Connection:
        reader, writer = await asyncio.open_connection(self._host, self._port)
        return _Connection(reader, writer)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
            with contextlib.suppress(OSError):
                await connection.writer.wait_closed()
