"""Collection-points use cases, each one short transaction: lock the point, then the booking,
let the domain decide, save both, and put the events the booking recorded into the outbox."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import asyncpg

from omnistock.collection_points import repository
from omnistock.collection_points.domain import Booking, Change, Point, PointDetails, Status
from omnistock.collection_points.repository import new_id
from omnistock.contracts import collection_points as events
from omnistock.platform.clock import Clock
from omnistock.platform.outbox import OutboxMessage, add_to_outbox

SOURCE = "/omnistock/collection-points"
RETURN_TO_SENDER = "return_to_sender"


class NotFound(Exception):
    def __init__(self, what: str, identifier: str) -> None:
        super().__init__(f"no {what} {identifier}")
        self.what = what
        self.identifier = identifier


class OrderHasBooking(Exception):
    """An order holds one slot at a time: release it before booking another."""

    def __init__(self, order_id: str, booking_id: str | None) -> None:
        super().__init__(f"order {order_id} already holds a slot")
        self.order_id = order_id
        self.booking_id = booking_id


async def upsert_point(
    conn: asyncpg.Connection, clock: Clock, point_id: str, details: PointDetails
) -> tuple[Point, bool]:
    """Create or replace a point's details; returns it and whether it was created."""
    now = clock.now()
    point = await repository.load_point(conn, point_id, lock=True)
    if point is None:
        created = Point.create(point_id, details)
        if await repository.insert_point(conn, created, now):
            return created, True
        # Created by a concurrent request since we looked: replace what it wrote.
        point = await repository.load_point(conn, point_id, lock=True)
        assert point is not None
    versions = (point.version, point.slots_version)
    if point.update(details):
        await repository.update_point(conn, point, versions, now)
    return point, False


async def book(
    conn: asyncpg.Connection, clock: Clock, point_id: str, order_id: str, customer_id: str
) -> tuple[Point, Booking]:
    """Hold a slot of the point for the order (NoFreeSlot when none is left). The point's row
    lock makes concurrent bookings of one point take their turns: each sees the slots the
    previous ones took."""
    now = clock.now()
    point = await repository.load_point(conn, point_id, lock=True)
    if point is None:
        raise NotFound("point", point_id)
    live = await repository.live_booking_of_order(conn, order_id)
    if live is not None:
        raise OrderHasBooking(order_id, live.booking_id)
    versions = (point.version, point.slots_version)
    booking = Booking.book(point, new_id(), order_id, customer_id, now)
    await repository.update_point(conn, point, versions, now)
    try:
        await repository.insert_booking(conn, booking, now)
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != "bookings_one_live_per_order":
            raise
        raise OrderHasBooking(order_id, None) from None
    await _publish(conn, clock, point, booking)
    return point, booking


async def release(conn: asyncpg.Connection, clock: Clock, booking_id: str) -> Booking:
    now = clock.now()
    point, booking = await _locked(conn, booking_id)
    versions, version = (point.version, point.slots_version), booking.version
    booking.release(point, now)
    await _save(conn, clock, point, versions, booking, version)
    return booking


async def arrive(
    conn: asyncpg.Connection,
    clock: Clock,
    booking_id: str,
    pickup_code: str | None,
    default_pickup_days: int,
) -> Booking:
    """The parcel is at the point: the locker network's own code, or one made here."""
    now = clock.now()
    point, booking = await _locked(conn, booking_id)
    versions, version = (point.version, point.slots_version), booking.version
    window = point.pickup_window(default_pickup_days)
    booking.arrive(pickup_code or new_pickup_code(), now, window)
    await _save(conn, clock, point, versions, booking, version)
    return booking


async def collect(
    conn: asyncpg.Connection, clock: Clock, booking_id: str, pickup_code: str
) -> Booking:
    now = clock.now()
    point, booking = await _locked(conn, booking_id)
    versions, version = (point.version, point.slots_version), booking.version
    booking.collect(point, pickup_code, now)
    await _save(conn, clock, point, versions, booking, version)
    return booking


async def expire_due(conn: asyncpg.Connection, clock: Clock, limit: int) -> int:
    """The expiry job: every parcel past its deadline expires, its slot is freed, and
    ``parcel-expired`` tells the order to take it back. Returns how many expired."""
    now = clock.now()
    expired = 0
    # Points in id order: two replicas running the job never wait on each other in a cycle.
    for point_id, booking_id in sorted(await repository.due_to_expire(conn, now, limit)):
        point = await repository.load_point(conn, point_id, lock=True)
        booking = await repository.load_booking(conn, booking_id, lock=True)
        assert point is not None
        assert booking is not None
        if not booking.is_due_to_expire(now):
            continue  # collected while we were on our way
        versions, version = (point.version, point.slots_version), booking.version
        booking.expire(point, now)
        await _save(conn, clock, point, versions, booking, version)
        expired += 1
    return expired


def new_pickup_code() -> str:
    return f"{secrets.randbelow(10**8):08d}"


async def _locked(conn: asyncpg.Connection, booking_id: str) -> tuple[Point, Booking]:
    point_id = await repository.point_of_booking(conn, booking_id)
    if point_id is None:
        raise NotFound("booking", booking_id)
    point = await repository.load_point(conn, point_id, lock=True)
    booking = await repository.load_booking(conn, booking_id, lock=True)
    assert point is not None
    assert booking is not None
    return point, booking


async def _save(
    conn: asyncpg.Connection,
    clock: Clock,
    point: Point,
    point_versions: tuple[int, int],
    booking: Booking,
    booking_version: int,
) -> None:
    now = clock.now()
    if point.slots_version != point_versions[1]:
        await repository.update_point(conn, point, point_versions, now)
    await repository.update_booking(conn, booking, booking_version, now)
    await _publish(conn, clock, point, booking)


async def _publish(conn: asyncpg.Connection, clock: Clock, point: Point, booking: Booking) -> None:
    """The booking's recorded changes, as events, into the outbox."""
    messages = []
    for change in booking.changes:
        if change.slots is not None:
            messages.append(
                OutboxMessage(
                    slot_event(point, booking, change),
                    aggregate_id=point.point_id,
                    aggregate_version=change.slots.version,
                    key=point.point_id,
                    correlation_id=booking.order_id,
                )
            )
        messages.extend(
            OutboxMessage(
                payload,
                aggregate_id=booking.booking_id,
                aggregate_version=change.version,
                key=booking.order_id,
                correlation_id=booking.order_id,
            )
            for payload in parcel_events(point, booking, change)
        )
    await add_to_outbox(conn, SOURCE, messages, clock)
    booking.changes.clear()


def slot_event(point: Point, booking: Booking, change: Change) -> Any:
    slots = change.slots
    assert slots is not None
    common: dict[str, Any] = {
        "point_id": point.point_id,
        "market": point.details.market,
        "booking_id": booking.booking_id,
        "order_id": booking.order_id,
        "version": slots.version,
        "capacity": slots.capacity,
        "occupied": slots.occupied,
        "free": slots.free,
    }
    if change.status is Status.BOOKED:
        return events.SlotBooked(**common)
    return events.SlotReleased(**common, reason=change.status.value)


def parcel_events(point: Point, booking: Booking, change: Change) -> Iterator[Any]:
    """The parcel events of one change (none for booking or releasing a slot)."""
    common: dict[str, Any] = {
        "booking_id": booking.booking_id,
        "order_id": booking.order_id,
        "customer_id": booking.customer_id,
        "point_id": point.point_id,
        "version": change.version,
    }
    at = change.at.isoformat()
    collect_by = booking.collect_by.isoformat() if booking.collect_by else ""
    if change.status is Status.ARRIVED:
        assert change.pickup_code is not None
        yield events.ParcelArrived(
            **common,
            point_kind=point.details.kind.value,
            market=point.details.market,
            status=change.status.value,
            arrived_at=at,
            collect_by=collect_by,
        )
        yield events.PickupCodeIssued(
            **common, pickup_code=change.pickup_code, collect_by=collect_by
        )
    elif change.status is Status.COLLECTED:
        yield events.ParcelCollected(**common, status=change.status.value, collected_at=at)
    elif change.status is Status.EXPIRED:
        assert booking.arrived_at is not None
        yield events.ParcelExpired(
            **common,
            status=change.status.value,
            arrived_at=booking.arrived_at.isoformat(),
            collect_by=collect_by,
            expired_at=at,
            disposition=RETURN_TO_SENDER,
        )
