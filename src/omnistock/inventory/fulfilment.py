"""Fulfilment: reservations become allocations, allocations ship or go back to sale, returns
come back in. One transaction each, SKU locks first, like every stock change."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from omnistock.contracts import inventory as events
from omnistock.inventory import domain, repository
from omnistock.inventory.domain import ReservationStatus
from omnistock.inventory.effects import commit_changes
from omnistock.inventory.repository import Change
from omnistock.inventory.reserving import NotFound
from omnistock.platform.clock import Clock
from omnistock.platform.outbox import OutboxMessage


async def locked_reservation(
    conn: asyncpg.Connection, reservation_id: str
) -> tuple[Any, list[Any]]:
    """A reservation and its lines, read again under its SKUs' locks and a row lock."""
    found = await repository.reservation(conn, reservation_id)
    if found is None:
        raise NotFound("reservation", reservation_id)
    row, lines = found
    await repository.lock_skus(conn, [line["sku"] for line in lines])
    row, lines = await repository.reservation(conn, reservation_id, lock=True)
    return row, lines


async def next_versions(
    conn: asyncpg.Connection, order_ids: Sequence[str], *, allocated_before: bool = True
) -> list[int]:
    """The allocation version of each of ``order_ids``' next events, in order (an order named
    twice gets two): one more per event. The order's row stays locked to the transaction, so
    the versions follow the commit order of the events.

    ``allocated_before``: the orders had their allocated event already, so one without a row
    (allocated by an instance still running the code of before migration 0004, which
    published it as version 1) starts past it."""
    wanted: dict[str, int] = {}
    for order_id in order_ids:
        wanted[order_id] = wanted.get(order_id, 0) + 1
    if not wanted:
        return []
    rows = await conn.fetch(
        """INSERT INTO allocation_versions AS v (order_id, version)
           SELECT o, n + $3 FROM unnest($1::text[], $2::bigint[]) AS w(o, n) ORDER BY 1
           ON CONFLICT (order_id) DO UPDATE SET version = v.version + EXCLUDED.version - $3
           RETURNING order_id, version""",
        list(wanted),
        list(wanted.values()),
        1 if allocated_before else 0,
    )
    following = {r["order_id"]: r["version"] - wanted[r["order_id"]] for r in rows}
    versions: list[int] = []
    for order_id in order_ids:
        following[order_id] += 1
        versions.append(following[order_id])
    return versions


async def release_allocations(
    conn: asyncpg.Connection,
    allocation_ids: Sequence[str],
    reason: str,
    messages: list[OutboxMessage],
    clock: Clock,
) -> list[Change]:
    if not allocation_ids:
        return []
    rows = await conn.fetch(
        """UPDATE allocations SET status = 'released', reason = $2, updated_at = $3
           WHERE allocation_id = ANY($1::uuid[]) AND status = 'allocated'
           RETURNING allocation_id::text AS id, order_id, sku, location_id, quantity""",
        list(allocation_ids),
        reason,
        clock.now(),
    )
    versions = await next_versions(conn, [row["order_id"] for row in rows])
    for row, version in zip(rows, versions, strict=True):
        messages.append(
            OutboxMessage(
                events.AllocationReleased(row["order_id"], row["id"], reason),
                aggregate_id=row["order_id"],
                aggregate_version=version,
            )
        )
    return [Change(r["sku"], r["location_id"], allocated=-r["quantity"]) for r in rows]


async def commit(
    conn: asyncpg.Connection, clock: Clock, reservation_id: str, order_id: str
) -> list[dict[str, Any]]:
    """The order was placed: the reservation's units become the order's allocations."""
    row, lines = await locked_reservation(conn, reservation_id)
    status = ReservationStatus(row["status"])
    if status is ReservationStatus.COMMITTED and row["order_id"] == order_id:
        return await _allocations_of(conn, order_id)  # a redelivered command: same answer
    if status is ReservationStatus.ACTIVE and domain.is_expired(row["expires_at"], clock.now()):
        raise domain.InvalidTransition("the reservation has expired")  # the sweeper is behind
    domain.transition(status, ReservationStatus.COMMITTED)
    now = clock.now()
    version = await conn.fetchval(
        """UPDATE reservations SET status = 'committed', order_id = $2, version = version + 1
           WHERE reservation_id = $1 RETURNING version""",
        reservation_id,
        order_id,
    )
    allocations = [
        events.Allocation(str(uuid.uuid4()), line["sku"], line["location_id"], line["quantity"])
        for line in lines
    ]
    await conn.execute(
        """INSERT INTO allocations (allocation_id, order_id, channel_id, sku, location_id,
                                    quantity, status, created_at, updated_at)
           SELECT a, $1, $2, s, l, q, 'allocated', $3, $3
           FROM unnest($4::uuid[], $5::text[], $6::text[], $7::int[]) AS x(a, s, l, q)""",
        order_id,
        row["channel_id"],
        now,
        [a.allocation_id for a in allocations],
        [a.sku for a in allocations],
        [a.location_id for a in allocations],
        [a.quantity for a in allocations],
    )
    (version_allocated,) = await next_versions(conn, [order_id], allocated_before=False)
    await commit_changes(
        conn,
        clock,
        [
            Change(a.sku, a.location_id, reserved=-a.quantity, allocated=a.quantity)
            for a in allocations
        ],
        [
            OutboxMessage(
                events.ReservationCommitted(reservation_id, order_id),
                aggregate_id=reservation_id,
                aggregate_version=version,
            ),
            OutboxMessage(
                events.StockAllocated(order_id, row["channel_id"], allocations),
                aggregate_id=order_id,
                aggregate_version=version_allocated,
            ),
        ],
    )
    return await _allocations_of(conn, order_id)


async def _allocations_of(conn: asyncpg.Connection, order_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT allocation_id::text, sku, location_id, quantity, status FROM allocations
           WHERE order_id = $1 ORDER BY sku, location_id""",
        order_id,
    )
    return [dict(r) for r in rows]


async def ship(
    conn: asyncpg.Connection, clock: Clock, order_id: str, allocation_id: str, shipment_id: str
) -> None:
    """Fulfilment: the allocated units leave the location they were allocated at."""
    row = await conn.fetchrow(
        """SELECT sku, location_id, quantity, status FROM allocations
           WHERE allocation_id = $1 AND order_id = $2""",
        allocation_id,
        order_id,
    )
    if row is None:
        raise NotFound("allocation", allocation_id)
    await repository.lock_skus(conn, [row["sku"]])
    updated = await conn.fetchrow(
        """UPDATE allocations SET status = 'shipped', reason = $2, updated_at = $3
           WHERE allocation_id = $1 AND status = 'allocated'
           RETURNING sku, location_id, quantity""",
        allocation_id,
        shipment_id,
        clock.now(),
    )
    if updated is None:
        if row["status"] == "shipped":
            return  # shipped already: a redelivery changes nothing
        raise domain.InvalidTransition(f"allocation {allocation_id} is {row['status']}")
    await commit_changes(
        conn,
        clock,
        [
            Change(
                updated["sku"],
                updated["location_id"],
                on_hand=-updated["quantity"],
                allocated=-updated["quantity"],
                movement_reason="shipment",
                reference=shipment_id,
            )
        ],
        [
            OutboxMessage(
                events.AllocationShipped(order_id, allocation_id, shipment_id),
                aggregate_id=order_id,
                aggregate_version=(await next_versions(conn, [order_id]))[0],
            )
        ],
    )


async def cancel_allocations(
    conn: asyncpg.Connection, clock: Clock, order_id: str, reason: str
) -> int:
    """An order cancelled before shipment: its open allocations go back to sale."""
    skus = await conn.fetch(
        "SELECT DISTINCT sku FROM allocations WHERE order_id = $1 AND status = 'allocated'",
        order_id,
    )
    await repository.lock_skus(conn, [r["sku"] for r in skus])
    ids = await conn.fetch(
        """SELECT allocation_id::text AS id FROM allocations
           WHERE order_id = $1 AND status = 'allocated'""",
        order_id,
    )
    messages: list[OutboxMessage] = []
    changes = await release_allocations(conn, [r["id"] for r in ids], reason, messages, clock)
    await commit_changes(conn, clock, changes, messages)
    return len(changes)


async def restock_return(
    conn: asyncpg.Connection,
    clock: Clock,
    *,
    sku: str,
    location_id: str,
    quantity: int,
    sellable: bool,
    reference: str,
) -> None:
    """A customer return: sellable units go back on hand at the chosen location; damaged ones
    are recorded as received and written off, so the ledger shows both."""
    await repository.lock_skus(conn, [sku])
    if not await conn.fetchval("SELECT true FROM locations WHERE location_id = $1", location_id):
        raise NotFound("location", location_id)
    changes = [
        Change(sku, location_id, on_hand=quantity, movement_reason="return", reference=reference)
    ]
    if not sellable:
        changes.append(
            Change(
                sku, location_id, on_hand=-quantity, movement_reason="damage", reference=reference
            )
        )
    await commit_changes(conn, clock, changes)
