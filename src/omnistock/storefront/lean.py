"""The hot path: the two read routes as plain ASGI, answered before FastAPI sees the request.

FastAPI wraps every request in its own OpenTelemetry span and metrics, resolves dependencies,
validates parameters through pydantic, and the platform's middleware adds a trace span, log
context and a request id: on this machine that is ~0.5 ms of CPU per request, for an answer
that is a dict lookup (~10 µs here). This route matches the two paths by hand, authenticates
with the same verifier (tokens cached once verified) and scopes, records the same latency
histogram, and answers what the FastAPI routes answer, byte for byte (a test compares them);
everything else goes on to FastAPI. Figures: docs/storefront.md.
"""

from __future__ import annotations

import os
import time
from urllib.parse import parse_qsl

import structlog
from fastapi import FastAPI
from prometheus_client import Histogram
from starlette.types import Receive, Scope, Send

from omnistock.platform.auth import TokenVerifier
from omnistock.platform.http import REQUEST_SECONDS
from omnistock.platform.problems import Problem
from omnistock.storefront.views import (
    READ_SCOPES,
    Reads,
    Reply,
    problem_reply,
    shows_quantities,
)

log = structlog.get_logger(__name__)

PREFIX = "/v1/channels/"
ONE_ROUTE = "/v1/channels/{channel}/skus/{sku}"
MANY_ROUTE = "/v1/channels/{channel}/skus"
_READ_SCOPES = frozenset(READ_SCOPES)
_UNAUTHENTICATED = Problem(
    401, "Authentication required", "send a bearer token", type_="unauthorized"
)
_FORBIDDEN = Problem(
    403,
    "Insufficient scope",
    f"this endpoint needs one of: {', '.join(sorted(_READ_SCOPES))}",
    type_="forbidden",
)


_CRASHED = Problem(500, "Internal error", "the error was logged", type_="internal")


class LeanReads:
    def __init__(self, reads: Reads, verifier: TokenVerifier, service: str) -> None:
        self._reads = reads
        self._verifier = verifier
        self._service = service
        self._timers: dict[tuple[str, int], Histogram] = {}

    async def answer(self, scope: Scope, send: Send) -> bool:
        """Answer the request if it is one of the two read routes; False leaves it to FastAPI."""
        if scope["type"] != "http" or scope["method"] != "GET":
            return False
        path: str = scope["path"]
        if not path.startswith(PREFIX):
            return False
        parts = path.split("/")  # "", "v1", "channels", channel, "skus"[, sku]
        if len(parts) == 6 and parts[4] == "skus" and parts[5]:
            await self._answer(scope, send, ONE_ROUTE, parts[3], parts[5])
            return True
        if len(parts) == 5 and parts[4] == "skus":
            await self._answer(scope, send, MANY_ROUTE, parts[3], None)
            return True
        return False

    async def _answer(
        self, scope: Scope, send: Send, route: str, channel: str, sku: str | None
    ) -> None:
        started = time.perf_counter()
        authorization = if_none_match = request_id = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"if-none-match":
                if_none_match = value.decode("latin-1")
            elif name == b"x-request-id":
                request_id = value[:128]
        try:
            reply = self._reply(scope, channel, sku, authorization, if_none_match)
        except Exception:
            log.exception("unhandled error", path=scope["path"])
            reply = problem_reply(_CRASHED, scope["path"])
        headers = reply.wire_headers()
        headers.append((b"x-request-id", request_id or os.urandom(16).hex().encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
        self._timer(route, reply.status).observe(time.perf_counter() - started)

    def _reply(
        self,
        scope: Scope,
        channel: str,
        sku: str | None,
        authorization: bytes | None,
        if_none_match: str | None,
    ) -> Reply:
        path: str = scope["path"]
        scheme, _, token = (authorization or b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return problem_reply(_UNAUTHENTICATED, path)
        try:
            principal = self._verifier.verify(token)
        except Problem as problem:
            return problem_reply(problem, path)
        if principal.scopes.isdisjoint(_READ_SCOPES):
            return problem_reply(_FORBIDDEN, path)
        quantities = shows_quantities(principal.scopes)
        if sku is not None:
            return self._reads.one(channel, sku, quantities, if_none_match, path)
        query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        skus = [value for key, value in query if key == "skus"]
        return self._reads.many(
            channel, skus[-1] if skus else None, quantities, if_none_match, path
        )

    def _timer(self, route: str, status: int) -> Histogram:
        # The platform's request histogram, its labelled child looked up once per route/status.
        timer = self._timers.get((route, status))
        if timer is None:
            timer = REQUEST_SECONDS.labels(self._service, "GET", route, str(status))
            self._timers[(route, status)] = timer
        return timer


class StorefrontApp(FastAPI):
    """FastAPI, with the hot read routes answered before it (when ``lean`` is set)."""

    lean: LeanReads | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lean = self.lean
        if lean is None or not await lean.answer(scope, send):
            await super().__call__(scope, receive, send)
