"""The SQL of the collection-points service: points, their occupancy, bookings, the search.

Lock order, everywhere: the point row, then the booking row. A booking's point never changes,
so a use case reads it unlocked first and then takes the locks in that order; the expiry job
takes its points in id order. No two transactions wait on each other in a cycle.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from omnistock.collection_points.domain import (
    Address,
    Booking,
    Capability,
    Kind,
    OpeningHours,
    Point,
    PointDetails,
    Position,
    Status,
)
from omnistock.collection_points.domain.search import Search


class ConcurrentUpdate(Exception):
    """The row changed since it was read: its version moved on."""


def new_id() -> str:
    return str(uuid.uuid4())


# -- points --

_DETAILS = """market, kind, name, street, postcode, city, latitude_e6, longitude_e6, time_zone,
    opening_hours, capabilities, capacity, pickup_days, active"""


def _details_values(details: PointDetails) -> list[Any]:
    return [
        details.market,
        details.kind.value,
        details.name,
        details.address.street,
        details.address.postcode,
        details.address.city,
        details.position.latitude_e6,
        details.position.longitude_e6,
        details.time_zone,
        details.hours.as_json(),
        sorted(c.value for c in details.capabilities),
        details.capacity,
        details.pickup_days,
        details.active,
    ]


def point_of(row: asyncpg.Record) -> Point:
    details = PointDetails(
        market=row["market"],
        kind=Kind(row["kind"]),
        name=row["name"],
        address=Address(row["street"], row["postcode"], row["city"]),
        position=Position(row["latitude_e6"], row["longitude_e6"]),
        time_zone=row["time_zone"],
        hours=OpeningHours.from_json(row["opening_hours"]),
        capabilities=frozenset(Capability(c) for c in row["capabilities"]),
        capacity=row["capacity"],
        pickup_days=row["pickup_days"],
        active=row["active"],
    )
    return Point(
        row["point_id"],
        details,
        occupied=row["occupied"],
        version=row["version"],
        slots_version=row["slots_version"],
    )


async def load_point(
    conn: asyncpg.Connection, point_id: str, *, lock: bool = False
) -> Point | None:
    row = await conn.fetchrow(
        "SELECT * FROM points WHERE point_id = $1" + (" FOR UPDATE" if lock else ""), point_id
    )
    return point_of(row) if row else None


async def insert_point(conn: asyncpg.Connection, point: Point, now: datetime) -> bool:
    """False when a point with that id exists already (created concurrently)."""
    status = await conn.execute(
        f"""INSERT INTO points (point_id, {_DETAILS}, occupied, version, slots_version,
               created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
               $16, $17, $18, $19, $19)
           ON CONFLICT (point_id) DO NOTHING""",
        point.point_id,
        *_details_values(point.details),
        point.occupied,
        point.version,
        point.slots_version,
        now,
    )
    return bool(status == "INSERT 0 1")


async def update_point(
    conn: asyncpg.Connection, point: Point, versions: tuple[int, int], now: datetime
) -> None:
    """Save details and occupancy, if both versions are still those read (``versions``)."""
    assignments = ", ".join(
        f"{name.strip()} = ${n}" for n, name in enumerate(_DETAILS.split(","), start=7)
    )
    status = await conn.execute(
        f"""UPDATE points SET occupied = $4, version = $5, slots_version = $6, updated_at = $21,
               {assignments}
           WHERE point_id = $1 AND version = $2 AND slots_version = $3""",
        point.point_id,
        *versions,
        point.occupied,
        point.version,
        point.slots_version,
        *_details_values(point.details),
        now,
    )
    if status != "UPDATE 1":
        raise ConcurrentUpdate(f"point {point.point_id} changed since it was read")


async def search(conn: asyncpg.Connection, query: Search) -> list[asyncpg.Record]:
    """Points of the query's market, nearest first (with ``distance_m``) when it names a
    position, else by id; one more than the limit, which tells whether a next page exists."""
    box = query.box()
    after = query.after
    near = query.near
    return list(
        await conn.fetch(
            """WITH found AS (
                   SELECT p.*, CASE WHEN $2::integer IS NULL THEN NULL ELSE
                       round(great_circle_m($2, $3, latitude_e6, longitude_e6))::bigint
                       END AS distance_m
                   FROM points p
                   WHERE market = $1 AND active
                     AND ($4::integer IS NULL OR latitude_e6 BETWEEN $4 AND $5)
                     AND ($6::integer IS NULL
                          OR (NOT $8 AND longitude_e6 BETWEEN $6 AND $7)
                          OR ($8 AND (longitude_e6 >= $6 OR longitude_e6 <= $7)))
                     AND ($9::text IS NULL OR kind = $9)
                     AND ($10::text IS NULL OR $10 = ANY(capabilities))
                     AND (NOT $11 OR capacity IS NULL OR occupied < capacity))
               SELECT * FROM found
               WHERE ($2::integer IS NULL OR distance_m <= $12)
                 AND ($13::text IS NULL
                      OR ($2::integer IS NULL AND point_id > $13)
                      OR ($2::integer IS NOT NULL AND (distance_m, point_id) > ($14::bigint, $13)))
               ORDER BY distance_m NULLS FIRST, point_id
               LIMIT $15""",
            query.market,
            near.latitude_e6 if near else None,
            near.longitude_e6 if near else None,
            box.south if box else None,
            box.north if box else None,
            box.west if box else None,
            box.east if box else None,
            box.wraps if box else False,
            query.kind.value if query.kind else None,
            query.capability.value if query.capability else None,
            query.with_free_slots,
            query.radius_m,
            after.point_id if after else None,
            after.distance_m if after else None,
            query.limit + 1,
        )
    )


async def nearest_with_free_slots(
    conn: asyncpg.Connection, point: Point, radius_m: int, limit: int
) -> list[asyncpg.Record]:
    """Other points of the market near ``point`` that can still take a booking."""
    query = Search(
        point.details.market, point.details.position, radius_m, with_free_slots=True, limit=limit
    )
    found = await search(conn, query)
    return [row for row in found if row["point_id"] != point.point_id][:limit]


# -- bookings --

_BOOKING_STATE = "status, version, pickup_code, arrived_at, collect_by, ended_at"


def booking_of(row: asyncpg.Record) -> Booking:
    return Booking(
        booking_id=str(row["booking_id"]),
        point_id=row["point_id"],
        order_id=row["order_id"],
        customer_id=row["customer_id"],
        booked_at=row["booked_at"],
        status=Status(row["status"]),
        version=row["version"],
        pickup_code=row["pickup_code"],
        arrived_at=row["arrived_at"],
        collect_by=row["collect_by"],
        ended_at=row["ended_at"],
    )


async def insert_booking(conn: asyncpg.Connection, booking: Booking, now: datetime) -> None:
    await conn.execute(
        f"""INSERT INTO bookings (booking_id, point_id, order_id, customer_id, booked_at,
               updated_at, {_BOOKING_STATE})
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)""",
        booking.booking_id,
        booking.point_id,
        booking.order_id,
        booking.customer_id,
        booking.booked_at,
        now,
        *_booking_state(booking),
    )


def _booking_state(booking: Booking) -> list[Any]:
    return [
        booking.status.value,
        booking.version,
        booking.pickup_code,
        booking.arrived_at,
        booking.collect_by,
        booking.ended_at,
    ]


async def update_booking(
    conn: asyncpg.Connection, booking: Booking, expected_version: int, now: datetime
) -> None:
    status = await conn.execute(
        """UPDATE bookings SET updated_at = $3, status = $4, version = $5, pickup_code = $6,
               arrived_at = $7, collect_by = $8, ended_at = $9
           WHERE booking_id = $1 AND version = $2""",
        booking.booking_id,
        expected_version,
        now,
        *_booking_state(booking),
    )
    if status != "UPDATE 1":
        raise ConcurrentUpdate(f"booking {booking.booking_id} changed since it was read")


async def load_booking(
    conn: asyncpg.Connection, booking_id: str, *, lock: bool = False
) -> Booking | None:
    row = await conn.fetchrow(
        "SELECT * FROM bookings WHERE booking_id = $1" + (" FOR UPDATE" if lock else ""),
        booking_id,
    )
    return booking_of(row) if row else None


async def point_of_booking(conn: asyncpg.Connection, booking_id: str) -> str | None:
    point_id: str | None = await conn.fetchval(
        "SELECT point_id FROM bookings WHERE booking_id = $1", booking_id
    )
    return point_id


async def live_booking_of_order(conn: asyncpg.Connection, order_id: str) -> Booking | None:
    row = await conn.fetchrow(
        "SELECT * FROM bookings WHERE order_id = $1 AND status IN ('booked', 'arrived')",
        order_id,
    )
    return booking_of(row) if row else None


@dataclass(frozen=True, slots=True)
class BookingFilter:
    order_id: str | None = None
    point_id: str | None = None
    status: Status | None = None
    customer_id: str | None = None  # a customer sees only its own
    after: str | None = None  # the last booking id of the previous page
    limit: int = 50


async def bookings(conn: asyncpg.Connection, wanted: BookingFilter) -> list[Booking]:
    rows = await conn.fetch(
        """SELECT * FROM bookings
           WHERE ($1::text IS NULL OR order_id = $1)
             AND ($2::text IS NULL OR point_id = $2)
             AND ($3::text IS NULL OR status = $3)
             AND ($4::text IS NULL OR customer_id = $4)
             AND ($5::uuid IS NULL OR booking_id > $5)
           ORDER BY booking_id LIMIT $6""",
        wanted.order_id,
        wanted.point_id,
        wanted.status.value if wanted.status else None,
        wanted.customer_id,
        wanted.after,
        wanted.limit,
    )
    return [booking_of(row) for row in rows]


async def due_to_expire(
    conn: asyncpg.Connection, now: datetime, limit: int
) -> Sequence[tuple[str, str]]:
    """(point id, booking id) of parcels past their deadline, oldest deadline first."""
    rows = await conn.fetch(
        """SELECT point_id, booking_id FROM bookings
           WHERE status = 'arrived' AND collect_by <= $1
           ORDER BY collect_by LIMIT $2""",
        now,
        limit,
    )
    return [(row["point_id"], str(row["booking_id"])) for row in rows]
