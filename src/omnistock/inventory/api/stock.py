"""Locations, channels, stock counts and adjustments, availability."""

from __future__ import annotations

import functools
from typing import Annotated, Any

import asyncpg
from fastapi import Header, Query, Request

from omnistock.inventory import domain, repository, service
from omnistock.inventory.api.common import in_transaction, router, run_once_per_key, state_of
from omnistock.inventory.api.schemas import (
    Channel,
    ChannelPath,
    Location,
    LocationPath,
    SkuPath,
    StockAdjustment,
    StockCount,
)
from omnistock.platform.auth import Principal, requires
from omnistock.platform.clock import Clock
from omnistock.platform.http import FastJSONResponse
from omnistock.platform.problems import Problem, field_problem


@router.put("/locations/{location_id}")
async def put_location(
    location_id: LocationPath,
    body: Location,
    request: Request,
    _auth: Annotated[Principal, requires("inventory:admin")],
) -> dict[str, str]:
    await in_transaction(
        request,
        lambda conn: service.put_location(
            conn, location_id, body.kind, body.country, body.capabilities, body.name
        ),
    )
    return {"location_id": location_id}


@router.get("/locations")
async def list_locations(
    request: Request,
    _auth: Annotated[Principal, requires("inventory:read", "inventory:admin")],
) -> list[dict[str, Any]]:
    rows = await in_transaction(
        request, lambda conn: conn.fetch("SELECT * FROM locations ORDER BY location_id")
    )
    return [dict(r) for r in rows]


@router.put("/channels/{channel_id}")
async def put_channel(
    channel_id: ChannelPath,
    body: Channel,
    request: Request,
    _auth: Annotated[Principal, requires("inventory:admin")],
) -> dict[str, str]:
    _, clock = state_of(request)
    if len({r.location_id for r in body.sourcing}) != len(body.sourcing):
        raise field_problem("sourcing", "duplicate location")
    if len({r.priority for r in body.sourcing}) != len(body.sourcing):
        raise field_problem("sourcing", "duplicate priority")
    sources = [domain.Source(r.location_id, r.priority, r.safety_stock) for r in body.sourcing]
    last: str | None = await in_transaction(
        request,
        lambda conn: service.put_channel(
            conn,
            clock,
            channel_id,
            body.brand,
            body.market,
            sources,
            body.availability_cap,
            body.max_units_per_customer,
        ),
    )
    while last is not None:  # the rest of the catalogue, a slice per transaction
        last = await in_transaction(
            request, functools.partial(_refresh_slice, clock, channel_id, last)
        )
    return {"channel_id": channel_id}


async def _refresh_slice(
    clock: Clock, channel_id: str, after: str, conn: asyncpg.Connection
) -> str | None:
    return await service.refresh_channel(conn, clock, channel_id, after)


@router.put("/stock/{location_id}/{sku}")
async def count_stock(
    location_id: LocationPath,
    sku: SkuPath,
    body: StockCount,
    request: Request,
    _auth: Annotated[Principal, requires("inventory:write")],
) -> dict[str, Any]:
    """An absolute count; a count with an older or equal sequence from the same source is
    answered ``stale`` and changes nothing."""
    _, clock = state_of(request)
    result: service.CountResult = await in_transaction(
        request,
        lambda conn: service.count_stock(
            conn,
            clock,
            source=body.source,
            sequence=body.sequence,
            sku=sku,
            location_id=location_id,
            on_hand=body.on_hand,
        ),
    )
    return {
        "status": result.status,
        "last_sequence": result.last_sequence,
        "on_hand": result.on_hand,
    }


@router.post("/stock/{location_id}/{sku}/adjustments", status_code=201)
async def adjust_stock(
    location_id: LocationPath,
    sku: SkuPath,
    body: StockAdjustment,
    request: Request,
    principal: Annotated[Principal, requires("inventory:write")],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    _, clock = state_of(request)

    async def work(conn: asyncpg.Connection) -> tuple[int, Any]:
        on_hand = await service.adjust_stock(
            conn,
            clock,
            sku=sku,
            location_id=location_id,
            quantity=body.quantity,
            reason=body.reason,
            reference=body.reference,
        )
        return 201, {"sku": sku, "location_id": location_id, "on_hand": on_hand}

    return await run_once_per_key(request, principal, idempotency_key, body, work)


@router.get("/stock/{sku}")
async def stock_of(
    sku: SkuPath,
    request: Request,
    _auth: Annotated[Principal, requires("inventory:read")],
) -> dict[str, Any]:
    rows = await in_transaction(
        request,
        lambda conn: conn.fetch(
            """SELECT location_id, on_hand, reserved, allocated FROM stock WHERE sku = $1
           ORDER BY location_id""",
            sku,
        ),
    )
    return {"sku": sku, "locations": [dict(r) for r in rows]}


@router.get("/channels/{channel_id}/availability")
async def availability(
    channel_id: ChannelPath,
    request: Request,
    _auth: Annotated[Principal, requires("inventory:read")],
    skus: Annotated[str, Query(description="comma-separated, at most 500")],
) -> dict[str, Any]:
    wanted = [s for s in skus.split(",") if s]
    if not wanted or len(wanted) > 500:
        raise Problem(
            422,
            "Invalid request",
            "query.skus: between 1 and 500 SKUs",
            type_="validation-error",
            errors=[{"field": "query.skus", "message": "1 to 500 SKUs"}],
        )

    async def work(conn: asyncpg.Connection) -> dict[str, int]:
        channel = await repository.channel(conn, channel_id)
        if channel is None:
            raise service.NotFound("channel", channel_id)
        levels = await repository.levels(conn, wanted, [s.location_id for s in channel.sources])
        return {
            sku: domain.channel_available(sku, channel.sources, levels, channel.availability_cap)
            for sku in wanted
        }

    return {"channel_id": channel_id, "available": await in_transaction(request, work)}
