"""The HTTP app factory every service uses: health, readiness, metrics, problem+json, auth."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
import orjson
import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute, iter_route_contexts
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from omnistock.platform.auth import Principal, RequireScopes, TokenVerifier, requires
from omnistock.platform.observability import context_from_headers, tracer
from omnistock.platform.problems import PROBLEM_JSON, Problem
from omnistock.platform.settings import Settings

log = structlog.get_logger(__name__)

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
"""Probes answer without a token and say nothing but ok / not ready. Everything else is scoped."""

ReadinessCheck = Callable[[], Awaitable[str | None]]
"""Returns None when ready, else the reason it is not."""

_tracer = tracer("omnistock.http")

REQUEST_SECONDS = Histogram(
    "omnistock_http_request_seconds",
    "HTTP request latency",
    ["service", "method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


class FastJSONResponse(JSONResponse):
    """JSON rendered by orjson: several times faster than the standard library's encoder."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class NoContent(FastJSONResponse):
    """A 204 where a JSON response is expected (a stored answer replayed): no body at all, not
    even ``null``."""

    def render(self, content: Any) -> bytes:
        return b""


class RequestContext:
    """Pure ASGI middleware: a request id on every request and response, and latency metrics."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _header(scope, b"x-request-id") or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500
        # Continue the caller's trace (W3C traceparent); the outbox copies the context into
        # the Kafka headers of every event this request causes.
        parent = context_from_headers([("traceparent", _header(scope, b"traceparent"))])
        span = _tracer.start_span(f"{scope['method']} {scope['path']}", context=parent)
        token = otel_context.attach(trace.set_span_in_context(span))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            otel_context.detach(token)
            span.end()
            route = scope.get("route")
            REQUEST_SECONDS.labels(
                self.service, scope["method"], getattr(route, "path", "unmatched"), str(status)
            ).observe(time.perf_counter() - started)
            structlog.contextvars.unbind_contextvars("request_id")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))[:128]
    return None


def problem_response(problem: Problem, request: Request | None = None) -> Response:
    return FastJSONResponse(
        problem.body(str(request.url.path) if request else None),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=problem.headers,
    )


async def on_connection(
    pool: asyncpg.Pool,
    work: Callable[[asyncpg.Connection], Awaitable[Any]],
    refusals: tuple[type[Exception], ...],
    as_problem: Callable[[Exception], Problem],
) -> Any:
    """``work`` on a connection of ``pool``, with no transaction: for a read of one statement,
    whose snapshot is its own. A refusal is answered as the problem ``as_problem`` makes."""
    try:
        async with pool.acquire() as conn:
            return await work(conn)
    except refusals as exc:
        raise as_problem(exc) from None


def field_path(location: Sequence[Any]) -> str:
    """('body', 'lines', 0, 'qty') -> 'lines[0].qty'; query and path keep their prefix."""
    parts = list(location)
    prefix = ""
    if parts and parts[0] == "body":
        parts = parts[1:]
    elif parts and parts[0] in {"query", "path", "header"}:
        prefix = f"{parts[0]}."
        parts = parts[1:]
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return prefix + (text or "body")


def _install_error_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return problem_response(exc, request)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"field": field_path(err.get("loc", ())), "message": err.get("msg", "invalid")}
            for err in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        problem = Problem(422, "Invalid request", detail, type_="validation-error", errors=errors)
        return problem_response(problem, request)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        titles = {404: "Not found", 405: "Method not allowed"}
        problem = Problem(
            exc.status_code,
            titles.get(exc.status_code, "HTTP error"),
            str(exc.detail),
            headers=dict(exc.headers or {}),
        )
        return problem_response(problem, request)

    async def on_crash(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", path=request.url.path)
        return problem_response(
            Problem(500, "Internal error", "the error was logged", type_="internal"), request
        )

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)


def required_scopes(route: APIRoute) -> frozenset[str] | None:
    """The scopes a route admits (any one of them), from its RequireScopes dependency."""
    pending = list(route.dependant.dependencies)
    while pending:
        dependency = pending.pop()
        check = getattr(dependency.call, "__self__", None)
        if isinstance(check, RequireScopes):
            return check.scopes
        pending.extend(dependency.dependencies)
    return None


def _document_scopes(routes: Sequence[Any]) -> None:
    """Write each route's scopes into its OpenAPI operation (``x-scopes``, any one of them)."""
    for route in routes:
        if isinstance(route, APIRoute) and (scopes := required_scopes(route)) is not None:
            route.openapi_extra = {**(route.openapi_extra or {}), "x-scopes": sorted(scopes)}


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: str
    methods: frozenset[str]
    route: APIRoute


def endpoints(app: FastAPI) -> list[Endpoint]:
    """Every API route of the app with its full path, included routers' ones too."""
    found = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and context.path:
            found.append(Endpoint(context.path, frozenset(context.methods or ()), route))
    return found


def create_app(
    *,
    service: str,
    settings: Settings,
    routers: Sequence[APIRouter] = (),
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    readiness: dict[str, ReadinessCheck] | None = None,
    version: str = "0.1.0",
    app_class: type[FastAPI] = FastAPI,
) -> FastAPI:
    """A service's FastAPI app. ``lifespan`` opens the service's pool, relay and consumers.
    ``app_class`` lets a service answer some requests before FastAPI sees them."""
    checks = dict(readiness or {})

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        if lifespan is None:
            yield
            return
        async with lifespan(app):
            yield

    app = app_class(
        title=f"omnistock {service}",
        version=version,
        lifespan=run,
        default_response_class=FastJSONResponse,
        docs_url=None,
        redoc_url=None,
        # The spec is published by `omnistock openapi`, not served to anonymous callers.
        openapi_url=None,
        # The platform makes one span per request itself (and Prometheus metrics); FastAPI's own
        # spans per request and per dependency would double them at about a third of the CPU
        # a request costs.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.service = service
    app.state.settings = settings
    app.state.token_verifier = TokenVerifier(settings)
    _install_error_handlers(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        results = await asyncio.gather(
            *(check() for check in checks.values()), return_exceptions=True
        )
        failing = {
            name: (str(result) if isinstance(result, BaseException) else result)
            for name, result in zip(checks, results, strict=True)
            if result is not None
        }
        if failing:
            # Which dependency is down is for operators' logs, not for anonymous callers.
            log.warning("not ready", failing=failing)
            return problem_response(Problem(503, "Not ready", ", ".join(sorted(failing))))
        return FastJSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    def metrics(_: Annotated[Principal, requires("metrics:read")]) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    _document_scopes(app.routes)
    for router in routers:
        _document_scopes(router.routes)  # before including: FastAPI copies what it includes
        app.include_router(router)
    app.add_middleware(RequestContext, service=service)
    return app
