"""Points over HTTP: staff upsert them (``collection-points:admin``); storefronts, apps and
customers read and search them (``collection-points:read`` or a customer token).

``open_now`` is computed from the service's clock in each point's own time zone."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Header, Query, Request

from omnistock.collection_points import repository, service
from omnistock.collection_points.api.common import (
    ADMIN,
    READ,
    State,
    as_problem,
    point_view,
    write_once,
)
from omnistock.collection_points.api.schemas import MARKET, Latitude, Longitude, PointIn, PointPath
from omnistock.collection_points.domain import Capability, Kind, Position, Refused
from omnistock.collection_points.domain.search import (
    DEFAULT_LIMIT,
    DEFAULT_RADIUS_M,
    MAX_LIMIT,
    MAX_RADIUS_M,
    After,
    Search,
)
from omnistock.platform.auth import CUSTOMER_SCOPE, Principal, requires
from omnistock.platform.http import FastJSONResponse
from omnistock.platform.problems import field_problem

router = APIRouter(prefix="/v1", tags=["collection points"])


@router.put("/points/{point_id}")
async def upsert_point(
    point_id: PointPath,
    body: PointIn,
    request: Request,
    principal: Annotated[Principal, requires(ADMIN)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """Create (201) or replace (200) a point. Its bookings stay: a capacity below the slots
    taken is a 409 naming ``capacity``; an inactive point takes no new bookings."""
    try:
        details = body.details()
    except Refused as exc:
        raise as_problem(exc) from None
    state = State(request)

    async def work(conn: asyncpg.Connection) -> tuple[int, Any]:
        point, created = await service.upsert_point(conn, state.clock, point_id, details)
        return (201 if created else 200), point_view(point, state.clock.now())

    return await write_once(request, principal, idempotency_key, body, work)


@router.get("/points/{point_id}")
async def get_point(
    point_id: PointPath,
    request: Request,
    _: Annotated[Principal, requires(READ, ADMIN, CUSTOMER_SCOPE)],
) -> FastJSONResponse:
    state = State(request)
    async with state.runtime.pool.acquire() as conn:
        point = await repository.load_point(conn, point_id)
    if point is None:
        raise as_problem(service.NotFound("point", point_id))
    return FastJSONResponse(point_view(point, state.clock.now()))


@router.get("/points")
async def search_points(
    request: Request,
    _: Annotated[Principal, requires(READ, ADMIN, CUSTOMER_SCOPE)],
    market: Annotated[str, Query(pattern=MARKET, description="ISO 3166-1 alpha-2")],
    latitude: Annotated[Latitude | None, Query(description="with longitude: nearest first")] = None,
    longitude: Annotated[Longitude | None, Query()] = None,
    radius_m: Annotated[
        int, Query(ge=1, le=MAX_RADIUS_M, description="with a position: how far to look")
    ] = DEFAULT_RADIUS_M,
    kind: Annotated[Kind | None, Query()] = None,
    capability: Annotated[Capability | None, Query()] = None,
    with_free_slots: Annotated[
        bool, Query(description="only points that can take a booking now")
    ] = False,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the previous page")
    ] = None,
) -> FastJSONResponse:
    """Active points of a market: with ``latitude`` and ``longitude``, those within
    ``radius_m`` nearest first, each with its ``distance_m``; without, by id. Pages of
    ``limit``; ``next_cursor`` (null on the last page) asks for the next."""
    state = State(request)
    try:
        near = near_position(latitude, longitude)
        after = After.from_cursor(cursor, near is not None) if cursor is not None else None
        query = Search(market, near, radius_m, kind, capability, with_free_slots, limit, after)
    except Refused as exc:
        raise as_problem(exc) from None
    async with state.runtime.pool.acquire() as conn:
        rows = await repository.search(conn, query)
    now = state.clock.now()
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = After(last["distance_m"], last["point_id"]).cursor()
    return FastJSONResponse(
        {
            "points": [
                point_view(repository.point_of(row), now, row["distance_m"]) for row in page
            ],
            "next_cursor": next_cursor,
        }
    )


def near_position(latitude: Decimal | None, longitude: Decimal | None) -> Position | None:
    if latitude is None and longitude is None:
        return None
    if latitude is None:
        raise field_problem("query.latitude", "required with longitude")
    if longitude is None:
        raise field_problem("query.longitude", "required with latitude")
    return Position.from_degrees(latitude, longitude)
