"""What the collection-points routes share: scopes, the app's state, refusals as problem+json,
a write run once per Idempotency-Key, and the JSON views of points and bookings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg
from fastapi import Request
from pydantic import BaseModel

from omnistock.collection_points import repository, service
from omnistock.collection_points.domain import (
    Booking,
    Conflict,
    InvalidTransition,
    NoFreeSlot,
    Point,
    Refused,
)
from omnistock.collection_points.settings import CollectionPointsSettings
from omnistock.platform import idempotency
from omnistock.platform.auth import Principal
from omnistock.platform.clock import Clock
from omnistock.platform.http import FastJSONResponse
from omnistock.platform.problems import Problem
from omnistock.platform.runtime import ServiceRuntime

ADMIN = "collection-points:admin"  # staff: points, their hours and capacity
READ = "collection-points:read"  # the public read scope: storefronts and apps searching
BOOK = "collection-points:book"  # the order system: slots for its orders
PARCELS = "collection-points:parcels"  # locker networks and store staff: parcels in and out

REFUSALS = (
    Refused,
    Conflict,
    InvalidTransition,
    service.NotFound,
    service.OrderHasBooking,
    repository.ConcurrentUpdate,
)


class State:
    def __init__(self, request: Request) -> None:
        state = request.app.state
        self.runtime: ServiceRuntime = state.runtime
        self.clock: Clock = state.clock
        self.own: CollectionPointsSettings = state.collection_points_settings


def as_problem(exc: Exception) -> Problem:
    if isinstance(exc, Refused):
        error = {"field": exc.field, "message": exc.message}
        return Problem(422, "Invalid request", str(exc), type_="validation-error", errors=[error])
    if isinstance(exc, service.NotFound):
        return Problem(404, f"{exc.what.capitalize()} not found", str(exc), type_="not-found")
    if isinstance(exc, NoFreeSlot):
        return Problem(
            409,
            "No free slot",
            str(exc),
            type_="no-free-slot",
            errors=[{"field": exc.field, "message": "no free slot"}],
            point_id=exc.point_id,
            capacity=exc.capacity,
            occupied=exc.occupied,
            free=max(0, exc.capacity - exc.occupied),
        )
    if isinstance(exc, service.OrderHasBooking):
        return Problem(
            409,
            "Order holds a slot",
            f"{exc}: release booking {exc.booking_id or '(just made)'} first",
            type_="order-has-booking",
            errors=[{"field": "order_id", "message": "holds a slot already"}],
            booking_id=exc.booking_id,
        )
    if isinstance(exc, Conflict):
        error = {"field": exc.field, "message": exc.message}
        return Problem(409, "Conflict", str(exc), type_="conflict", errors=[error])
    if isinstance(exc, InvalidTransition):
        error = {"field": "status", "message": f"is {exc.status}"}
        return Problem(409, "Invalid state", str(exc), type_="invalid-transition", errors=[error])
    if isinstance(exc, repository.ConcurrentUpdate):
        return Problem(409, "Conflict", f"{exc}: try again", type_="conflict")
    raise exc


async def write_once(
    request: Request,
    principal: Principal,
    key: str | None,
    body: BaseModel | None,
    work: Callable[[asyncpg.Connection], Awaitable[tuple[int, Any]]],
) -> FastJSONResponse:
    """``work`` once per Idempotency-Key; a refusal is problem+json and stores nothing."""
    state = State(request)
    try:
        return await idempotency.respond_once(
            request, state.runtime.pool, principal.subject, key, body, work
        )
    except REFUSALS as exc:
        raise as_problem(exc) from None


def point_view(point: Point, now: datetime, distance_m: int | None = None) -> dict[str, Any]:
    details = point.details
    view: dict[str, Any] = {
        "point_id": point.point_id,
        "market": details.market,
        "kind": details.kind.value,
        "name": details.name,
        "address": {
            "street": details.address.street,
            "postcode": details.address.postcode,
            "city": details.address.city,
        },
        "position": {
            "latitude": details.position.latitude,
            "longitude": details.position.longitude,
        },
        "time_zone": details.time_zone,
        "opening_hours": details.hours.as_json(),
        "open_now": point.open_at(now),
        "capabilities": sorted(c.value for c in details.capabilities),
        "capacity": details.capacity,
        "occupied": point.occupied,
        "free": point.free,
        "pickup_days": details.pickup_days,
        "active": details.active,
        "version": point.version,
        "slots_version": point.slots_version,
    }
    if distance_m is not None:
        view["distance_m"] = distance_m
    return view


def booking_view(booking: Booking, *, reveal_code: bool = False) -> dict[str, Any]:
    """A booking; its pickup code only where ``reveal_code`` (its customer, or the caller that
    reported the parcel's arrival)."""

    def instant(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    view: dict[str, Any] = {
        "booking_id": booking.booking_id,
        "point_id": booking.point_id,
        "order_id": booking.order_id,
        "customer_id": booking.customer_id,
        "status": booking.status.value,
        "version": booking.version,
        "booked_at": instant(booking.booked_at),
        "arrived_at": instant(booking.arrived_at),
        "collect_by": instant(booking.collect_by),
        "ended_at": instant(booking.ended_at),
    }
    if reveal_code:
        view["pickup_code"] = booking.pickup_code
    return view
