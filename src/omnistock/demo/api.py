"""The demo service's HTTP API."""

from __future__ import annotations

import uuid
from typing import Annotated

import asyncpg
from fastapi import APIRouter, FastAPI, Header, Request
from pydantic import BaseModel, Field

from omnistock.contracts.demo import PINGS
from omnistock.demo import SERVICE, consumers, service
from omnistock.platform import idempotency
from omnistock.platform.auth import Principal, requires
from omnistock.platform.clock import Clock, SystemClock
from omnistock.platform.http import FastJSONResponse, create_app
from omnistock.platform.problems import Problem
from omnistock.platform.runtime import ServiceRuntime
from omnistock.platform.settings import Settings, get_settings

router = APIRouter(prefix="/v1", tags=["demo"])


class SendPings(BaseModel):
    stream: str = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9-]+$")
    messages: list[str] = Field(min_length=1, max_length=1000)


@router.post("/pings", status_code=201)
async def send_pings(
    body: SendPings,
    request: Request,
    principal: Annotated[Principal, requires("demo:write")],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    runtime: ServiceRuntime = request.app.state.runtime
    clock: Clock = request.app.state.clock
    key = idempotency.checked_key(idempotency_key)
    assert key is not None

    async def effect(conn: asyncpg.Connection) -> tuple[int, object]:
        pings = await service.send_pings(
            conn, body.stream, body.messages, clock, topic=request.app.state.topic
        )
        return 201, {"pings": pings}

    answer = await idempotency.run_once(
        runtime.pool,
        principal.subject,
        key,
        idempotency.request_fingerprint("POST", "/v1/pings", body.model_dump()),
        effect,
    )
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else {}
    return FastJSONResponse(answer.body, status_code=answer.status, headers=headers)


@router.get("/pings/{ping_id}")
async def get_ping(
    ping_id: uuid.UUID,
    request: Request,
    _: Annotated[Principal, requires("demo:read")],
) -> FastJSONResponse:
    runtime: ServiceRuntime = request.app.state.runtime
    async with runtime.pool.acquire() as conn:
        status = await service.ping_status(conn, ping_id)
    if status is None:
        raise Problem(404, "Ping not found", f"no ping {ping_id}", type_="not-found")
    return FastJSONResponse(status)


def build_app(
    settings: Settings | None = None,
    clock: Clock | None = None,
    *,
    schema: str | None = None,
    topic: str = PINGS.name,
    group: str = consumers.GROUP,
) -> FastAPI:
    settings = settings or get_settings()
    runtime = ServiceRuntime(
        SERVICE, settings, schema=schema, subscriptions=[consumers.subscription(group, topic)]
    )
    app = create_app(
        service=SERVICE,
        settings=settings,
        routers=[router],
        lifespan=runtime.lifespan,
        readiness=runtime.readiness(),
    )
    app.state.runtime = runtime
    app.state.topic = topic
    app.state.clock = clock or SystemClock()
    return app
