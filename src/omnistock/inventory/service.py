"""Inventory use cases: each loads, asks the domain, saves and records its events in one
transaction. SKU locks are taken first and no lock is held across a call to another service
(there are none: inventory only answers)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from omnistock.contracts import inventory as events
from omnistock.inventory import domain, repository
from omnistock.inventory.domain import Pick, ReservationStatus
from omnistock.inventory.effects import SOURCE, availability_messages, commit_changes
from omnistock.inventory.fulfilment import locked_reservation, release_allocations
from omnistock.inventory.repository import Change
from omnistock.inventory.reserving import (
    DEFAULT_TTL,
    MAX_TTL,
    CustomerLimitExceeded,
    NotFound,
    OutOfStock,
    ReserveStock,
    reservation_view,
    reserve_many,
)
from omnistock.platform.clock import Clock
from omnistock.platform.outbox import OutboxMessage, add_to_outbox

__all__ = ["Change", "CustomerLimitExceeded", "NotFound", "OutOfStock", "commit_changes"]


@dataclass(frozen=True, slots=True)
class CountResult:
    status: str  # "applied" or "stale"
    last_sequence: int
    on_hand: int


async def put_location(
    conn: asyncpg.Connection,
    location_id: str,
    kind: str,
    country: str,
    capabilities: Sequence[str],
    name: str,
) -> None:
    await conn.execute(
        """INSERT INTO locations (location_id, kind, country, capabilities, name)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (location_id) DO UPDATE SET kind = EXCLUDED.kind, country = EXCLUDED.country,
               capabilities = EXCLUDED.capabilities, name = EXCLUDED.name""",
        location_id,
        kind,
        country,
        sorted(set(capabilities)),
        name,
    )


async def put_channel(
    conn: asyncpg.Connection,
    clock: Clock,
    channel_id: str,
    brand: str,
    market: str,
    sources: Sequence[domain.Source],
    availability_cap: int | None = None,
    max_units_per_customer: int | None = None,
) -> str | None:
    """Create or replace a channel and its sourcing; its availability is recomputed."""
    unknown = await conn.fetchval(
        """SELECT array_agg(l) FROM unnest($1::text[]) AS l
           WHERE l NOT IN (SELECT location_id FROM locations)""",
        [s.location_id for s in sources],
    )
    if unknown:
        raise NotFound("location", ", ".join(unknown))
    await conn.execute(
        """INSERT INTO channels
               (channel_id, brand, market, availability_cap, max_units_per_customer)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (channel_id) DO UPDATE SET brand = EXCLUDED.brand, market = EXCLUDED.market,
               availability_cap = EXCLUDED.availability_cap,
               max_units_per_customer = EXCLUDED.max_units_per_customer,
               version = channels.version + 1""",
        channel_id,
        brand,
        market,
        availability_cap,
        max_units_per_customer,
    )
    await conn.execute("DELETE FROM sourcing_rules WHERE channel_id = $1", channel_id)
    await conn.executemany(
        """INSERT INTO sourcing_rules (channel_id, location_id, priority, safety_stock)
           VALUES ($1, $2, $3, $4)""",
        [(channel_id, s.location_id, s.priority, s.safety_stock) for s in sources],
    )
    # The first slice of its availability now; the caller refreshes the rest (refresh_channel).
    return await refresh_channel(conn, clock, channel_id)


async def refresh_channel(
    conn: asyncpg.Connection, clock: Clock, channel_id: str, after_sku: str = "", limit: int = 1000
) -> str | None:
    """Recompute the channel's availability for its next ``limit`` SKUs after ``after_sku``
    (those stocked at its locations, and those it published before, which a dropped location
    may have changed); returns the last SKU done, or None when there are no more. A channel's
    whole catalogue is refreshed in such slices, one transaction each, so that no transaction
    takes tens of thousands of SKU locks."""
    skus = await conn.fetch(
        """SELECT sku FROM (
               SELECT s.sku FROM stock s JOIN sourcing_rules r USING (location_id)
               WHERE r.channel_id = $1 AND s.sku > $2
               UNION
               SELECT sku FROM availability WHERE channel_id = $1 AND sku > $2) AS k
           ORDER BY sku LIMIT $3""",
        channel_id,
        after_sku,
        limit,
    )
    if not skus:
        return None
    names = [r["sku"] for r in skus]
    await repository.lock_skus(conn, names)
    changed = await repository.refresh_channel_availability(conn, channel_id, names)
    await add_to_outbox(conn, SOURCE, availability_messages(changed), clock)
    last: str = names[-1]
    return last


async def count_stock(
    conn: asyncpg.Connection,
    clock: Clock,
    *,
    source: str,
    sequence: int,
    sku: str,
    location_id: str,
    on_hand: int,
    counted_at: datetime | None = None,
) -> CountResult:
    """An absolute count from a WMS or till; an older or repeated sequence changes nothing.
    ``counted_at``: when the count was true, if not now (a snapshot imported later).

    A count below what is held releases whole reservations, whose other lines are other SKUs:
    those are locked too, in order, before anything is read (raises LockContention in the rare
    case that a reservation made meanwhile brings a SKU that is busy: retry)."""
    locked = {sku} | await repository.skus_held_with(conn, sku, location_id)
    await repository.lock_skus(conn, locked)
    last = await conn.fetchval(
        """SELECT last_sequence FROM source_sequences
           WHERE source = $1 AND sku = $2 AND location_id = $3""",
        source,
        sku,
        location_id,
    )
    current = (await repository.levels(conn, [sku], [location_id])).get(
        (sku, location_id), domain.StockLevel(sku, location_id)
    )
    if last is not None and sequence <= last:
        return CountResult("stale", last, current.on_hand)
    if not await conn.fetchval("SELECT true FROM locations WHERE location_id = $1", location_id):
        raise NotFound("location", location_id)
    await conn.execute(
        """INSERT INTO source_sequences (source, sku, location_id, last_sequence)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (source, sku, location_id)
           DO UPDATE SET last_sequence = EXCLUDED.last_sequence""",
        source,
        sku,
        location_id,
        sequence,
    )
    reservations, allocations = await repository.holds_at(conn, sku, location_id)
    outcome = domain.apply_count(current, on_hand, reservations, allocations)
    extra: list[OutboxMessage] = []
    changes: list[Change] = []
    if outcome.shortage:
        released_skus = await conn.fetch(
            """SELECT DISTINCT sku FROM reservation_lines WHERE reservation_id = ANY($1::uuid[])""",
            list(outcome.released_reservations),
        )
        await repository.try_lock_skus(conn, {r["sku"] for r in released_skus} - locked)
        changes += await _release_reservations(
            conn, outcome.released_reservations, "shortage", extra
        )
        changes += await release_allocations(
            conn, outcome.released_allocations, "shortage", extra, clock
        )
        orders = await conn.fetchval(
            """SELECT coalesce(array_agg(DISTINCT order_id), '{}') FROM allocations
               WHERE allocation_id = ANY($1::uuid[])""",
            list(outcome.released_allocations),
        )
        shortage = events.StockShortage(
            sku,
            location_id,
            on_hand,
            list(outcome.released_reservations),
            list(outcome.released_allocations),
            list(orders),
        )
    if outcome.delta:
        changes.append(
            Change(
                sku,
                location_id,
                on_hand=outcome.delta,
                movement_reason="count",
                source=source,
                reference=str(sequence),
                counted_at=counted_at,
            )
        )
    movements = await commit_changes(conn, clock, changes, extra)
    if outcome.shortage:
        # Versioned as the count's movement, as the item's stock-moved events are: a count's
        # sequence is its source's, and another source's counts run on numbers of their own.
        (count,) = [m for m in movements if (m.sku, m.location_id) == (sku, location_id)]
        shortage_event = OutboxMessage(
            shortage, aggregate_id=f"{sku}@{location_id}", aggregate_version=count.movement_id
        )
        await add_to_outbox(conn, SOURCE, [shortage_event], clock)
    return CountResult("applied", sequence, on_hand)


async def adjust_stock(
    conn: asyncpg.Connection,
    clock: Clock,
    *,
    sku: str,
    location_id: str,
    quantity: int,
    reason: str,
    reference: str | None = None,
) -> int:
    """A delta with a reason. The database refuses one that would take on-hand stock below
    zero or below what is held."""
    await repository.lock_skus(conn, [sku])
    if not await conn.fetchval("SELECT true FROM locations WHERE location_id = $1", location_id):
        raise NotFound("location", location_id)
    movements = await commit_changes(
        conn,
        clock,
        [Change(sku, location_id, on_hand=quantity, movement_reason=reason, reference=reference)],
    )
    return movements[0].on_hand


async def reserve(
    conn: asyncpg.Connection,
    clock: Clock,
    *,
    channel_id: str,
    lines: Sequence[tuple[str, int]],
    client_id: str,
    customer_id: str | None = None,
    ttl: timedelta = DEFAULT_TTL,
    all_or_nothing: bool = True,
    pickup_location: str | None = None,
) -> dict[str, Any]:
    """One reservation in the caller's transaction; raises the refusal, if any."""
    command = ReserveStock(
        channel_id, tuple(lines), client_id, customer_id, ttl, all_or_nothing, pickup_location
    )
    (outcome,) = await reserve_many(conn, clock, [command])
    if isinstance(outcome, Exception):
        raise outcome
    assert isinstance(outcome, dict), "no key was given, so nothing was replayed"
    return outcome


async def _release_reservations(
    conn: asyncpg.Connection,
    reservation_ids: Sequence[str],
    reason: str,
    messages: list[OutboxMessage],
) -> list[Change]:
    """Mark reservations released or expired; return the stock changes that give units back.
    The caller holds the SKU locks."""
    if not reservation_ids:
        return []
    status = ReservationStatus.EXPIRED if reason == "expired" else ReservationStatus.RELEASED
    rows = await conn.fetch(
        """UPDATE reservations SET status = $2, version = version + 1
           WHERE reservation_id = ANY($1::uuid[]) AND status = 'active'
           RETURNING reservation_id::text AS id, version""",
        list(reservation_ids),
        status.value,
    )
    lines = await conn.fetch(
        """SELECT reservation_id::text AS id, sku, location_id, quantity FROM reservation_lines
           WHERE reservation_id = ANY($1::uuid[]) ORDER BY sku, location_id""",
        [r["id"] for r in rows],
    )
    for row in rows:
        mine = [
            events.Line(line["sku"], line["location_id"], line["quantity"])
            for line in lines
            if line["id"] == row["id"]
        ]
        messages.append(
            OutboxMessage(
                events.ReservationReleased(row["id"], reason, mine),
                aggregate_id=row["id"],
                aggregate_version=row["version"],
            )
        )
    return [Change(line["sku"], line["location_id"], reserved=-line["quantity"]) for line in lines]


async def extend(
    conn: asyncpg.Connection, clock: Clock, reservation_id: str, ttl: timedelta
) -> dict[str, Any]:
    row, lines = await locked_reservation(conn, reservation_id)
    status = ReservationStatus(row["status"])
    now = clock.now()
    if status is ReservationStatus.ACTIVE and domain.is_expired(row["expires_at"], now):
        domain.transition(status, ReservationStatus.EXPIRED)  # the sweeper has not got to it yet
        raise domain.InvalidTransition("the reservation has expired")
    domain.transition(
        status, ReservationStatus.ACTIVE
    ) if status is not ReservationStatus.ACTIVE else None
    expires_at = now + min(ttl, MAX_TTL)
    version = await conn.fetchval(
        """UPDATE reservations SET expires_at = $2, version = version + 1
           WHERE reservation_id = $1 RETURNING version""",
        reservation_id,
        expires_at,
    )
    await add_to_outbox(
        conn,
        SOURCE,
        [
            OutboxMessage(
                events.ReservationExtended(reservation_id, expires_at.isoformat()),
                aggregate_id=reservation_id,
                aggregate_version=version,
            )
        ],
        clock,
    )
    picks = [Pick(line["sku"], line["location_id"], line["quantity"]) for line in lines]
    return reservation_view(
        reservation_id, row["channel_id"], "active", expires_at.isoformat(), picks
    )


async def release(
    conn: asyncpg.Connection, clock: Clock, reservation_id: str, reason: str = "released"
) -> None:
    row, _lines = await locked_reservation(conn, reservation_id)
    domain.transition(ReservationStatus(row["status"]), ReservationStatus.RELEASED)
    messages: list[OutboxMessage] = []
    changes = await _release_reservations(conn, [reservation_id], reason, messages)
    await commit_changes(conn, clock, changes, messages)


async def expire_due(conn: asyncpg.Connection, clock: Clock, limit: int = 500) -> int:
    """Expire reservations past their TTL (the sweeper calls this until it returns 0)."""
    due = await conn.fetch(
        """SELECT r.reservation_id::text AS id, array_agg(l.sku) AS skus
           FROM reservations r JOIN reservation_lines l USING (reservation_id)
           WHERE r.status = 'active' AND r.expires_at <= $1
           GROUP BY r.reservation_id ORDER BY min(r.expires_at) LIMIT $2""",
        clock.now(),
        limit,
    )
    if not due:
        return 0
    await repository.lock_skus(conn, {sku for r in due for sku in r["skus"]})
    messages: list[OutboxMessage] = []
    # Re-checked under the locks: a reservation committed meanwhile is not expired.
    still_due = await conn.fetch(
        """SELECT reservation_id::text AS id FROM reservations
           WHERE reservation_id = ANY($1::uuid[]) AND status = 'active' AND expires_at <= $2""",
        [r["id"] for r in due],
        clock.now(),
    )
    changes = await _release_reservations(conn, [r["id"] for r in still_due], "expired", messages)
    await commit_changes(conn, clock, changes, messages)
    return len(still_due)
