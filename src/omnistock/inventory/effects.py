"""The one path by which stock changes are saved: rows, ledger, availability, events."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from omnistock.contracts import inventory as events
from omnistock.inventory import repository
from omnistock.inventory.repository import Change, Movement
from omnistock.platform import db
from omnistock.platform.clock import Clock
from omnistock.platform.outbox import OutboxMessage, add_to_outbox

SOURCE = "/omnistock/inventory"


def availability_messages(rows: Sequence[asyncpg.Record]) -> list[OutboxMessage]:
    return [
        OutboxMessage(
            events.AvailabilityChanged(r["channel_id"], r["sku"], r["available"], r["version"]),
            aggregate_id=f"{r['channel_id']}:{r['sku']}",
            aggregate_version=r["version"],
        )
        for r in rows
    ]


def _movement_messages(movements: Sequence[Movement]) -> list[OutboxMessage]:
    return [
        OutboxMessage(
            events.StockMoved(
                m.movement_id,
                m.sku,
                m.location_id,
                m.quantity,
                m.reason,
                m.on_hand,
                m.source,
                m.reference,
            ),
            aggregate_id=f"{m.sku}@{m.location_id}",
            aggregate_version=m.movement_id,
        )
        for m in movements
    ]


async def commit_changes(
    conn: asyncpg.Connection,
    clock: Clock,
    changes: Sequence[Change],
    extra: Sequence[OutboxMessage] = (),
) -> list[Movement]:
    """Apply stock changes, append the ledger, refresh availability, write all events."""
    # Key joins over arrays, planned afresh on every call otherwise (~0.6 ms a commit).
    await db.keep_plans(conn)
    movements = await repository.apply_changes(conn, changes, clock.now())
    changed = await repository.refresh_availability(conn, [(c.sku, c.location_id) for c in changes])
    await add_to_outbox(
        conn,
        SOURCE,
        [*extra, *_movement_messages(movements), *availability_messages(changed)],
        clock,
    )
    return movements
