"""Inventory SQL. Every writer takes the SKU locks first (``lock_skus``): all changes to one
SKU are serialised, so the availability it publishes is computed from committed stock only."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from omnistock.inventory.domain import Hold, Source, StockLevel
from omnistock.platform import db


@dataclass(frozen=True, slots=True)
class Channel:
    channel_id: str
    availability_cap: int | None
    max_units_per_customer: int | None
    sources: tuple[Source, ...]


@dataclass(frozen=True, slots=True)
class Change:
    """A change of one stock row; ``movement_reason`` set when on_hand moves (the ledger)."""

    sku: str
    location_id: str
    on_hand: int = 0
    reserved: int = 0
    allocated: int = 0
    movement_reason: str | None = None
    source: str | None = None
    reference: str | None = None
    counted_at: datetime | None = None  # a snapshot's moment, when it is not now


@dataclass(frozen=True, slots=True)
class Movement:
    movement_id: int
    sku: str
    location_id: str
    quantity: int
    reason: str
    on_hand: int
    source: str | None
    reference: str | None


SKU_LOCKS = "omnistock.inventory.sku"


async def lock_skus(conn: asyncpg.Connection, skus: Iterable[str]) -> None:
    """Transaction-scoped locks on SKUs, taken in sorted order so that writers never deadlock."""
    await db.lock_keys(conn, SKU_LOCKS, skus)


class LockContention(Exception):
    """A SKU lock that could not be taken in order is held elsewhere: retry the transaction."""


async def try_lock_skus(conn: asyncpg.Connection, skus: Iterable[str]) -> None:
    """Locks taken out of sorted order must not wait (that is how deadlocks start)."""
    wanted = set(skus)
    if len(await db.try_lock_keys(conn, SKU_LOCKS, wanted)) < len(wanted):
        raise LockContention(", ".join(sorted(wanted)))


async def skus_held_with(conn: asyncpg.Connection, sku: str, location_id: str) -> set[str]:
    """The SKUs of the active reservations that hold units of (sku, location_id)."""
    rows = await conn.fetch(
        """SELECT DISTINCT other.sku
           FROM reservation_lines mine
           JOIN reservations r USING (reservation_id)
           JOIN reservation_lines other USING (reservation_id)
           WHERE mine.sku = $1 AND mine.location_id = $2 AND r.status = 'active'""",
        sku,
        location_id,
    )
    return {r["sku"] for r in rows}


async def channel(conn: asyncpg.Connection, channel_id: str) -> Channel | None:
    row = await conn.fetchrow(
        "SELECT availability_cap, max_units_per_customer FROM channels WHERE channel_id = $1",
        channel_id,
    )
    if row is None:
        return None
    sources = await conn.fetch(
        """SELECT r.location_id, r.priority, r.safety_stock, l.capabilities
           FROM sourcing_rules r JOIN locations l USING (location_id)
           WHERE r.channel_id = $1 ORDER BY r.priority""",
        channel_id,
    )
    return Channel(
        channel_id,
        row["availability_cap"],
        row["max_units_per_customer"],
        tuple(
            Source(s["location_id"], s["priority"], s["safety_stock"], frozenset(s["capabilities"]))
            for s in sources
        ),
    )


async def levels(
    conn: asyncpg.Connection, skus: Sequence[str], location_ids: Sequence[str] | None = None
) -> dict[tuple[str, str], StockLevel]:
    rows = await conn.fetch(
        """SELECT sku, location_id, on_hand, reserved, allocated FROM stock
           WHERE sku = ANY($1::text[]) AND ($2::text[] IS NULL OR location_id = ANY($2::text[]))""",
        list(skus),
        None if location_ids is None else list(location_ids),
    )
    return {(r["sku"], r["location_id"]): StockLevel(*r.values()) for r in rows}


async def apply_changes(
    conn: asyncpg.Connection, changes: Sequence[Change], occurred_at: datetime
) -> list[Movement]:
    """Apply the changes to stock rows (creating them) and append the ledger's movements."""
    if not changes:
        return []
    # Update existing rows and insert missing ones in one statement. (An upsert would not do:
    # PostgreSQL checks the proposed row's CHECK constraints before it looks for a conflict, so
    # "reserve one more" would be refused as a new row with reserved > on_hand.)
    rows = await conn.fetch(
        """WITH c AS (
               SELECT sku, loc, sum(oh)::int AS oh, sum(rs)::int AS rs, sum(al)::int AS al
               FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::int[])
                    AS c(sku, loc, oh, rs, al)
               GROUP BY sku, loc),
           updated AS (
               UPDATE stock s SET on_hand = s.on_hand + c.oh, reserved = s.reserved + c.rs,
                                  allocated = s.allocated + c.al, version = s.version + 1
               FROM c WHERE s.sku = c.sku AND s.location_id = c.loc
               RETURNING s.sku, s.location_id, s.on_hand),
           inserted AS (
               INSERT INTO stock (sku, location_id, on_hand, reserved, allocated, version)
               SELECT sku, loc, oh, rs, al, 1 FROM c
               WHERE NOT EXISTS (  -- not updated: missing (its SKU is locked)
                   SELECT 1 FROM updated u WHERE u.sku = c.sku AND u.location_id = c.loc)
               RETURNING sku, location_id, on_hand)
           SELECT * FROM updated UNION ALL SELECT * FROM inserted""",
        [c.sku for c in changes],
        [c.location_id for c in changes],
        [c.on_hand for c in changes],
        [c.reserved for c in changes],
        [c.allocated for c in changes],
    )
    on_hand_after = {(r["sku"], r["location_id"]): r["on_hand"] for r in rows}
    moved = [c for c in changes if c.on_hand and c.movement_reason]
    if not moved:
        return []
    ids = await conn.fetch(
        """INSERT INTO stock_movements (sku, location_id, quantity, reason, source, reference,
                                        occurred_at, counted_at)
           SELECT sku, loc, q, r, src, ref, $7, at
           FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[],
                       $8::timestamptz[])
                WITH ORDINALITY AS m(sku, loc, q, r, src, ref, at, n)
           ORDER BY n
           RETURNING movement_id""",
        [c.sku for c in moved],
        [c.location_id for c in moved],
        [c.on_hand for c in moved],
        [c.movement_reason for c in moved],
        [c.source for c in moved],
        [c.reference for c in moved],
        occurred_at,
        [c.counted_at for c in moved],
    )
    return [
        Movement(
            row["movement_id"],
            c.sku,
            c.location_id,
            c.on_hand,
            str(c.movement_reason),
            on_hand_after[(c.sku, c.location_id)],
            c.source,
            c.reference,
        )
        for row, c in zip(sorted(ids, key=lambda r: r["movement_id"]), moved, strict=True)
    ]


_FIGURES = """
    figures AS (
        SELECT a.channel_id, a.sku,
               LEAST(coalesce(c.availability_cap, 2147483647),
                     coalesce(sum(GREATEST(0, s.on_hand - s.reserved - s.allocated
                                               - r.safety_stock)), 0))::int AS available
        FROM affected a
        JOIN channels c ON c.channel_id = a.channel_id
        LEFT JOIN sourcing_rules r ON r.channel_id = a.channel_id
        -- A probe by key for each row (LIMIT keeps the planner from folding it into a join):
        -- autovacuum never gathers statistics for tables as small as channels and sourcing
        -- rules, the planner then expects hundreds of rows here and hashes the whole stock
        -- table instead, on every change of stock (seen: a seq scan of it per commit).
        LEFT JOIN LATERAL (
            SELECT st.on_hand, st.reserved, st.allocated FROM stock st
            WHERE st.sku = a.sku AND st.location_id = r.location_id LIMIT 1) s ON true
        GROUP BY a.channel_id, a.sku, c.availability_cap)
    INSERT INTO availability AS v (channel_id, sku, available, version)
    SELECT channel_id, sku, available, 1 FROM figures
    ON CONFLICT (channel_id, sku) DO UPDATE
        SET available = EXCLUDED.available, version = v.version + 1
        WHERE v.available <> EXCLUDED.available
    RETURNING channel_id, sku, available, version"""


async def refresh_availability(
    conn: asyncpg.Connection, items: Iterable[tuple[str, str]]
) -> list[asyncpg.Record]:
    """Recompute available(channel, sku) for every channel fed by the touched (sku, location)s;
    store and return those whose figure changed, with their new version."""
    pairs = sorted(set(items))
    if not pairs:
        return []
    rows: list[asyncpg.Record] = await conn.fetch(
        """WITH touched AS (
               SELECT DISTINCT sku, loc FROM unnest($1::text[], $2::text[]) AS t(sku, loc)),
           affected AS (
               SELECT DISTINCT r.channel_id, t.sku
               FROM touched t JOIN sourcing_rules r ON r.location_id = t.loc),"""
        + _FIGURES,
        [p[0] for p in pairs],
        [p[1] for p in pairs],
    )
    return rows


async def refresh_channel_availability(
    conn: asyncpg.Connection, channel_id: str, skus: Sequence[str]
) -> list[asyncpg.Record]:
    """The same for one channel and the given SKUs (after its sourcing changed)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """WITH affected AS (SELECT $1::text AS channel_id, unnest($2::text[]) AS sku),"""
        + _FIGURES,
        channel_id,
        list(skus),
    )
    return rows


async def holds_at(
    conn: asyncpg.Connection, sku: str, location_id: str
) -> tuple[list[Hold], list[Hold]]:
    reservations = await conn.fetch(
        """SELECT r.reservation_id::text AS id, l.quantity, r.created_at
           FROM reservation_lines l JOIN reservations r USING (reservation_id)
           WHERE l.sku = $1 AND l.location_id = $2 AND r.status = 'active'""",
        sku,
        location_id,
    )
    allocations = await conn.fetch(
        """SELECT allocation_id::text AS id, quantity, created_at FROM allocations
           WHERE sku = $1 AND location_id = $2 AND status = 'allocated'""",
        sku,
        location_id,
    )
    return (
        [Hold(r["id"], r["quantity"], r["created_at"]) for r in reservations],
        [Hold(a["id"], a["quantity"], a["created_at"]) for a in allocations],
    )


async def reservation(conn: asyncpg.Connection, reservation_id: Any, lock: bool = False) -> Any:
    """The reservation's row and its lines (``sku``, ``location_id``, ``quantity``, in that
    order), read in one statement; None if there is no such reservation."""
    row = await conn.fetchrow(
        """SELECT r.*, (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                 'sku', l.sku, 'location_id', l.location_id,
                                 'quantity', l.quantity) ORDER BY l.sku, l.location_id), '[]')
                        FROM reservation_lines l WHERE l.reservation_id = r.reservation_id)
                       AS reserved_lines
           FROM reservations r WHERE r.reservation_id = $1"""
        + (" FOR UPDATE OF r" if lock else ""),
        reservation_id,
    )
    if row is None:
        return None
    return row, row["reserved_lines"]
