"""Bookings over HTTP: the order system books and releases slots (``collection-points:book``);
locker networks and store staff report parcels in and out (``collection-points:parcels``); a
customer reads its own bookings, pickup code included, and another customer's booking does not
exist for it (404, so ids cannot be probed). Every write takes an ``Idempotency-Key``."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Header, Query, Request

from omnistock.collection_points import repository, service
from omnistock.collection_points.api.common import (
    BOOK,
    PARCELS,
    REFUSALS,
    State,
    as_problem,
    booking_view,
    write_once,
)
from omnistock.collection_points.api.schemas import (
    REFERENCE,
    UUID_PATTERN,
    ArriveIn,
    BookingIn,
    BookingPath,
    CollectIn,
    PointPath,
)
from omnistock.collection_points.domain import Booking, NoFreeSlot, Status
from omnistock.collection_points.domain.search import DEFAULT_RADIUS_M
from omnistock.platform import idempotency
from omnistock.platform.auth import CUSTOMER_SCOPE, Principal, requires
from omnistock.platform.http import FastJSONResponse
from omnistock.platform.problems import Problem

router = APIRouter(prefix="/v1", tags=["bookings and parcels"])
STAFF = frozenset({BOOK, PARCELS})
ALTERNATIVES = 3


@router.post("/points/{point_id}/bookings", status_code=201)
async def book_slot(
    point_id: PointPath,
    body: BookingIn,
    request: Request,
    principal: Annotated[Principal, requires(BOOK)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """Hold a slot of the point for an order. None left: 409 ``no-free-slot`` naming the
    point, its capacity, what is free, and the nearest points that still have room
    (``alternatives``). An order holds one slot at a time (409 ``order-has-booking``)."""
    state = State(request)

    async def work(conn: asyncpg.Connection) -> tuple[int, Any]:
        _, booking = await service.book(
            conn, state.clock, point_id, body.order_id, body.customer_id
        )
        return 201, booking_view(booking)

    try:
        return await idempotency.respond_once(
            request, state.runtime.pool, principal.subject, idempotency_key, body, work
        )
    except NoFreeSlot as exc:
        raise await no_free_slot(state, exc) from None
    except REFUSALS as exc:
        raise as_problem(exc) from None


async def no_free_slot(state: State, refusal: NoFreeSlot) -> Problem:
    """The refusal, with the nearest points that could take the booking instead. Looked up
    after the refused transaction ended: no lock is held while searching."""
    problem = as_problem(refusal)
    async with state.runtime.pool.acquire() as conn:
        point = await repository.load_point(conn, refusal.point_id)
        rows = (
            await repository.nearest_with_free_slots(conn, point, DEFAULT_RADIUS_M, ALTERNATIVES)
            if point is not None
            else []
        )
    problem.extensions["alternatives"] = [
        {
            "point_id": row["point_id"],
            "kind": row["kind"],
            "distance_m": row["distance_m"],
            "free": None if row["capacity"] is None else row["capacity"] - row["occupied"],
        }
        for row in rows
    ]
    return problem


@router.post("/bookings/{booking_id}/release")
async def release(
    booking_id: BookingPath,
    request: Request,
    principal: Annotated[Principal, requires(BOOK)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """Free the slot of a booking whose parcel has not arrived (the order was cancelled or
    goes elsewhere). Once the parcel is there, it is collected or expires."""
    state = State(request)

    async def work(conn: asyncpg.Connection) -> tuple[int, Any]:
        return 200, booking_view(await service.release(conn, state.clock, booking_id))

    return await write_once(request, principal, idempotency_key, None, work)


@router.post("/bookings/{booking_id}/arrive")
async def arrive(
    booking_id: BookingPath,
    body: ArriveIn,
    request: Request,
    principal: Annotated[Principal, requires(PARCELS)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """The parcel is in the locker or at the store's desk. The answer carries the pickup code
    (the network's own, or one made here) and ``collect_by``, after which it expires."""
    state = State(request)

    async def work(conn: asyncpg.Connection) -> tuple[int, Any]:
        booking = await service.arrive(
            conn, state.clock, booking_id, body.pickup_code, state.own.pickup_days
        )
        return 200, booking_view(booking, reveal_code=True)

    return await write_once(request, principal, idempotency_key, body, work)


@router.post("/bookings/{booking_id}/collect")
async def collect(
    booking_id: BookingPath,
    body: CollectIn,
    request: Request,
    principal: Annotated[Principal, requires(PARCELS)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """The customer took the parcel, showing its pickup code (a wrong one: 422 naming
    ``pickup_code``, and nothing changes)."""
    state = State(request)

    async def work(conn: asyncpg.Connection) -> tuple[int, Any]:
        return 200, booking_view(
            await service.collect(conn, state.clock, booking_id, body.pickup_code)
        )

    return await write_once(request, principal, idempotency_key, body, work)


@router.get("/bookings/{booking_id}")
async def get_booking(
    booking_id: BookingPath,
    request: Request,
    principal: Annotated[Principal, requires(BOOK, PARCELS, CUSTOMER_SCOPE)],
) -> FastJSONResponse:
    """A booking. Its customer also gets the pickup code while the parcel waits."""
    state = State(request)
    async with state.runtime.pool.acquire() as conn:
        booking = await repository.load_booking(conn, booking_id)
    if booking is None or not may_see(principal, booking):
        raise as_problem(service.NotFound("booking", booking_id))
    return FastJSONResponse(booking_view(booking, reveal_code=is_own(principal, booking)))


@router.get("/bookings")
async def list_bookings(
    request: Request,
    principal: Annotated[Principal, requires(BOOK, PARCELS, CUSTOMER_SCOPE)],
    order_id: Annotated[str | None, Query(pattern=REFERENCE)] = None,
    point_id: Annotated[str | None, Query(pattern=REFERENCE)] = None,
    status: Annotated[Status | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None, Query(pattern=UUID_PATTERN, description="next_cursor of the previous page")
    ] = None,
) -> FastJSONResponse:
    """Bookings of an order, or of a point (e.g. the parcels waiting at a store:
    ``status=arrived``), by id. A customer sees only its own."""
    state = State(request)
    wanted = repository.BookingFilter(
        order_id=order_id,
        point_id=point_id,
        status=status,
        customer_id=None if _is_staff(principal) else principal.subject,
        after=cursor,
        limit=limit,
    )
    async with state.runtime.pool.acquire() as conn:
        found = await repository.bookings(conn, wanted)
    return FastJSONResponse(
        {
            "bookings": [booking_view(b, reveal_code=is_own(principal, b)) for b in found],
            "next_cursor": found[-1].booking_id if len(found) == limit else None,
        }
    )


def _is_staff(principal: Principal) -> bool:
    return not principal.scopes.isdisjoint(STAFF)


def is_own(principal: Principal, booking: Booking) -> bool:
    return principal.is_customer and principal.subject == booking.customer_id


def may_see(principal: Principal, booking: Booking) -> bool:
    return _is_staff(principal) or is_own(principal, booking)
